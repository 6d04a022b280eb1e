"""The background writer of tracking rows (TRACKING_WRITE_BEHIND, off by default)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PASSWORD, settings
from flask import Flask
from sqlalchemy import func, select, text

from imagestore import create_app, tracking_writer
from imagestore.auth import hash_password
from imagestore.extensions import db
from imagestore.models import Tracking, User, utcnow


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

        tracking_writer.save_or_log(db.engine, [good, bad, good])

    assert stored_rows(app) == 2
    assert any("tracking row lost for GET /api/" in r.getMessage() for r in caplog.records)
