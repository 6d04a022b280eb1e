"""Writing tracking rows: straight to the database driver, in batches from a background thread.

A tracking row is written on every API call, so its cost is paid on every call. The rows go to
the driver directly (SQLAlchemy's execute, begin and commit cost more than an insert). With
`TRACKING_WRITE_BEHIND` (the default) a worker's background thread writes the rows that queued
up meanwhile in one transaction: SQLite and PostgreSQL then update each index page once per
batch instead of once per row, and no request waits for a commit. Without it each request
commits its own row before its response is sent.

A row waits in the queue for at most half a second (`LINGER_SECONDS`), or until 500 rows are
queued: every commit makes the other connections of a SQLite database drop their cached pages,
so fewer, larger batches keep reads fast. `flush()` waits for the queue (the trackings API calls
it, so a process reads its own rows at once; other workers' rows show within the half second).
Rows still queued when a worker exits are written by an `atexit` hook. When the queue is full,
a request writes its row itself.

No answered request loses its row when its worker is killed: before the response is sent, the
row is also appended to the worker's spool file (`Spool`), which the kernel keeps whatever
happens to the process; once the row is committed its file is removed. A file that a killed
worker left is written by the next worker of the host that starts writing or reads the log.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import json
import logging
import os
import threading
import time
from collections import deque
from datetime import UTC
from typing import Any

from flask import Flask, current_app
from sqlalchemy import JSON
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from ..db import db, driver_sql, fetch_one
from ..models import Tracking

log = logging.getLogger("imagestore.tracking")

# The columns a row gives, in the order of its values (the id is the database's).
COLUMNS = tuple(c.name for c in Tracking.__table__.columns if c.name != "id")
JSON_INDEXES = tuple(
    index for index, name in enumerate(COLUMNS) if isinstance(Tracking.__table__.c[name].type, JSON)
)
CREATED_AT, METHOD, ENDPOINT, REQUEST_ID = (
    COLUMNS.index(name) for name in ("created_at", "method", "endpoint", "request_id")
)
BATCH_SIZE = 500
LINGER_SECONDS = 0.5
QUEUE_LIMIT = 1_000  # rows of up to a few KB each: a bounded amount of memory
FLUSH_SECONDS = 10.0
SPOOL_SUFFIX = ".rows"


class JSONText(str):
    """JSON already encoded, such as a response body as it was sent: stored as it is."""


def encode_row(row: dict[str, Any]) -> list[Any]:
    """Return a row's values in the order of COLUMNS, as they are stored.

    A column the row leaves out is None. JSON columns become JSON text (a JSONText as it is,
    anything else encoded); the time becomes UTC text as SQLAlchemy writes it to SQLite. The
    values are then plain text, numbers and None: one line of JSON in the spool, and what
    SQLite's driver takes as they are. A row is encoded once, in the request; the writer
    converts nothing but the time for PostgreSQL.
    """
    values: list[Any] = [row.get(column) for column in COLUMNS]
    for index in JSON_INDEXES:
        value = values[index]
        if value is not None and type(value) is not JSONText:
            values[index] = json.dumps(value, default=str)
    created_at = values[CREATED_AT].astimezone(UTC).replace(tzinfo=None)
    values[CREATED_AT] = created_at.isoformat(" ", "microseconds")
    return values


def driver_values(dialect: str, values: list[Any]) -> list[Any]:
    """Return an encoded row as the driver takes it.

    psycopg sends text as of unknown type, which PostgreSQL casts to the column's: JSON text to
    JSONB, and the time, once its zone is named, to a timestamp.
    """
    if dialect == "sqlite":
        return values
    values = list(values)
    values[CREATED_AT] += "+00:00"
    return values


@functools.cache
def insert_sql(paramstyle: str) -> str:
    """Return the INSERT statement of a tracking row's COLUMNS."""
    names = ", ".join(f'"{column}"' for column in COLUMNS)
    markers = ", ".join("?" for _ in COLUMNS)
    return driver_sql(paramstyle, f"INSERT INTO trackings ({names}) VALUES ({markers})")


def save_rows(engine: Engine, rows: list[list[Any]]) -> None:
    """Insert encoded rows in one transaction of their own; raise SQLAlchemy's DBAPIError."""
    sql = insert_sql(engine.dialect.paramstyle)
    dialect = engine.dialect.name
    values = [driver_values(dialect, row) for row in rows]
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


def save_or_log(engine: Engine, rows: list[list[Any]]) -> None:
    """Insert rows; when the batch fails, try each row alone and log the ones lost."""
    try:
        save_rows(engine, rows)
        return
    except DBAPIError:
        if len(rows) == 1:
            log.exception("tracking row lost for %s %s", rows[0][METHOD], rows[0][ENDPOINT])
            return
    for row in rows:
        save_or_log(engine, [row])


def spool_line(values: list[Any]) -> bytes:
    """Return an encoded row as one line of JSON (text, numbers and None: all in C, at once)."""
    return f"{json.dumps(values)}\n".encode()


def spooled_row(line: bytes) -> list[Any]:
    """Return the encoded row of a spool line; raise ValueError for a line that is not one."""
    values = json.loads(line)
    if not isinstance(values, list) or len(values) != len(COLUMNS):
        raise ValueError("not a tracking row")
    return values


