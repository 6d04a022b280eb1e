"""Writing tracking rows: straight to the database driver, in batches from a background thread.

A tracking row is written on every API call, so its cost is paid on every call. The rows go to
the driver directly (SQLAlchemy's execute, begin and commit cost more than an insert). By
default each request commits its own row before its response is sent, so no answered request
lacks its row. With `TRACKING_WRITE_BEHIND` a worker's background thread writes the rows that
queued up meanwhile in one transaction instead: SQLite and PostgreSQL then update each index
page once per batch instead of once per row, and a worker killed with SIGKILL loses the rows
it had queued.

A row waits in the queue for at most half a second (`LINGER_SECONDS`), or until 500 rows are
queued: every commit makes the other connections of a SQLite database drop their cached pages,
so fewer, larger batches keep reads fast. `flush()` waits for the queue (the trackings API calls
it, so a process reads its own rows at once; other workers' rows show within the half second).
Rows still queued when a worker exits are written by an `atexit` hook. When the queue is full,
a request writes its row itself.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import threading
from collections import deque
from datetime import UTC
from typing import Any

from flask import Flask, current_app
from sqlalchemy import JSON
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from .driver import driver_sql
from .extensions import db
from .models import Tracking, UTCDateTime

log = logging.getLogger("imagestore.tracking")

# Columns whose values are converted here (JSON text, SQLite's timestamp text).
JSON_COLUMNS = frozenset(c.name for c in Tracking.__table__.columns if isinstance(c.type, JSON))
TIME_COLUMNS = frozenset(
    c.name for c in Tracking.__table__.columns if isinstance(c.type, UTCDateTime)
)
BATCH_SIZE = 500
LINGER_SECONDS = 0.5
QUEUE_LIMIT = 1_000  # rows of up to a few KB each: a bounded amount of memory
FLUSH_SECONDS = 10.0


# Columns whose values the driver does not take as they are.
CONVERTED_COLUMNS = JSON_COLUMNS | TIME_COLUMNS


class JSONText(str):
    """JSON already encoded, such as a response body as it was sent: stored as it is."""


@functools.cache
def insert_sql(paramstyle: str, columns: tuple[str, ...]) -> str:
    """Return the INSERT statement of a tracking row with these columns."""
    names = ", ".join(f'"{column}"' for column in columns)
    markers = ", ".join("?" for _ in columns)
    return driver_sql(paramstyle, f"INSERT INTO trackings ({names}) VALUES ({markers})")


def bind_value(dialect: str, column: str, value: Any) -> Any:
    """Return a value as the driver takes it for this column (what the column type would do)."""
    if value is None:
        return None
    if column in JSON_COLUMNS:
        if isinstance(value, JSONText):
            return str(value)  # PostgreSQL casts text to JSONB itself
        if dialect == "postgresql":
            from psycopg.types.json import Jsonb

            return Jsonb(value)
        return json.dumps(value, default=str)
    if column in TIME_COLUMNS and dialect == "sqlite":
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy writes it
    return value


def row_values(dialect: str, columns: tuple[str, ...], row: dict[str, Any]) -> list[Any]:
    """Return a row's values in the order of `columns`, as the driver takes them."""
    return [
        bind_value(dialect, column, row[column]) if column in CONVERTED_COLUMNS else row[column]
        for column in columns
    ]


