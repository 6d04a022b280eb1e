"""Hardening of logins and accounts: each test sends an attack and checks that it fails."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from helpers import PASSWORD, missing_service
from sqlalchemy import inspect, select, text
from werkzeug.security import check_password_hash

from imagestore import auth as auth_module
from imagestore.auth import hash_password
from imagestore.db import db
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
    assert "999" in result.output
    assert "none was revoked" in result.output
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


# Password guessing: failed Basic logins are throttled per username and per address

ATTACKER = {"REMOTE_ADDR": "198.51.100.66"}
OWNER = {"REMOTE_ADDR": "203.0.113.7"}
# Throttle settings that no test waits out by accident: a lock lasts a minute at least.
SLOW = {"LOGIN_LOCK_SECONDS": 60, "LOGIN_MAX_LOCK_SECONDS": 900}


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every password hash that logins check (the costly step the throttle must skip)."""
    checked: list[str] = []

    def counting(stored: str, password: str) -> bool:
        checked.append(stored)
        return check_password_hash(stored, password)

    monkeypatch.setattr(auth_module, "check_password_hash", counting)
    return checked


@pytest.fixture
def throttled(make_app: Callable[..., Flask]) -> Callable[..., tuple[Flask, FlaskClient]]:
    """Return a builder of an app (and client) with throttle settings changed, with alice."""

    def throttled(**overrides: Any) -> tuple[Flask, FlaskClient]:
        app = make_app(**(SLOW | overrides))
        add_user(app, "alice")
        return app, app.test_client()

    return throttled


def add_user(app: Flask, name: str, admin: bool = False) -> None:
    """Store a user with the test password, unless one of that name exists."""
    with app.app_context():
        if db.session.scalar(User.named(name)) is None:
            user = User(username=name, password_hash=hash_password(PASSWORD), is_admin=admin)
            db.session.add(user)
            db.session.commit()


def login(client: FlaskClient, username: str, password: str, address: dict[str, str]) -> Any:
    """Send one Basic login from a client address and return the response."""
    return client.get("/api/", auth=(username, password), environ_base=address)


def assert_throttled(response: Any, most: int) -> int:
    """Check a 429 problem with Retry-After (whole seconds, at most `most`); return it."""
    assert response.status_code == 429, response.json
    assert response.content_type == "application/problem+json"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= most
    assert f"Retry in {retry_after} seconds" in response.json["detail"]
    return retry_after


def test_guessing_a_password_is_throttled_and_stays_throttled(throttled, hashes):
    """Attack: guess alice's password from one address as fast as the server answers."""
    _, client = throttled()
    statuses = [login(client, "alice", f"guess {n}", ATTACKER).status_code for n in range(6)]
    checked = len(hashes)

    refused = [login(client, "alice", f"guess {n}", ATTACKER) for n in range(6, 30)]
    right_one = login(client, "alice", PASSWORD, ATTACKER)

    assert statuses == [401] * 6
    for response in [*refused, right_one]:
        assert_throttled(response, 60)
    assert len(hashes) == checked  # no password was hashed for a refused login


def test_the_owner_logs_in_from_another_address_while_guessers_are_throttled(throttled):
    """Attack: lock alice out of her account by guessing her password wrong on purpose."""
    _, client = throttled()
    for n in range(7):
        login(client, "alice", f"guess {n}", ATTACKER)

    response = login(client, "alice", PASSWORD, OWNER)

    assert response.status_code == 200
    assert_throttled(login(client, "alice", "guess", ATTACKER), 60)


def test_a_wrong_password_from_a_fresh_address_counts_while_the_username_is_locked(throttled):
    """Attack: spread guesses of a locked username over many addresses, one each."""
    _, client = throttled()
    for n in range(7):
        login(client, "alice", f"guess {n}", ATTACKER)
    fresh = {"REMOTE_ADDR": "192.0.2.99"}

    first = login(client, "alice", "another guess", fresh)
    second = login(client, "alice", PASSWORD, fresh)

    assert first.status_code == 401
    assert assert_throttled(second, 900) > 60  # the new failure doubled the lock


