"""App-wide behaviour: the API root, authentication, errors, configuration and the database."""

import io
import os
import stat
import subprocess
import sys

import pytest
from flask import request
from helpers import PASSWORD, POSTGRES_URL, image_bytes, settings
from sqlalchemy import inspect, text
from sqlalchemy.orm.exc import StaleDataError

from imagestore.app import ApiRequest, Fields
from imagestore.auth import auth
from imagestore.db import db, writes
from imagestore.models import Tracking, User

SQLITE_ONLY = pytest.mark.skipif(
    POSTGRES_URL is not None,
    reason="checks SQLite connection settings; the suite runs on PostgreSQL",
)


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """Clear every IMAGESTORE_* variable and point the instance folder at a temporary one."""
    for name in list(os.environ):
        if name.startswith("IMAGESTORE_"):
            monkeypatch.delenv(name)
    instance = tmp_path / "instance"
    monkeypatch.setenv("IMAGESTORE_INSTANCE_PATH", str(instance))
    return instance


# The API root


@pytest.mark.parametrize("path", ["/api/", "/api"])
def test_api_root_links_to_every_collection(client, alice, path):
    response = client.get(path, auth=alice)

    assert response.status_code == 200
    assert response.json == {
        "images": "http://localhost/api/images/",
        "tags": "http://localhost/api/tags/",
        "trackings": "http://localhost/api/trackings/",
        "tokens": "http://localhost/api/tokens/",
        "me": "http://localhost/api/me/",
        "docs": "http://localhost/api/docs/",
        "openapi": "http://localhost/api/openapi.json",
    }


def test_api_root_links_use_the_requested_host(client, alice):
    response = client.get("/api/", auth=alice, base_url="https://images.example.org")

    assert response.json["images"] == "https://images.example.org/api/images/"


@pytest.mark.parametrize("path", ["/api/", "/api"])
def test_api_root_without_credentials_is_401_problem_json(client, path):
    response = client.get(path)

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == 401
    assert response.json["detail"]


def test_api_root_without_credentials_asks_for_basic_auth(client):
    response = client.get("/api/")

    assert response.headers["WWW-Authenticate"].startswith("Basic")


# Authentication


def test_unknown_user_is_401(client):
    response = client.get("/api/", auth=("nobody", "whatever"))

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"


def test_wrong_password_is_401(client, alice):
    response = client.get("/api/", auth=("alice", "wrong"))

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"


def test_wrong_password_is_401_after_a_successful_request(client, alice):
    client.get("/api/", auth=alice)

    response = client.get("/api/", auth=("alice", "wrong"))

    assert response.status_code == 401


def test_deactivated_user_is_401(client, make_user):
    carol = make_user("carol", active=False)

    response = client.get("/api/", auth=carol)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_empty_username_is_401(client, alice):
    response = client.get("/api/", auth=("", alice[1]))

    assert response.status_code == 401


# Errors


def test_unknown_api_path_is_404_problem_json(client, alice):
    response = client.get("/api/nothing-here/", auth=alice)

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == 404
    assert response.json["type"] == "about:blank"
    assert response.json["detail"]


def test_wrong_method_is_405_with_allow_header(client, alice):
    response = client.delete("/api/", auth=alice)

    assert response.status_code == 405
    assert response.content_type == "application/problem+json"
    assert "GET" in response.headers["Allow"]
    assert response.json["detail"]


def test_unexpected_exception_is_500_problem_json_without_traceback(app, client, alice):
    def explode():
        raise RuntimeError("internal detail that must not leak")

    app.add_url_rule("/api/explode/", "explode", explode)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    response = client.get("/api/explode/", auth=alice)

    assert response.status_code == 500
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == 500
    assert response.json["detail"]
    assert "Traceback" not in response.text
    assert "must not leak" not in response.text


def test_a_concurrent_change_of_the_same_rows_is_409_problem_json(app, client, alice):
    def collide():
        raise StaleDataError("DELETE statement on table 'image_tags' expected to delete 1 row")

    app.add_url_rule("/api/collide/", "collide", collide)

    response = client.get("/api/collide/", auth=alice)

    assert response.status_code == 409
    assert response.content_type == "application/problem+json"
    assert response.json["detail"]


def test_a_request_whose_transaction_failed_is_still_tracked(app, client, alice):
    @auth.login_required
    @writes  # ends the login's transaction: the after-request hooks load the user again
    def break_the_transaction():
        db.session.execute(text("SELECT no_such_column FROM users"))

    app.add_url_rule("/api/broken/", "broken", break_the_transaction)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    response = client.get("/api/broken/", auth=alice)

    assert response.status_code == 500
    with app.app_context():
        [row] = db.session.scalars(db.select(Tracking)).all()
    assert (row.status_code, row.username) == (500, "alice")


