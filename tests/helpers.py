"""Plain functions and constants the test modules share; the fixtures are in conftest.py."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from PIL import Image as PILImage
from seaweed import S3Server
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from werkzeug.test import TestResponse

from imagestore import create_app
from imagestore.db import db
from imagestore.db_cli import init_migrations
from imagestore.models import Image, Tracking

# Credentials as the test client's `auth=` takes them: (username, password).
Auth = tuple[str, str]

PROJECT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
# Set to a PostgreSQL URL (say postgresql://127.0.0.1:5432/test) to run the suite there too.
POSTGRES_URL = os.environ.get("IMAGESTORE_TEST_DATABASE_URL")
# A timestamp as the API writes it: ISO 8601 in UTC with a `Z`.
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
# Requests to loopback servers go straight there, whatever proxy the environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# Apps and databases


def settings(database_url: str, tmp_path: Any) -> dict[str, Any]:
    """Return the test configuration of an app on this database."""
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test secret",
        "MEDIA_FOLDER": str(tmp_path / "media"),
        # The test's own, not the instance folder of the project (`make run`'s, and every test's).
        "TRACKING_SPOOL_FOLDER": str(tmp_path / "tracking-spool"),
        # A cheap hash keeps the suite fast; one test checks the default method.
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        # Rows are written before the response ends, so tests may read them at once;
        # tests/test_tracking_writer.py covers the background writer.
        "TRACKING_WRITE_BEHIND": False,
    }


def migrate_database(url: str, tmp_path: Any) -> None:
    """Apply every migration to an empty database, as `flask db upgrade` does."""
    app = create_app(settings(url, tmp_path))
    init_migrations(app)
    with app.app_context():
        upgrade()
        db.engine.dispose()


def admin_connection(url: str) -> psycopg.Connection:
    """Open an autocommit connection to the server's maintenance database."""
    server = make_url(url).set(drivername="postgresql", database="postgres")
    return psycopg.connect(server.render_as_string(hide_password=False), autocommit=True)


def missing_service(reason: str) -> NoReturn:
    """Skip a test whose service is missing; fail it where CI says every service must be there."""
    if os.environ.get("IMAGESTORE_TEST_REQUIRE_SERVICES"):
        pytest.fail(f"{reason} (IMAGESTORE_TEST_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def venv_program(name: str) -> str:
    """Return a program the test environment installed: beside the running Python, or on PATH."""
    beside_python = Path(sys.executable).with_name(name)
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"`{name}` is not installed: `make install-test` installs it")
    return found


# Images and files


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (8, 6), color: str = "red") -> bytes:
    """Return a small real image in the given Pillow format."""
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def checksum(content: bytes) -> str:
    """Return the SHA-256 of content in hex, as the API shows it."""
    return hashlib.sha256(content).hexdigest()


def media_files(app: Flask) -> list[str]:
    """List the files in the media folder (temporary files included), relative to it."""
    root = app.config["MEDIA_FOLDER"]
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
    )


def bucket_keys(s3_server: S3Server, bucket: str) -> list[str]:
    """List the keys of a bucket, read directly from the store."""
    found = s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(item["Key"] for item in found)


def run_check(app: Flask, *args: str) -> Result:
    """Run `flask storage check` with these arguments."""
    return app.test_cli_runner().invoke(args=["storage", "check", *args])


# Rows the API cannot show


def image_rows(app: Flask) -> int:
    """Count the rows of the images table."""
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(Image))


def tracking_rows(app: Flask) -> int:
    """Count the rows of the trackings table."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Tracking))


def set_created_at(app: Flask, image_id: int, when: Any) -> None:
    """Give an image another creation time, which the API cannot set."""
    with app.app_context():
        db.session.get(Image, image_id).created_at = when
        db.session.commit()


# Requests and responses


def assert_problem(response: TestResponse, status: int) -> None:
    """Check that a response is an RFC 9457 problem with this status and a detail."""
    assert response.status_code == status, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == status
    assert isinstance(response.json["detail"], str)
    assert response.json["detail"]


def post_files(
    client: FlaskClient,
    auth: Auth,
    files: list[tuple[bytes, str]],
    tags: list[str] | tuple[str, ...] = (),
    query: str = "",
) -> TestResponse:
    """Upload several files in `image` fields of one request, with shared tags."""
    data = {
        "image": [(io.BytesIO(content), filename) for content, filename in files],
        "tags": list(tags),
    }
    return client.post(
        f"/api/images/{query}", data=data, auth=auth, content_type="multipart/form-data"
    )


def tagged_image(upload: Any, auth: Auth, tags: list[str]) -> int:
    """Upload an image carrying these tags (through the `upload` fixture) and return its id."""
    response = upload(auth, tags=tags)
    assert response.status_code == 201, response.json
    return response.json["id"]


def image_tags(client: FlaskClient, auth: Auth, image_id: int) -> list[str]:
    """Return the tag names an image shows through the API."""
    response = client.get(f"/api/images/{image_id}/", auth=auth)
    assert response.status_code == 200, response.json
    return response.json["tags"]


def names(response: TestResponse) -> list[str]:
    """Return the tag names of one page of the tag list, in order."""
    return [tag["name"] for tag in response.json["results"]]


def result_ids(response: TestResponse) -> list[int]:
    """Return the ids of the images in a list response, in order."""
    assert response.status_code == 200, response.json
    return [image["id"] for image in response.json["results"]]
