"""The /healthz and /readyz probes: no auth, not tracked, 503 naming what failed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from helpers import free_port, settings, tracking_rows
from sqlalchemy import event

from imagestore import create_app
from imagestore.db import db


@pytest.fixture
def app_without_database(tmp_path: Any) -> Iterator[Flask]:
    """An app whose PostgreSQL server is not there."""
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    app = create_app(settings(url, tmp_path))
    yield app
    with app.app_context():
        db.engine.dispose()


def test_healthz_answers_ok_without_credentials(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_healthz_answers_with_a_trailing_slash_too(client):
    assert client.get("/healthz/").status_code == 200


def test_healthz_runs_no_database_statement(app, client):
    statements = []
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    response = client.get("/healthz")

    assert response.status_code == 200
    assert statements == []


def test_healthz_answers_when_the_database_is_down(app_without_database):
    response = app_without_database.test_client().get("/healthz")

    assert response.status_code == 200


def test_readyz_reports_database_and_storage_ok(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}


def test_readyz_is_503_naming_the_database_when_it_is_down(app_without_database):
    response = app_without_database.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == 503
    assert response.json["checks"] == {"database": "failed", "storage": "ok"}
    assert "database" in response.json["detail"]
    assert "storage" not in response.json["detail"]


def test_readyz_is_503_naming_the_storage_when_its_folder_is_gone(app, client):
    shutil.rmtree(app.config["MEDIA_FOLDER"])

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json["checks"] == {"database": "ok", "storage": "failed"}
    assert "storage" in response.json["detail"]


def test_readyz_does_not_show_the_error_text_to_anonymous_callers(app_without_database):
    response = app_without_database.test_client().get("/readyz")

    assert "127.0.0.1" not in response.get_data(as_text=True)


def test_readyz_logs_why_a_check_failed(app_without_database, caplog):
    app_without_database.test_client().get("/readyz")

    failures = [r for r in caplog.records if r.name == "imagestore.health"]
    assert [r.getMessage() for r in failures] == ["readiness: database check failed"]
    assert failures[0].exc_info is not None


def test_probes_ignore_bad_credentials(client):
    headers = {"Authorization": "Basic bm9ib2R5Om5vcGU="}  # nobody:nope

    assert client.get("/healthz", headers=headers).status_code == 200
    assert client.get("/readyz", headers=headers).status_code == 200


def test_probes_are_not_tracked(app, client):
    client.get("/healthz")
    client.get("/readyz")
    client.get("/healthz/")

    assert tracking_rows(app) == 0


def test_healthz_refuses_other_methods_with_405(client):
    response = client.post("/healthz")

    assert response.status_code == 405
    assert response.content_type == "application/problem+json"
