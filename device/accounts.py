"""Account passwords: Argon2id hashes (argon2-cffi's defaults, RFC 9106's low-memory
profile) and the rule new passwords must meet.  Used by the web sign-in and the CLI."""

from __future__ import annotations

import functools
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from device.errors import N_, InvalidInput
from device.records import User

MIN_PASSWORD = 10
COMMON_PASSWORDS = Path(__file__).with_name("common-passwords.txt")
"""The 10,000 most common passwords (licence: common-passwords.LICENSE beside it)."""
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _unknown_user_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def signs_in(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s.  A name that has no account costs the same
    Argon2 verification as a wrong password, so the answer's time does not tell which
    names exist."""
    if user is None:
        verify_password(_unknown_user_hash(), password)
        return False
    return verify_password(user.password_hash, password)


@functools.cache
def _common_passwords() -> frozenset[str]:
    return frozenset(COMMON_PASSWORDS.read_text(encoding="utf-8").split())


def check_new_password(password: str) -> None:
    """Long enough, and not one of the passwords tried first by anyone guessing."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(N_("a password needs at least %(count)d characters"),
                           count=MIN_PASSWORD)
    if password.lower() in _common_passwords():
        raise InvalidInput(N_("this password is one of the 10,000 most common: choose another"))
