"""Statements sent straight to the database driver, for the work every request does.

Through SQLAlchemy's session a statement costs a connection checkout, a BEGIN, a compiled-cache
lookup and the building of result objects: several hundred microseconds, more than the query.
The credential check of every request and the tracking insert of every call are fixed
statements; they take a pooled connection and run their SQL on the driver's cursor.
Statements are written with `?` placeholders; `driver_sql` adapts them to the driver.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError


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
