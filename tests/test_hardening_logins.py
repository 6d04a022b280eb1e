"""Hardening of logins and accounts: each test sends an attack and checks that it fails."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import POSTGRES_URL, admin_connection
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from imagestore.extensions import db
from imagestore.models import User

# The last revision before usernames were folded.
BEFORE_FOLDING = "5470e650ef97"


@pytest.mark.parametrize("user", ["²", "99999999999999999999"])
def test_tracking_user_filter_of_odd_digits_answers_no_rows(client, admin, user):
    """Attack: a `user` filter that `str.isdigit` calls digits but `int` refuses (a superscript),
    or a number that overflows the database's integer: both used to answer 500."""
    client.get("/api/", auth=admin)

    response = client.get("/api/trackings/", query_string={"user": user}, auth=admin)

    assert response.status_code == 200, response.json
    assert response.json["count"] == 0


# Usernames: NFC, unique and matched without regard to case


def test_create_refuses_a_name_that_differs_only_in_case(runner, client, alice):
    """Attack: an operator (or a script) creates `ALICE` beside `alice`, a look-alike account."""
    result = runner.invoke(args=["users", "create", "ALICE", "--password", "other"])

    assert result.exit_code == 1
    assert "'alice' already exists" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert client.get("/api/", auth=("ALICE", "other")).status_code == 401


def test_create_refuses_a_name_that_differs_only_in_unicode_form(runner, client):
    """Attack: `José` spelt with a combining accent beside `José` spelt with a precomposed é."""
    runner.invoke(args=["users", "create", "Jos\u00e9", "--password", "pw"])

    result = runner.invoke(args=["users", "create", "jose\u0301", "--password", "other"])

    assert result.exit_code == 1
    assert "'Jos\u00e9' already exists" in result.output


def test_create_stores_the_name_in_nfc(runner, app):
    """Attack: a name in decomposed form, which would list and compare unlike its NFC twin."""
    result = runner.invoke(args=["users", "create", "jose\u0301", "--password", "pw"])

    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalars(select(User.username)).all() == ["jos\u00e9"]


@pytest.mark.parametrize("given", ["ALICE", "Alice"])
def test_basic_login_matches_the_username_whatever_its_case(client, alice, given):
    """Attack (on usability): a login as `ALICE` must reach the one account `alice`, no other."""
    response = client.get("/api/", auth=(given, alice[1]))

    assert response.status_code == 200


def test_basic_login_matches_the_username_whatever_its_unicode_form(runner, client):
    """Attack (on usability): a client that sends the decomposed form of an NFC name."""
    runner.invoke(args=["users", "create", "Jos\u00e9", "--password", "pw"])

    response = client.get("/api/", auth=("jose\u0301", "pw"))

    assert response.status_code == 200


def test_created_by_filter_matches_the_username_whatever_its_case(client, alice, upload):
    """Attack (on audit): `created_by=ALICE` must not hide alice's uploads."""
    upload(alice)

    response = client.get("/api/images/", query_string={"created_by": "ALICE"}, auth=alice)

    assert response.status_code == 200
    assert response.json["count"] == 1


def test_tracking_user_filter_matches_the_username_whatever_its_case(client, alice, admin):
    """Attack (on audit): `user=ALICE` must not hide alice's requests from the log."""
    client.get("/api/", auth=alice)

    response = client.get("/api/trackings/", query_string={"user": "ALICE"}, auth=admin)

    assert response.status_code == 200
    assert response.json["count"] == 1
    assert response.json["results"][0]["username"] == "alice"


def test_set_password_finds_the_user_whatever_the_case(runner, client, alice):
    """Attack (on operations): `set-password ALICE` must reach alice, not fail to find her."""
    result = runner.invoke(args=["users", "set-password", "ALICE", "--password", "new"])

    assert result.exit_code == 0, result.output
    assert client.get("/api/", auth=("alice", "new")).status_code == 200


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


def migrated_before_folding(make_app: Callable[..., Flask], url: str, names: list[str]) -> Flask:
    """Return an app on a database migrated up to the revision before usernames were folded,
    holding users of these names."""
    app = make_app(DATABASE_URL=url)
    result = app.test_cli_runner().invoke(args=["db", "upgrade", BEFORE_FOLDING])
    assert result.exit_code == 0, result.output
    with app.app_context(), db.engine.begin() as connection:
        for name in names:
            connection.execute(
                text(
                    "INSERT INTO users (username, password_hash, is_admin, is_active, created_at)"
                    " VALUES (:name, 'x', false, true, CURRENT_TIMESTAMP)"
                ),
                {"name": name},
            )
    return app


