"""Accounts and their sessions."""

from __future__ import annotations

from device.errors import N_, InvalidInput, UserNotFound
from device.records import User
from device.store._base import Rooms, now
from device.text import NAME_MAX, clean_label


class AccountRooms(Rooms):
    def count_users(self) -> int:
        return self.db.execute("SELECT count(*) FROM users").fetchone()[0]

    def create_user(self, username: str, password_hash: str, role: str) -> User:
        username = clean_label(username, "a user name", NAME_MAX)
        if not username:
            raise InvalidInput(N_("choose a user name"))
        with self.transaction():
            if self.db.execute("SELECT 1 FROM users WHERE username = ? COLLATE NOCASE",
                               [username]).fetchone():
                raise InvalidInput(N_("the user name %(name)s is taken"), name=username)
            user_id = self.db["users"].insert(
                {"username": username, "password_hash": password_hash, "role": role,
                 "created": now()}).last_pk
        return self.get_user(user_id)

    def create_first_user(self, username: str, password_hash: str, role: str) -> User | None:
        """Create the first account, or None when one exists already (setup is one-time)."""
        with self.transaction():
            if self.db["users"].count:
                return None
            return self.create_user(username, password_hash, role)

    def get_user(self, user_id: int) -> User:
        rows = list(self.db.query("SELECT * FROM users WHERE id = ?", [user_id]))
        if not rows:
            raise UserNotFound(N_("no user with id %(id)s"), id=user_id)
        return User(**rows[0])

    def find_user(self, username: str) -> User | None:
        rows = list(self.db.query("SELECT * FROM users WHERE username = ? COLLATE NOCASE",
                                  [username]))
        return User(**rows[0]) if rows else None

    def list_users(self) -> list[User]:
        return [User(**r) for r in self.db.query("SELECT * FROM users ORDER BY username")]

    def update_user(self, user_id: int, **fields: object) -> User:
        with self.transaction():
            self.db["users"].update(user_id, fields)
        return self.get_user(user_id)

    def delete_user(self, user_id: int) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM sessions WHERE user_id = ?", [user_id])
            self.db.execute("UPDATE recordings SET owner_id = NULL WHERE owner_id = ?",
                            [user_id])
            self.db.execute("DELETE FROM users WHERE id = ?", [user_id])

    def create_session(self, token_hash: str, user_id: int, csrf: str, expires: float) -> None:
        with self.transaction():
            self.db["sessions"].insert({"token_hash": token_hash, "user_id": user_id,
                                        "csrf": csrf, "created": now(), "expires": expires})

    def get_session(self, token_hash: str, at: float) -> tuple[User, str] | None:
        """The user and CSRF token of a live session, or None."""
        row = self.db.execute("SELECT user_id, csrf FROM sessions WHERE token_hash = ? "
                              "AND expires > ?", [token_hash, at]).fetchone()
        if row is None:
            return None
        try:
            return self.get_user(row[0]), row[1]
        except UserNotFound:
            return None

    def end_sessions(self, user_id: int) -> int:
        """Log a user out everywhere (logout, password change)."""
        with self.transaction():
            return self.db.execute("DELETE FROM sessions WHERE user_id = ?",
                                   [user_id]).rowcount