def test_a_success_does_not_unlock_the_username(throttled):
    """Attack: wait for the owner to log in, hoping that resets the lock on the username."""
    _, client = throttled()
    for n in range(7):
        login(client, "alice", f"guess {n}", ATTACKER)

    assert login(client, "alice", PASSWORD, OWNER).status_code == 200

    assert_throttled(login(client, "alice", "guess", ATTACKER), 60)


def test_guessing_many_usernames_from_one_address_is_throttled(throttled, hashes):
    """Attack: spray one common password over many usernames from one address."""
    app, client = throttled()
    add_user(app, "bob")
    statuses = [login(client, f"user{n}", "123456", ATTACKER).status_code for n in range(21)]
    checked = len(hashes)

    sprayed = [login(client, f"other{n}", "123456", ATTACKER) for n in range(10)]
    bob = login(client, "bob", PASSWORD, ATTACKER)

    assert statuses == [401] * 21
    for response in [*sprayed, bob]:
        assert_throttled(response, 60)
    assert len(hashes) == checked
    assert login(client, "bob", PASSWORD, OWNER).status_code == 200


def test_each_further_failure_doubles_the_lock_until_waited_out(throttled):
    """Attack: retry right after each lock ends; each new failure must lock twice as long."""
    _, client = throttled(LOGIN_FREE_FAILURES_PER_USER=1, LOGIN_LOCK_SECONDS=1)
    login(client, "alice", "guess 1", ATTACKER)
    login(client, "alice", "guess 2", ATTACKER)
    first = assert_throttled(login(client, "alice", "guess 3", ATTACKER), 1)

    time.sleep(first + 0.1)
    checked = login(client, "alice", "guess 3", ATTACKER)
    second = assert_throttled(login(client, "alice", "guess 4", ATTACKER), 2)

    assert (first, checked.status_code, second) == (1, 401, 2)


def test_the_owner_logs_in_again_once_the_lock_is_waited_out(throttled):
    """Attack: a lock meant to last forever; waiting it out must let the right password in."""
    _, client = throttled(LOGIN_FREE_FAILURES_PER_USER=1, LOGIN_LOCK_SECONDS=1)
    login(client, "alice", "guess 1", OWNER)
    login(client, "alice", "guess 2", OWNER)
    wait = assert_throttled(login(client, "alice", PASSWORD, OWNER), 1)

    time.sleep(wait + 0.1)

    assert login(client, "alice", PASSWORD, OWNER).status_code == 200


def test_failures_are_forgotten_after_the_window(throttled):
    """Attack (on usability): old failures must not lock an account forever."""
    _, client = throttled(
        LOGIN_FREE_FAILURES_PER_USER=1,
        LOGIN_LOCK_SECONDS=1,
        LOGIN_MAX_LOCK_SECONDS=1,
        LOGIN_FAILURE_WINDOW_SECONDS=1,
    )
    login(client, "alice", "guess 1", ATTACKER)
    login(client, "alice", "guess 2", ATTACKER)

    time.sleep(1.2)
    statuses = [login(client, "alice", f"again {n}", ATTACKER).status_code for n in range(2)]

    assert statuses == [401, 401]  # one free failure again, so the second one is checked too


def test_a_remembered_login_is_no_oracle_once_its_address_is_locked(throttled, hashes):
    """Attack: behind alice's own address (one NAT), spray usernames until the address is
    locked, then guess alice's password while her login is remembered: the right guess must
    get the same 429 as a wrong one, unhashed."""
    _, client = throttled()
    assert login(client, "alice", PASSWORD, ATTACKER).status_code == 200
    for n in range(22):
        login(client, f"user{n}", "123456", ATTACKER)
    checked = len(hashes)

    right = login(client, "alice", PASSWORD, ATTACKER)
    wrong = login(client, "alice", "guess", ATTACKER)

    assert_throttled(right, 60)
    assert_throttled(wrong, 60)
    assert len(hashes) == checked


def test_a_remembered_login_works_again_once_the_address_lock_is_waited_out(throttled):
    """Attack, then patience: once the address lock has passed, alice's remembered login
    works again without asking the throttle."""
    _, client = throttled(LOGIN_LOCK_SECONDS=1, LOGIN_MAX_LOCK_SECONDS=1)
    assert login(client, "alice", PASSWORD, ATTACKER).status_code == 200
    for n in range(21):
        login(client, f"user{n}", "123456", ATTACKER)
    assert_throttled(login(client, "alice", PASSWORD, ATTACKER), 1)

    time.sleep(1.1)

    assert login(client, "alice", PASSWORD, ATTACKER).status_code == 200


