"""Sessions: session cookies, CSRF tokens, login limits (passwords: device.accounts),
and the one-time setup code that creates the first admin.

A session is a random token in an HttpOnly, SameSite=Strict cookie; the database keeps only
its SHA-256, with the session's CSRF token.  Every state-changing request must send that
token (``X-CSRF-Token`` header or a ``csrf_token`` form field).  Before login, forms use a
double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque

from device.records import User
from device.store import Store

SESSION_COOKIE = "tingji_session"
PRELOGIN_COOKIE = "tingji_csrf"
SESSION_SECONDS = 12 * 3600


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(store: Store, user: User) -> str:
    """A new session for ``user``; returns the cookie value."""
    token = secrets.token_urlsafe(32)
    store.create_session(token_hash(token), user.id, secrets.token_urlsafe(24),
                         time.time() + SESSION_SECONDS)
    return token


def session_of(store: Store, token: str | None) -> tuple[User, str] | None:
    """(user, csrf token) of a live session cookie, or None."""
    if not token:
        return None
    return store.get_session(token_hash(token), time.time())


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(expected, given)


def new_setup_code() -> str:
    """Eight characters people can read off a console and type: no 0/O, 1/I/L."""
    alphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
    code = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"{code[:4]}-{code[4:]}"


class LoginLimiter:
    """At most ``attempts`` failed logins per client and user name in ``window`` seconds
    (and four times that per client for any name), so passwords cannot be guessed at speed."""

    def __init__(self, attempts: int = 5, window: float = 300.0):
        self.attempts, self.window = attempts, window
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] < now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str, username: str) -> float:
        """Seconds to wait before trying again, 0 when a try is allowed."""
        now = time.monotonic()
        with self._lock:
            for key, limit in (((client, username.lower()), self.attempts),
                               ((client, ""), self.attempts * 4)):
                failures = self._recent(key, now)
                if len(failures) >= limit:
                    return max(failures[0] + self.window - now, 1.0)
        return 0.0

    def failed(self, client: str, username: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent((client, username.lower()), now).append(now)
            self._recent((client, ""), now).append(now)

    def succeeded(self, client: str, username: str) -> None:
        with self._lock:
            self._failures.pop((client, username.lower()), None)
