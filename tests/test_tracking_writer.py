"""The background writer of tracking rows (TRACKING_WRITE_BEHIND, off by default)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import PASSWORD, settings
from sqlalchemy import func, select, text

from imagestore import create_app
from imagestore.auth import hash_password
from imagestore.db import db
from imagestore.models import Tracking, User, utcnow
from imagestore.tracking import writer as tracking_writer


@pytest.fixture
def app(database_url: str, tmp_path: Any) -> Iterator[Flask]:
    """An app whose tracking rows are written by a background thread."""
    app = create_app(settings(database_url, tmp_path) | {"TRACKING_WRITE_BEHIND": True})
    with app.app_context():
        db.session.add(User(username="root", password_hash=hash_password(PASSWORD), is_admin=True))
        db.session.commit()
    yield app
    tracking_writer.flush_trackings(app)
    with app.app_context():
        db.engine.dispose()


ADMIN = ("root", PASSWORD)


def stored_rows(app: Flask) -> int:
    """Count the tracking rows in the database, queued ones not included."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Tracking))


def test_rows_of_many_requests_are_all_written(app):
    client = app.test_client()
    for _ in range(30):
        client.get("/api/tags/", auth=ADMIN)

    response = client.get("/api/trackings/?endpoint=/api/tags/&page_size=100", auth=ADMIN)

    assert response.json["count"] == 30
    assert {row["status_code"] for row in response.json["results"]} == {200}


def test_flush_waits_until_queued_rows_are_stored(app):
    client = app.test_client()
    for _ in range(10):
        client.get("/api/", auth=ADMIN)

    tracking_writer.flush_trackings(app)

    assert stored_rows(app) == 10


def test_rows_keep_every_field(app):
    client = app.test_client()
    client.get("/api/tags/?name=x", auth=ADMIN, headers={"User-Agent": "writer-test"})

    row = client.get("/api/trackings/", auth=ADMIN).json["results"][0]

    assert row["query"] == {"name": "x"}
    assert row["user_agent"] == "writer-test"
    assert row["auth_method"] == "basic"
    assert row["response"]["count"] == 0
    assert row["created_at"].endswith("Z")


def test_a_full_queue_makes_the_request_write_its_row(app, monkeypatch):
    monkeypatch.setattr(tracking_writer, "QUEUE_LIMIT", 0)
    client = app.test_client()

    client.get("/api/", auth=ADMIN)

    assert stored_rows(app) == 1


def test_rows_that_cannot_be_written_are_logged(app, caplog):
    caplog.set_level(logging.ERROR, logger="imagestore.tracking")
    client = app.test_client()
    client.get("/api/", auth=ADMIN)  # starts the writer
    tracking_writer.flush_trackings(app)
    with app.app_context():
        db.session.execute(text("ALTER TABLE trackings RENAME TO trackings_hidden"))
        db.session.commit()
    try:
        response = client.get("/api/tags/", auth=ADMIN)
        tracking_writer.flush_trackings(app)
    finally:
        with app.app_context():
            db.session.execute(text("ALTER TABLE trackings_hidden RENAME TO trackings"))
            db.session.commit()

    assert response.status_code == 200
    assert any("tracking row lost for GET /api/tags/" in r.getMessage() for r in caplog.records)


def test_a_bad_row_does_not_lose_the_rest_of_its_batch(app, caplog):
    caplog.set_level(logging.ERROR, logger="imagestore.tracking")
    with app.app_context():
        good = {"method": "GET", "endpoint": "/api/", "status_code": 200, "duration_ms": 1.0}
        good |= {"truncated": False, "created_at": utcnow()}
        bad = good | {"status_code": None}  # NOT NULL

        rows = [tracking_writer.encode_row(row) for row in (good, bad, good)]
        tracking_writer.save_or_log(db.engine, rows)

    assert stored_rows(app) == 2
    assert any("tracking row lost for GET /api/" in r.getMessage() for r in caplog.records)


# The spool: what a killed worker queued is written by the next one


KILLED_WORKER = """
import os, pathlib, signal, sys
sys.path.insert(0, {tests!r})
from helpers import settings
from imagestore import create_app
from imagestore.tracking import writer as tracking_writer
tracking_writer.LINGER_SECONDS = 3600  # nothing is committed before the kill
app = create_app(settings({url!r}, pathlib.Path({tmp!r})) | {{"TRACKING_WRITE_BEHIND": True}})
client = app.test_client()
for number in range(3):
    response = client.get("/api/", auth={admin!r}, headers={{"X-Request-ID": f"killed-{{number}}"}})
    assert response.status_code == 200
os.kill(os.getpid(), signal.SIGKILL)
"""


def spool_files(app: Flask) -> list[Path]:
    """List the spool files of the app's tracking writer."""
    return sorted(Path(app.config["TRACKING_SPOOL_FOLDER"]).glob("*.rows"))


def killed_worker(app: Flask, database_url: str, tmp_path: Any) -> None:
    """Run a worker in another process that answers 3 requests and is killed before it commits."""
    script = KILLED_WORKER.format(
        tests=str(Path(__file__).parent), url=database_url, tmp=str(tmp_path), admin=ADMIN
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()


def test_a_queued_row_waits_in_the_spool_until_it_is_committed(app, monkeypatch):
    monkeypatch.setattr(tracking_writer, "LINGER_SECONDS", 3600)
    client = app.test_client()

    client.get("/api/", auth=ADMIN, headers={"X-Request-ID": "spooled-1"})

    [spooled] = spool_files(app)
    assert b'"spooled-1"' in spooled.read_bytes()
    tracking_writer.flush_trackings(app)
    assert spool_files(app) == []
    assert stored_rows(app) == 1


def test_rows_a_killed_worker_queued_are_written_by_the_next_one(app, database_url, tmp_path):
    killed_worker(app, database_url, tmp_path)
    assert stored_rows(app) == 0
    assert len(spool_files(app)) == 1

    rows = app.test_client().get("/api/trackings/", auth=ADMIN).json["results"]

    assert sorted(row["request_id"] for row in rows) == ["killed-0", "killed-1", "killed-2"]
    assert {row["endpoint"] for row in rows} == {"/api/"}
    assert spool_files(app) == []


def test_rows_of_a_spool_file_are_written_once(app, database_url, tmp_path):
    killed_worker(app, database_url, tmp_path)
    [left] = spool_files(app)
    content = left.read_bytes()
    tracking_writer.flush_trackings(app)

    left.write_bytes(content)  # as if the worker had died after committing, before removing it
    tracking_writer.flush_trackings(app)

    assert stored_rows(app) == 3
    assert spool_files(app) == []


def test_an_unreadable_spool_line_is_logged_and_the_rest_written(
    app, database_url, tmp_path, caplog
):
    caplog.set_level(logging.ERROR, logger="imagestore.tracking")
    killed_worker(app, database_url, tmp_path)
    [left] = spool_files(app)
    with left.open("ab") as spool:
        spool.write(b'["cut short by a kill\n')

    tracking_writer.flush_trackings(app)

    assert stored_rows(app) == 3
    assert spool_files(app) == []
    assert any("1 unreadable tracking rows lost" in r.getMessage() for r in caplog.records)