def test_a_login_remembered_for_one_address_is_checked_again_from_another(throttled):
    """Attack: from a throttled address, guess alice's password while her own client's login is
    remembered: a right guess must not be told apart from a wrong one."""
    _, client = throttled()
    assert login(client, "alice", PASSWORD, OWNER).status_code == 200
    for n in range(22):
        login(client, f"user{n}", "123456", ATTACKER)

    assert_throttled(login(client, "alice", PASSWORD, ATTACKER), 60)


def test_a_remembered_login_never_asks_the_throttle(throttled, monkeypatch):
    """Attack (on speed): a busy client's logins must not wait on the throttle's storage."""
    app, client = throttled()
    assert login(client, "alice", PASSWORD, OWNER).status_code == 200
    asked: list[str] = []
    storage = app.extensions["imagestore.throttle"].storage
    for name in ("get", "incr", "get_expiry"):
        method = getattr(storage, name)
        monkeypatch.setattr(storage, name, lambda *a, m=method, n=name: asked.append(n) or m(*a))

    statuses = [login(client, "alice", PASSWORD, OWNER).status_code for _ in range(5)]

    assert statuses == [200] * 5
    assert asked == []


def test_rotating_x_forwarded_for_does_not_dodge_the_address_lock(throttled):
    """Attack: a new X-Forwarded-For on every guess, to look like a new address each time."""
    _, client = throttled()
    responses = [
        client.get(
            "/api/",
            auth=(f"user{n}", "123456"),
            headers={"X-Forwarded-For": f"192.0.2.{n}"},
            environ_base=ATTACKER,
        )
        for n in range(25)
    ]

    assert [r.status_code for r in responses[:21]] == [401] * 21
    for response in responses[21:]:
        assert_throttled(response, 60)


def test_behind_a_trusted_proxy_the_forwarded_address_is_throttled(throttled):
    """Attack: guesses relayed by the front proxy; the client it names is throttled, not the
    proxy (which carries every other client too)."""
    _, client = throttled(PROXY_HOPS=1)
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    for n in range(22):
        client.get(
            "/api/",
            auth=(f"user{n}", "123456"),
            headers={"X-Forwarded-For": ATTACKER["REMOTE_ADDR"]},
            environ_base=proxy,
        )

    guess = client.get(
        "/api/",
        auth=("user", "123456"),
        headers={"X-Forwarded-For": ATTACKER["REMOTE_ADDR"]},
        environ_base=proxy,
    )
    owner = client.get(
        "/api/",
        auth=("alice", PASSWORD),
        headers={"X-Forwarded-For": OWNER["REMOTE_ADDR"]},
        environ_base=proxy,
    )

    assert_throttled(guess, 60)
    assert owner.status_code == 200


def test_addresses_of_one_ipv6_slash_64_are_throttled_together(throttled):
    """Attack: a new IPv6 address for every guess, from the /64 that one client holds."""
    _, client = throttled()
    for n in range(21):
        login(client, f"user{n}", "123456", {"REMOTE_ADDR": f"2001:db8:1:2::{n + 1:x}"})

    same_64 = login(client, "user", "123456", {"REMOTE_ADDR": "2001:db8:1:2:ffff::1"})
    other_64 = login(client, "alice", PASSWORD, {"REMOTE_ADDR": "2001:db8:1:3::1"})

    assert_throttled(same_64, 60)
    assert other_64.status_code == 200


def test_throttled_logins_are_tracked(throttled):
    """Attack: guesses that a throttle answers must still leave their audit rows."""
    app, client = throttled()
    add_user(app, "root", admin=True)
    for n in range(8):
        login(client, "alice", f"guess {n}", ATTACKER)

    response = client.get(
        "/api/trackings/",
        query_string={"status_code": 429},
        auth=("root", PASSWORD),
        environ_base=OWNER,
    )

    assert response.status_code == 200
    assert response.json["count"] == 2
    row = response.json["results"][0]
    assert (row["username"], row["remote_addr"]) == ("alice", ATTACKER["REMOTE_ADDR"])
    assert row["response"]["status"] == 429


