"""Account passwords: Argon2id hashes (argon2-cffi's defaults, RFC 9106's low-memory
profile) and the rule new passwords must meet.  Used by the web sign-in and the CLI."""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from device.errors import InvalidInput
from device.records import User

MIN_PASSWORD = 8
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


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")
