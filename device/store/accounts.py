"""Accounts and their sessions, in a database of their own (``accounts.db``): signing in
works while the box is locked, when the main database, encrypted, cannot be read."""

from __future__ import annotations

import sqlite_utils

from device.errors import N_, InvalidInput, UserNotFound
from device.records import User
from device.store._base import Rooms, now, once
from device.text import NAME_MAX, clean_label


def make_accounts(accounts: sqlite_utils.Database, main: sqlite_utils.Database) -> None:
    """The accounts database's tables, made if missing; the first time, the accounts and
    sessions the main database kept (before they had a database of their own) are copied
    in, in one transaction that also marks it done (``user_version``).  The main database's
    copy stays as it was, for firmware from before the move."""
    accounts.execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username "
                     "TEXT NOT NULL, password_hash TEXT NOT NULL, role TEXT NOT NULL, "
                     "created TEXT NOT NULL, language TEXT)")
    accounts.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_name ON users "
                     "(username COLLATE NOCASE)")
    accounts.execute("CREATE TABLE IF NOT EXISTS sessions (token_hash TEXT PRIMARY KEY, "
                     "user_id INTEGER NOT NULL REFERENCES users(id), csrf TEXT NOT NULL, "
                     "created TEXT NOT NULL, expires REAL NOT NULL)")

    def move() -> None:
        if main["users"].exists():
            accounts["users"].insert_all(main["users"].rows)
            accounts["sessions"].insert_all(main["sessions"].rows)

    once(accounts, move)


class AccountRooms(Rooms):
    accounts: sqlite_utils.Database

    def count_users(self) -> int:
        return self.accounts.execute("SELECT count(*) FROM users").fetchone()[0]

    def create_user(self, username: str, password_hash: str, role: str) -> User:
        username = clean_label(username, "a user name", NAME_MAX)
        if not username:
            raise InvalidInput(N_("choose a user name"))
        with self.transaction(self.accounts):
            if self.accounts.execute("SELECT 1 FROM users WHERE username = ? "
                                     "COLLATE NOCASE", [username]).fetchone():
                raise InvalidInput(N_("the user name %(name)s is taken"), name=username)
            user_id = self.accounts["users"].insert(
                {"username": username, "password_hash": password_hash, "role": role,
                 "created": now()}).last_pk
        return self.get_user(user_id)

    def create_first_user(self, username: str, password_hash: str, role: str) -> User | None:
        """Create the first account, or None when one exists already (setup is one-time)."""
        with self.transaction(self.accounts):
            if self.accounts["users"].count:
                return None
            return self.create_user(username, password_hash, role)

    def get_user(self, user_id: int) -> User:
        rows = list(self.accounts.query("SELECT * FROM users WHERE id = ?", [user_id]))
        if not rows:
            raise UserNotFound(N_("no user with id %(id)s"), id=user_id)
        return User(**rows[0])

    def find_user(self, username: str) -> User | None:
        rows = list(self.accounts.query(
            "SELECT * FROM users WHERE username = ? COLLATE NOCASE", [username]))
        return User(**rows[0]) if rows else None

    def list_users(self) -> list[User]:
        return [User(**r) for r in self.accounts.query("SELECT * FROM users ORDER BY username")]

    def update_user(self, user_id: int, **fields: object) -> User:
        with self.transaction(self.accounts):
            self.accounts["users"].update(user_id, fields)
        return self.get_user(user_id)

    def delete_user(self, user_id: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE recordings SET owner_id = NULL WHERE owner_id = ?",
                            [user_id])
        with self.transaction(self.accounts):
            self.accounts.execute("DELETE FROM sessions WHERE user_id = ?", [user_id])
            self.accounts.execute("DELETE FROM users WHERE id = ?", [user_id])

    def create_session(self, token_hash: str, user_id: int, csrf: str, expires: float) -> None:
        with self.transaction(self.accounts):
            self.accounts["sessions"].insert({"token_hash": token_hash, "user_id": user_id,
                                              "csrf": csrf, "created": now(),
                                              "expires": expires})

    def get_session(self, token_hash: str, at: float) -> tuple[User, str] | None:
        """The user and CSRF token of a live session, or None."""
        row = self.accounts.execute("SELECT user_id, csrf FROM sessions WHERE token_hash = ?"
                                    " AND expires > ?", [token_hash, at]).fetchone()
        if row is None:
            return None
        try:
            return self.get_user(row[0]), row[1]
        except UserNotFound:
            return None

    def end_sessions(self, user_id: int) -> int:
        """Log a user out everywhere (logout, password change)."""
        with self.transaction(self.accounts):
            return self.accounts.execute("DELETE FROM sessions WHERE user_id = ?",
                                         [user_id]).rowcount