def test_migration_stops_on_names_that_clash_and_names_them(make_app, empty_database_url):
    """Attack: `alice` and `ALICE` created before the upgrade; the migration must not pick one."""
    app = migrated_before_folding(make_app, empty_database_url, ["alice", "bob", "ALICE"])

    result = app.test_cli_runner().invoke(args=["db", "upgrade"])

    assert result.exit_code == 1
    assert "'alice' (id 1); 'ALICE' (id 3)" in result.output
    assert "UPDATE users SET username" in result.output
    assert "bob" not in result.output
    with app.app_context():
        assert "username_folded" not in {c["name"] for c in inspect(db.engine).get_columns("users")}


def test_migration_folds_and_normalizes_existing_names(make_app, empty_database_url):
    """Attack: a name stored in decomposed form before the upgrade, a twin of its NFC form."""
    app = migrated_before_folding(make_app, empty_database_url, ["Alice", "jose\u0301"])

    result = app.test_cli_runner().invoke(args=["db", "upgrade"])

    assert result.exit_code == 0, result.output
    with app.app_context():
        rows = db.session.execute(select(User.username, User.username_folded).order_by(User.id))
        assert rows.all() == [("Alice", "alice"), ("jos\u00e9", "jos\u00e9")]


# Tokens: revoked with the password or the account, listed and revoked by admins


def new_token(client: FlaskClient, auth: tuple[str, str], name: str = "script") -> dict[str, Any]:
    """Create a bearer token through the API and return its JSON (secret included)."""
    response = client.post("/api/tokens/", json={"name": name}, auth=auth)
    assert response.status_code == 201, response.json
    return response.json


def bearer(token: dict[str, Any]) -> dict[str, str]:
    """Return the headers that authenticate with a token."""
    return {"Authorization": f"Bearer {token['token']}"}


def test_set_password_revokes_every_token_of_the_user(runner, client, alice, bob):
    """Attack: a stolen password was used to mint a token; changing the password must end it."""
    stolen = new_token(client, alice)
    kept = new_token(client, bob)

    result = runner.invoke(args=["users", "set-password", "alice", "--password", "new"])

    assert result.exit_code == 0, result.output
    assert "1 token revoked" in result.output
    assert client.get("/api/", headers=bearer(stolen)).status_code == 401
    assert client.get("/api/", headers=bearer(kept)).status_code == 200


def test_deactivate_revokes_tokens_for_good(runner, client, alice):
    """Attack: tokens minted before a deactivation come back to life when the user is activated
    again."""
    tokens = [new_token(client, alice), new_token(client, alice)]

    result = runner.invoke(args=["users", "deactivate", "alice"])
    runner.invoke(args=["users", "activate", "alice"])

    assert "2 tokens revoked" in result.output
    assert [client.get("/api/", headers=bearer(t)).status_code for t in tokens] == [401, 401]
    assert client.get("/api/", auth=alice).status_code == 200


def test_token_json_names_its_owner(client, alice):
    """Attack (on audit): an admin must see whose token a listed token is."""
    created = new_token(client, alice)

    listed = client.get("/api/tokens/", auth=alice).json["results"]

    assert created["username"] == "alice"
    assert [token["username"] for token in listed] == ["alice"]


def test_admin_lists_any_users_tokens(client, alice, bob, admin):
    """Attack: a leaked token of alice's that an admin must find to revoke."""
    new_token(client, alice, "laptop")
    new_token(client, bob, "ci")

    response = client.get("/api/tokens/", query_string={"user": "ALICE"}, auth=admin)

    assert response.status_code == 200
    assert [(t["username"], t["name"]) for t in response.json["results"]] == [("alice", "laptop")]


def test_admin_lists_no_tokens_of_an_unknown_user(client, admin):
    """Attack (on audit): a misspelt name must not list the admin's own tokens instead."""
    new_token(client, admin)

    response = client.get("/api/tokens/", query_string={"user": "nobody"}, auth=admin)

    assert response.status_code == 200
    assert response.json["count"] == 0