def save_rows(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Insert tracking rows in one transaction of their own; raise SQLAlchemy's DBAPIError."""
    columns = tuple(rows[0])
    sql = insert_sql(engine.dialect.paramstyle, columns)
    dialect = engine.dialect.name
    values = [row_values(dialect, columns, row) for row in rows]
    dbapi = engine.dialect.loaded_dbapi
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        if dialect == "sqlite":
            # Autocommit mode here: one row is one implicit transaction; a batch needs its own.
            # The first statement writes, so a plain BEGIN never has to upgrade a read lock.
            if len(values) == 1:
                cursor.execute(sql, values[0])
            else:
                cursor.execute("BEGIN")
                cursor.executemany(sql, values)
                cursor.execute("COMMIT")
        else:
            # The row is the server's once the commit returns, so a killed worker loses
            # nothing; not waiting for the server to flush its log to disk spares every request
            # a disk write (a server crash may lose its last fraction of a second of rows).
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            cursor.executemany(sql, values)
        cursor.close()
        connection.commit()
    except dbapi.Error as error:
        raise DBAPIError.instance(sql, values[:1], error, dbapi.Error) from error
    finally:
        connection.close()  # back to the pool, which rolls back anything left open


def save_or_log(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Insert rows; when the batch fails, try each row alone and log the ones lost."""
    try:
        save_rows(engine, rows)
        return
    except DBAPIError:
        if len(rows) == 1:
            log.exception("tracking row lost for %s %s", rows[0]["method"], rows[0]["endpoint"])
            return
    for row in rows:
        save_or_log(engine, [row])


class TrackingWriter:
    """A queue of tracking rows and the background thread of this process that writes them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows: deque[dict[str, Any]] = deque()
        self.pending = 0  # queued or being written
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.flushing = 0  # readers waiting for the queue to empty

    def submit(self, row: dict[str, Any]) -> None:
        """Queue a row for the background thread; write it at once when the queue is full."""
        with self.changed:
            if self.pending >= QUEUE_LIMIT:
                full = True
            else:
                full = False
                self.ensure_thread()
                self.rows.append(row)
                self.pending += 1
                # Wake the writer for the first row and for a full batch only: each wake-up costs.
                if len(self.rows) == 1 or len(self.rows) >= BATCH_SIZE:
                    self.changed.notify_all()
        if full:
            save_or_log(self.engine, [row])

    def ensure_thread(self) -> None:
        """Start the writing thread in this process (again after a fork); the lock is held."""
        if self.pid != os.getpid() or self.thread is None or not self.thread.is_alive():
            if self.pid != os.getpid():
                self.rows.clear()  # a forked child does not write its parent's rows
                self.pending = 0
            self.pid = os.getpid()
            self.thread = threading.Thread(target=self.run, name="tracking-writer", daemon=True)
            self.thread.start()

    def run(self) -> None:
        """Write whatever is queued, in batches, until the process ends."""
        while True:
            with self.changed:
                while not self.rows:
                    self.changed.wait()
                # Let a batch gather (one transaction for many rows is the point), unless a
                # reader waits for the rows.
                self.changed.wait_for(
                    lambda: len(self.rows) >= BATCH_SIZE or self.flushing, timeout=LINGER_SECONDS
                )
                batch = [self.rows.popleft() for _ in range(min(BATCH_SIZE, len(self.rows)))]
            try:
                save_or_log(self.engine, batch)
            except Exception:  # never let the thread die: later rows must still be written
                log.exception("%d tracking rows lost", len(batch))
            with self.changed:
                self.pending -= len(batch)
                self.changed.notify_all()

    def flush(self, seconds: float = FLUSH_SECONDS) -> None:
        """Wait until every row this process queued is written (or `seconds` have passed)."""
        with self.changed:
            if self.pid == os.getpid() and self.thread is not None and self.thread.is_alive():
                self.flushing += 1
                self.changed.notify_all()
                try:
                    self.changed.wait_for(lambda: self.pending == 0, timeout=seconds)
                finally:
                    self.flushing -= 1


def save_tracking(row: dict[str, Any]) -> None:
    """Write one tracking row: queued for this worker's writer thread, or at once."""
    if not current_app.config["TRACKING_WRITE_BEHIND"]:
        save_rows(db.engine, [row])
        return
    writer = current_app.extensions.get("imagestore.tracking_writer")
    if writer is None:
        writer = TrackingWriter(db.engine)
        current_app.extensions["imagestore.tracking_writer"] = writer
        atexit.register(writer.flush)
    writer.submit(row)


def flush_trackings(app: Flask | None = None) -> None:
    """Wait until the rows this process queued are written: reads then see them."""
    writer = (app or current_app).extensions.get("imagestore.tracking_writer")
    if writer is not None:
        writer.flush()