def test_a_malformed_multipart_body_is_400_not_an_empty_form(client, alice):
    body = b"--B\r\n\xf1\x8a not a part--B--\r\n"

    response = client.patch(
        "/api/images/1/", data=body, content_type="multipart/form-data; boundary=B", auth=alice
    )

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.json["detail"] == "The form body is malformed."


@pytest.mark.parametrize(
    ("body", "location"), [({"json": {}}, "json"), ({"data": {"other": "x"}}, "form")]
)
def test_body_errors_are_keyed_by_what_was_sent(client, alice, body, location):
    response = client.put("/api/images/1/", auth=alice, **body)

    assert response.status_code == 400
    assert list(response.json["errors"]) == [location]
    assert response.json["errors"][location]["tags"] == ["Missing data for required field."]


def test_query_fields_are_read_through_the_app_request_class(app):
    """Every request is an ApiRequest: its query and form fields are `Fields`, whose lookups of
    absent keys webargs makes on every list request."""
    with app.test_request_context("/api/images/?page=2"):
        assert isinstance(request._get_current_object(), ApiRequest)
        assert type(request.args) is Fields
        assert request.args.get("tags") is None
        assert request.args.get("page", type=int) == 2


def test_every_view_that_is_not_a_get_says_whether_it_writes(app):
    """A view that changes data without `@writes` fails only under concurrent load, with
    "database is locked": each one says `@writes` or `@reads_only`."""
    undeclared = [
        f"{sorted(rule.methods - {'GET', 'HEAD', 'OPTIONS'})} {rule.rule}"
        for rule in app.url_map.iter_rules()
        if rule.methods - {"GET", "HEAD", "OPTIONS"}
        and not hasattr(app.view_functions[rule.endpoint], "writes")
    ]
    assert undeclared == []
    assert any(getattr(view, "writes", False) for view in app.view_functions.values()), (
        "no view declares writes: the check above would pass on anything"
    )


# Configuration


def test_instance_path_is_read_from_the_environment(environment, build_app):
    app = build_app()

    assert app.instance_path == str(environment)


def test_database_url_is_read_from_the_environment(environment, monkeypatch, tmp_path, build_app):
    url = f"sqlite:///{tmp_path}/from-env.sqlite"
    monkeypatch.setenv("IMAGESTORE_DATABASE_URL", url)

    app = build_app()

    assert app.config["SQLALCHEMY_DATABASE_URI"] == url


def test_max_upload_is_read_from_the_environment(environment, monkeypatch, build_app):
    monkeypatch.setenv("IMAGESTORE_MAX_UPLOAD_MB", "5")

    app = build_app()

    assert app.config["MAX_CONTENT_LENGTH"] == 5 * 1024 * 1024


def test_max_upload_defaults_to_20_mb(environment, build_app):
    app = build_app()

    assert app.config["MAX_CONTENT_LENGTH"] == 20 * 1024 * 1024


def test_environment_is_ignored_when_a_test_config_is_given(
    environment, monkeypatch, tmp_path, build_app
):
    monkeypatch.setenv("IMAGESTORE_MAX_UPLOAD_MB", "5")

    app = build_app(settings(f"sqlite:///{tmp_path}/test.sqlite", tmp_path))

    assert app.config["MAX_CONTENT_LENGTH"] == 20 * 1024 * 1024


def test_default_database_is_a_sqlite_file_in_the_instance_folder(environment, build_app):
    app = build_app()

    with app.app_context():
        url = db.engine.url
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(environment / "imagestore.sqlite")


@pytest.mark.parametrize(
    "url",
    ["postgres://someone@db.example.org/images", "postgresql://someone@db.example.org/images"],
)
def test_postgres_urls_use_psycopg(tmp_path, build_app, url):
    app = build_app(settings(url, tmp_path))

    assert (
        app.config["SQLALCHEMY_DATABASE_URI"]
        == "postgresql+psycopg://someone@db.example.org/images"
    )


def test_secret_key_is_generated_into_the_instance_folder(environment, build_app):
    app = build_app()

    path = environment / "secret_key"
    assert path.read_text().strip() == app.config["SECRET_KEY"]
    assert len(app.config["SECRET_KEY"]) >= 32


def test_generated_secret_key_is_readable_by_its_owner_only(environment, build_app):
    build_app()

    mode = stat.S_IMODE((environment / "secret_key").stat().st_mode)
    assert mode == 0o600


def test_generated_secret_key_is_reused_by_the_next_app(environment, build_app):
    first = build_app()

    second = build_app()

    assert second.config["SECRET_KEY"] == first.config["SECRET_KEY"]