def test_the_openapi_document_names_429_with_retry_after(client):
    """Attack (on clients): a 429 that the API's contract does not mention."""
    document = client.get("/api/openapi.json").json

    listed = document["paths"]["/api/images/"]["get"]["responses"]["429"]
    public = document["paths"]["/api/openapi.json"]["get"]["responses"]

    assert "Retry-After" in listed["headers"]
    assert "429" not in public


def test_an_unreachable_shared_storage_still_throttles_and_never_fails(throttled):
    """Attack: guesses while the shared storage is down (here: nothing listens on its port)."""
    _, client = throttled(RATELIMIT_STORAGE_URL="redis://127.0.0.1:9/0")

    owner = login(client, "alice", PASSWORD, OWNER)
    statuses = [login(client, "alice", f"guess {n}", ATTACKER).status_code for n in range(6)]

    assert owner.status_code == 200
    assert statuses == [401] * 6
    assert_throttled(login(client, "alice", "guess", ATTACKER), 60)


@pytest.mark.parametrize(
    "setting",
    [
        {"LOGIN_LOCK_SECONDS": 0},
        {"LOGIN_FREE_FAILURES_PER_USER": "5"},
        {"LOGIN_FAILURE_WINDOW_SECONDS": 60, "LOGIN_MAX_LOCK_SECONDS": 900},
    ],
)
def test_throttle_settings_that_would_not_throttle_are_refused(make_app, setting):
    """Attack (on operations): a setting that silently turns the back-off off or lifts locks
    before they end."""
    with pytest.raises(ValueError, match="LOGIN_"):
        make_app(**setting)


def test_an_asyncio_throttle_storage_is_refused_at_startup(make_app):
    """An asyncio storage (`async+...`) cannot count logins for a synchronous view."""
    with pytest.raises(ValueError, match="RATELIMIT_STORAGE_URL"):
        make_app(RATELIMIT_STORAGE_URL="async+memory://")


# The throttle's counts shared by two hosts through Redis


@pytest.fixture
def redis_settings() -> Iterator[Callable[[], dict[str, str]]]:
    """Return a maker of settings that keep the throttle's counts in this machine's Redis, each
    under a key prefix of its own; skip (fail in CI) without Redis, remove the keys afterwards."""
    url = "redis://127.0.0.1:6379/0"
    server = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        server.ping()
    except redis.RedisError:
        missing_service("Redis does not answer on 127.0.0.1:6379")
    prefixes: list[str] = []

    def redis_settings() -> dict[str, str]:
        prefixes.append(f"test-{uuid.uuid4().hex}")
        return {"RATELIMIT_STORAGE_URL": url, "RATELIMIT_KEY_PREFIX": prefixes[-1]}

    yield redis_settings
    for prefix in prefixes:
        keys = list(server.scan_iter(match=f"*{prefix}/*"))
        if keys:
            server.delete(*keys)


@pytest.mark.service
def test_two_hosts_share_the_throttle_through_redis(make_app, redis_settings):
    """Attack: spread guesses over two hosts behind a load balancer, to get twice the tries."""
    shared = redis_settings()
    first, second = make_app(**SLOW, **shared), make_app(**SLOW, **shared)
    add_user(first, "alice")
    host_a, host_b = first.test_client(), second.test_client()

    for n in range(6):
        assert login((host_a, host_b)[n % 2], "alice", f"guess {n}", ATTACKER).status_code == 401

    assert_throttled(login(host_a, "alice", "guess", ATTACKER), 60)
    assert_throttled(login(host_b, "alice", "guess", ATTACKER), 60)
    assert login(host_b, "alice", PASSWORD, OWNER).status_code == 200


@pytest.mark.service
def test_hosts_with_other_key_prefixes_keep_their_own_counts(make_app, redis_settings):
    """Attack (on availability): guesses against one deployment must not lock another that
    shares the Redis server."""
    one, other = make_app(**SLOW, **redis_settings()), make_app(**SLOW, **redis_settings())
    add_user(one, "alice")
    for n in range(7):
        login(one.test_client(), "alice", f"guess {n}", ATTACKER)

    assert login(other.test_client(), "alice", "guess", ATTACKER).status_code == 401