class Spool:
    """The rows a process queued and has not committed yet, in files the kernel keeps.

    A row is appended with one write before its response is sent: should the process be killed,
    the file keeps it. Taking the queued rows, the writer seals the file and starts another; once
    those rows are committed it removes the sealed one. The process holds a lock on each of its
    files while it lives: a file that nobody holds was left by a killed process.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.current: tuple[int, str] | None = None

    def new_file(self) -> tuple[int, str]:
        """Create and lock a new spool file of this process; it is seen once it is locked."""
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{time.time_ns()}"
        hidden = os.path.join(self.folder, f".{name}")
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = os.path.join(self.folder, f"{name}{SPOOL_SUFFIX}")
        os.rename(hidden, path)
        return fd, path

    def append(self, row: list[Any]) -> None:
        """Keep a queued row in the current file."""
        if self.current is None:
            self.current = self.new_file()
        os.write(self.current[0], spool_line(row))

    def seal(self) -> tuple[int, str] | None:
        """Return the current file, whose rows the writer takes; the next row starts another."""
        sealed, self.current = self.current, None
        return sealed

    @staticmethod
    def remove(sealed: tuple[int, str] | None) -> None:
        """Remove a sealed file once its rows are committed (or logged as lost)."""
        if sealed is not None:
            fd, path = sealed
            os.remove(path)
            os.close(fd)

    def recover(self, engine: Engine) -> None:
        """Write the rows of the files that killed processes left, each row once; remove them."""
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(SPOOL_SUFFIX):
                continue
            path = os.path.join(self.folder, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # its process removed it meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live process (this one included) holds it
                continue
            try:
                with os.fdopen(os.dup(fd), "rb") as file:
                    lines = file.readlines()
                rows = [row for line in lines if (row := spool_row_or_none(line))]
                if len(rows) < len(lines):
                    log.error("%d unreadable tracking rows lost", len(lines) - len(rows))
                new = [row for row in rows if not row_stored(engine, row)]
                if new:
                    save_or_log(engine, new)
                    log.warning("wrote %d tracking rows left by a stopped worker", len(new))
                os.remove(path)
            finally:
                os.close(fd)


def spool_row_or_none(line: bytes) -> list[Any] | None:
    """Return the encoded row of a spool line, or None for a line that is not one: cut short by
    a killed process, or written in another version's format."""
    try:
        return spooled_row(line)
    except ValueError:
        return None


ROW_STORED = "SELECT 1 FROM trackings WHERE request_id = ? AND created_at = ?"


def row_stored(engine: Engine, row: list[Any]) -> bool:
    """Tell whether a row is in the log already: its process died after committing it."""
    values = driver_values(engine.dialect.name, row)
    return fetch_one(engine, ROW_STORED, (values[REQUEST_ID], values[CREATED_AT])) is not None


class TrackingWriter:
    """A queue of tracking rows and the background thread of this process that writes them."""

    def __init__(self, engine: Engine, spool_folder: str) -> None:
        self.engine = engine
        self.spool = Spool(spool_folder)
        self.rows: deque[list[Any]] = deque()
        self.pending = 0  # queued or being written
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.flushing = 0  # readers waiting for the queue to empty

    def submit(self, row: list[Any]) -> None:
        """Queue a row for the background thread; write it at once when the queue is full."""
        with self.changed:
            if self.pending >= QUEUE_LIMIT:
                full = True
            else:
                full = False
                self.ensure_thread()
                self.spool.append(row)
                self.rows.append(row)
                self.pending += 1
                # Wake the writer for the first row and for a full batch only: each wake-up costs.
                if len(self.rows) == 1 or len(self.rows) >= BATCH_SIZE:
                    self.changed.notify_all()
        if full:
            save_or_log(self.engine, [row])

    def ensure_thread(self) -> None:
        """Start the writing thread in this process (again after a fork); the lock is held.

        A new process first writes what killed ones left in the spool.
        """
        if self.pid != os.getpid() or self.thread is None or not self.thread.is_alive():
            if self.pid != os.getpid():
                self.rows.clear()  # a forked child does not write its parent's rows
                self.pending = 0
                self.spool.current = None
                self.spool.recover(self.engine)
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
                # Every row of the spool file it seals (at most QUEUE_LIMIT).
                batch = list(self.rows)
                self.rows.clear()
                sealed = self.spool.seal()
            try:
                save_or_log(self.engine, batch)
                self.spool.remove(sealed)
            except Exception:  # never let the thread die: later rows must still be written
                log.exception("%d tracking rows lost", len(batch))
            with self.changed:
                self.pending -= len(batch)
                self.changed.notify_all()

    def flush(self, seconds: float = FLUSH_SECONDS) -> None:
        """Wait until every row this process queued is written (or `seconds` have passed), and
        write what killed processes left in the spool."""
        with self.changed:
            if self.pid == os.getpid() and self.thread is not None and self.thread.is_alive():
                self.flushing += 1
                self.changed.notify_all()
                try:
                    self.changed.wait_for(lambda: self.pending == 0, timeout=seconds)
                finally:
                    self.flushing -= 1
        self.spool.recover(self.engine)


def save_tracking(row: dict[str, Any]) -> None:
    """Write one tracking row: queued for this worker's writer thread, or at once."""
    values = encode_row(row)
    if not current_app.config["TRACKING_WRITE_BEHIND"]:
        save_rows(db.engine, [values])
        return
    tracking_writer(current_app).submit(values)


def tracking_writer(app: Flask) -> TrackingWriter:
    """Return the app's tracking writer, made on first use."""
    writer = app.extensions.get("imagestore.tracking_writer")
    if writer is None:
        with app.app_context():
            engine = db.engine
        writer = TrackingWriter(engine, app.config["TRACKING_SPOOL_FOLDER"])
        app.extensions["imagestore.tracking_writer"] = writer
        atexit.register(writer.flush)
    return writer


def flush_trackings(app: Flask | None = None) -> None:
    """Wait until the rows this process queued are written, and those that killed workers left
    in the spool: reads then see them."""
    app = app or current_app
    if app.config["TRACKING_WRITE_BEHIND"]:
        tracking_writer(app).flush()