def test_secret_key_from_the_environment_wins_over_the_generated_one(
    environment, monkeypatch, build_app
):
    build_app()
    monkeypatch.setenv("IMAGESTORE_SECRET_KEY", "from the environment")

    app = build_app()

    assert app.config["SECRET_KEY"] == "from the environment"


def test_numeric_secret_key_from_the_environment_is_kept_as_text(
    environment, monkeypatch, build_app
):
    monkeypatch.setenv("IMAGESTORE_SECRET_KEY", "123456")

    app = build_app()

    assert app.config["SECRET_KEY"] == "123456"


def test_passwords_are_hashed_with_pbkdf2_by_default(database_url, tmp_path, build_app):
    config = settings(database_url, tmp_path)
    del config["PASSWORD_HASH_METHOD"]
    app = build_app(config)

    result = app.test_cli_runner().invoke(args=["users", "create", "carol", "--password", "pw"])

    assert result.exit_code == 0, result.output
    with app.app_context():
        stored = db.session.scalar(db.select(User.password_hash).where(User.username == "carol"))
    assert stored.startswith("pbkdf2:sha256:600000$")


# Database


def test_migrations_upgrade_a_fresh_sqlite_database(tmp_path, build_app):
    app = build_app(settings(f"sqlite:///{tmp_path}/fresh.sqlite", tmp_path))

    result = app.test_cli_runner().invoke(args=["db", "upgrade"])

    assert result.exit_code == 0, result.output
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
    assert set(db.metadata.tables) <= tables


def test_the_served_app_leaves_flask_migrate_unimported(environment):
    imported = "import sys, wsgi; print(sorted({'alembic', 'flask_migrate'} & set(sys.modules)))"

    result = subprocess.run(
        [sys.executable, "-c", imported],
        cwd=os.path.dirname(os.path.dirname(__file__)),
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.strip() == "[]"


def test_migrated_database_matches_the_models(tmp_path, build_app):
    app = build_app(settings(f"sqlite:///{tmp_path}/fresh.sqlite", tmp_path))
    runner = app.test_cli_runner()
    runner.invoke(args=["db", "upgrade"])

    result = runner.invoke(args=["db", "check"])

    assert result.exit_code == 0, result.output


def test_upgrade_retypes_mpo_and_apng_images_as_their_format(make_app, empty_database_url):
    """Images stored as MPO or image/apng before the upgrade are JPEG and PNG after it, found
    by the `content_type` filter, their bytes and other images untouched."""
    app, alice = make_app(DATABASE_URL=empty_database_url), ("alice", PASSWORD)
    runner, client = app.test_cli_runner(), app.test_client()
    assert runner.invoke(args=["db", "upgrade", "c2cfa74431de"]).exit_code == 0
    assert runner.invoke(args=["users", "create", alice[0], "--password", alice[1]]).exit_code == 0
    ids = [
        client.post("/api/images/", data={"image": (io.BytesIO(content), "a")}, auth=alice).json[
            "id"
        ]
        for content in (image_bytes("JPEG"), image_bytes("PNG"), image_bytes("GIF"))
    ]
    with app.app_context(), db.engine.begin() as connection:
        for image_id, fmt, content_type in (
            (ids[0], "MPO", "image/mpo"),
            (ids[1], "PNG", "image/apng"),
        ):
            connection.execute(
                text("UPDATE images SET format = :fmt, content_type = :type WHERE id = :id"),
                {"fmt": fmt, "type": content_type, "id": image_id},
            )
    before = {
        image["id"]: image for image in client.get("/api/images/", auth=alice).json["results"]
    }

    result = runner.invoke(args=["db", "upgrade"])

    assert result.exit_code == 0, result.output
    after = {image["id"]: image for image in client.get("/api/images/", auth=alice).json["results"]}
    assert [(after[i]["format"], after[i]["content_type"]) for i in ids] == [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
    ]
    assert {i: after[i]["sha256"] for i in ids} == {i: before[i]["sha256"] for i in ids}
    jpegs = client.get("/api/images/?content_type=image/jpeg", auth=alice).json["results"]
    assert [image["id"] for image in jpegs] == [ids[0]]
    assert client.get(after[ids[0]]["image"], auth=alice).content_type == "image/jpeg"


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("pragma", "expected"),
    [("journal_mode", "wal"), ("foreign_keys", 1)],
)
def test_sqlite_connections_are_configured(app, pragma, expected):
    with app.app_context():
        value = db.session.execute(text(f"PRAGMA {pragma}")).scalar()

    assert value == expected


@SQLITE_ONLY
def test_sqlite_connections_wait_when_the_database_is_busy(app):
    with app.app_context():
        timeout = db.session.execute(text("PRAGMA busy_timeout")).scalar()

    assert timeout > 0
