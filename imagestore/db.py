"""The database: the SQLAlchemy extension, how SQLite connections behave, writes, raw reads.

Views that change data carry `@writes`: on SQLite their transactions take the write lock at
BEGIN. Reads that every request makes go straight to the driver (`fetch_one`).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import g, has_request_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase

# Named constraints let SQLite batch migrations find them again.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# The largest id an integer column holds: a larger one in a URL names no row.
MAX_ID = 2**31 - 1

View = TypeVar("View", bound=Callable[..., Any])


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)

# The models' base class. Flask-SQLAlchemy builds `db.Model` at run time from `Base` (adding a
# bind key and query property), so a type checker cannot use it as a base: it sees `Base`.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model


def writes(view: View) -> View:
    """Mark a view that changes data: its transactions take SQLite's write lock at BEGIN.

    A transaction that reads and then writes cannot wait for the lock when another connection
    wrote meanwhile: it fails at once with "database is locked". `BEGIN IMMEDIATE` waits (busy
    timeout) at the start instead. Put it under the authentication decorator: the reading
    transaction of a login is ended first. tests/test_app.py checks every view that is not a
    GET carries it or `reads_only`.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        db.session.rollback()  # the login's reading transaction
        g.db_writes = True
        return view(*args, **kwargs)

    wrapper.writes = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def reads_only(view: View) -> View:
    """Mark a view that is not a GET and changes nothing (a query sent as a body): it keeps
    reading transactions. tests/test_app.py checks every non-GET view says one or the other."""
    view.writes = False  # type: ignore[attr-defined]
    return view


@event.listens_for(Engine, "connect")
def configure_sqlite(connection: Any, record: Any) -> None:
    """Turn on WAL, a busy timeout and foreign keys for every SQLite connection."""
    if isinstance(connection, sqlite3.Connection):
        # SQLAlchemy emits BEGIN itself (below) instead of the driver's implicit one.
        connection.isolation_level = None
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


@event.listens_for(Engine, "begin")
def begin_sqlite(connection: Connection) -> None:
    """Take SQLite's write lock at BEGIN in the transactions of a `@writes` view, and outside
    requests (commands); reads, and the tracking insert (whose first statement writes), keep
    `BEGIN`."""
    if connection.dialect.name != "sqlite":
        return
    immediate = not has_request_context() or g.get("db_writes", False)
    # Straight to the driver: it runs at least once per request, SQLAlchemy's path costs more.
    driver = cast(sqlite3.Connection, connection.connection.dbapi_connection)
    driver.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


# Statements sent straight to the database driver, for the work every request does. Through
# SQLAlchemy's session a statement costs a connection checkout, a BEGIN, a compiled-cache lookup
# and the building of result objects: several hundred microseconds, more than the query. The
# credential check of every request and the tracking insert of every call are fixed statements;
# they take a pooled connection and run their SQL on the driver's cursor. Statements are written
# with `?` placeholders; `driver_sql` adapts them to the driver.


@functools.cache
def driver_sql(paramstyle: str, sql: str) -> str:
    """Return SQL written with `?` placeholders in the driver's style (psycopg takes `%s`)."""
    return sql if paramstyle == "qmark" else sql.replace("?", "%s")


def fetch_one(engine: Engine, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Run one read-only statement on a pooled connection; return its first row or None.

    Errors are raised as SQLAlchemy's DBAPIError, as a session would raise them.
    """
    statement = driver_sql(engine.dialect.paramstyle, sql)
    dbapi = engine.dialect.loaded_dbapi
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(statement, params)
        row = cursor.fetchone()
        cursor.close()
        return tuple(row) if row is not None else None
    except dbapi.Error as error:
        raise DBAPIError.instance(statement, params, error, dbapi.Error) from error
    finally:
        connection.close()  # back to the pool, which ends the read transaction