@pytest.mark.parametrize("asked", ["bob", "nobody"])
def test_user_may_not_list_someone_elses_tokens(client, alice, bob, asked):
    """Attack: alice asks for bob's tokens (or probes for a user that does not exist)."""
    new_token(client, bob)

    response = client.get("/api/tokens/", query_string={"user": asked}, auth=alice)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"


def test_admin_revokes_any_users_token(client, alice, admin):
    """Attack: alice's leaked token; an admin revokes it through the API."""
    leaked = new_token(client, alice)

    response = client.delete(f"/api/tokens/{leaked['id']}/", auth=admin)

    assert response.status_code == 204
    assert client.get("/api/", headers=bearer(leaked)).status_code == 401


def test_user_may_still_not_revoke_someone_elses_token(client, alice, bob):
    """Attack: bob revokes alice's token."""
    token = new_token(client, alice)

    response = client.delete(f"/api/tokens/{token['id']}/", auth=bob)

    assert response.status_code == 404
    assert client.get("/api/", headers=bearer(token)).status_code == 200


def test_cli_lists_every_token_or_one_users(runner, client, alice, bob):
    """Attack: leaked tokens an operator must find from the command line."""
    first = new_token(client, alice, "laptop")
    second = new_token(client, bob, "ci")

    everyone = runner.invoke(args=["tokens", "list"])
    only_bob = runner.invoke(args=["tokens", "list", "--user", "BOB"])

    assert everyone.exit_code == 0, everyone.output
    rows = [line.split("\t") for line in everyone.output.splitlines()]
    assert [row[:3] for row in rows] == [
        [str(second["id"]), "bob", "ci"],
        [str(first["id"]), "alice", "laptop"],
    ]
    assert rows[0][3:] == [second["created_at"], second["expires_at"]]
    assert [line.split("\t")[1] for line in only_bob.output.splitlines()] == ["bob"]
    assert all(t["token"] not in everyone.output for t in (first, second))


def test_cli_lists_tokens_of_an_unknown_user_as_an_error(runner):
    """Attack (on operations): a misspelt name must not look like a user without tokens."""
    result = runner.invoke(args=["tokens", "list", "--user", "nobody"])

    assert result.exit_code == 1
    assert "no user named 'nobody'" in result.output


def test_cli_revokes_tokens_by_id(runner, client, alice, bob):
    """Attack: two leaked tokens an operator revokes by id."""
    leaked = [new_token(client, alice), new_token(client, bob)]
    kept = new_token(client, alice)

    result = runner.invoke(args=["tokens", "revoke", *(str(t["id"]) for t in leaked)])

    assert result.exit_code == 0, result.output
    assert "2 tokens revoked" in result.output
    assert [client.get("/api/", headers=bearer(t)).status_code for t in leaked] == [401, 401]
    assert client.get("/api/", headers=bearer(kept)).status_code == 200


def test_cli_revokes_nothing_when_an_id_is_unknown(runner, client, alice):
    """Attack (on operations): a mistyped id among several leaves no half-done revocation."""
    token = new_token(client, alice)

    result = runner.invoke(args=["tokens", "revoke", str(token["id"]), "999"])

    assert result.exit_code == 1
    assert "999" in result.output and "none was revoked" in result.output
    assert client.get("/api/", headers=bearer(token)).status_code == 200


def test_cli_revokes_every_token_of_a_user(runner, client, alice, bob):
    """Attack: alice's machine was stolen with all her tokens on it."""
    stolen = [new_token(client, alice), new_token(client, alice)]
    kept = new_token(client, bob)

    result = runner.invoke(args=["tokens", "revoke", "--user", "Alice"])

    assert result.exit_code == 0, result.output
    assert "2 tokens revoked of alice" in result.output
    assert [client.get("/api/", headers=bearer(t)).status_code for t in stolen] == [401, 401]
    assert client.get("/api/", headers=bearer(kept)).status_code == 200


@pytest.mark.parametrize("args", [[], ["1", "--user", "alice"]])
def test_cli_revoke_needs_ids_or_a_user(runner, alice, args):
    """Attack (on operations): an ambiguous command, which must revoke nothing."""
    result = runner.invoke(args=["tokens", "revoke", *args])

    assert result.exit_code == 2
    assert "give token ids or --user" in result.output
