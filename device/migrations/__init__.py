"""The database's schema migrations: one module each, ``mNNN_<what>.py`` with a
``migrate(db)`` function, applied in name order by ``device.store.Store`` through
sqlite-utils' ``Migrations`` (which records each applied one in ``_sqlite_migrations``).

A version that changes the schema adds a module; a released module is never edited, since
boxes in the field have already applied it.  Databases made before the migrations table
existed numbered their schema in ``PRAGMA user_version``: the first that many migrations
count as applied there.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re

import sqlite_utils
from sqlite_utils.migrations import Migrations

SET_NAME = "tingji"
_MODULE = re.compile(r"^m\d{3}_[a-z0-9_]+$")


@functools.cache
def migration_names() -> tuple[str, ...]:
    return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__)
                        if _MODULE.match(info.name)))


@functools.cache
def schema_migrations() -> Migrations:
    migrations = Migrations(SET_NAME)
    for name in migration_names():
        migrations(name=name)(importlib.import_module(f"{__name__}.{name}").migrate)
    return migrations


def adopt_numbered_schema(db: sqlite_utils.Database, migrations: Migrations) -> None:
    """Record the first ``PRAGMA user_version`` migrations as applied in a database that
    predates the migrations table (it was migrated that far by number)."""
    if db[migrations.migrations_table].exists():
        return
    numbered = db.execute("PRAGMA user_version").fetchone()[0]
    migrations.ensure_migrations_table(db)
    for migration in migrations.pending(db)[:numbered]:
        migrations._record_applied(db, migration.name)
