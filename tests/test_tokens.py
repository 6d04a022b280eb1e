"""Bearer tokens: /api/tokens/ creates, lists and revokes them; every route accepts them."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import ISO_UTC, image_bytes
from sqlalchemy import select, update

from imagestore.db import db
from imagestore.models import Token


def create_token(client: FlaskClient, auth: tuple[str, str], **body: Any) -> dict[str, Any]:
    """Create a token through the API and return the response body."""
    response = client.post("/api/tokens/", json={"name": "script"} | body, auth=auth)
    assert response.status_code == 201, response.json
    return response.json


def bearer(secret: str) -> dict[str, str]:
    """Return the headers that authenticate with a bearer token."""
    return {"Authorization": f"Bearer {secret}"}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def trackings_of(client: FlaskClient, admin: tuple[str, str], endpoint: str) -> list[dict]:
    """Return the tracking rows of one endpoint, newest first."""
    response = client.get("/api/trackings/", query_string={"endpoint": endpoint}, auth=admin)
    assert response.status_code == 200, response.json
    return response.json["results"]


@pytest.mark.parametrize("path", ["/api/tokens/", "/api/tokens"])
def test_create_token_returns_its_secret_and_expiry(client, alice, path):
    before = datetime.now(UTC)

    response = client.post(path, json={"name": "backup script"}, auth=alice)

    assert response.status_code == 201
    body = response.json
    assert set(body) == {"id", "name", "username", "token", "created_at", "expires_at"}
    assert body["name"] == "backup script"
    assert body["token"].startswith("ims_")
    assert len(body["token"]) > 40
    assert ISO_UTC.match(body["created_at"])
    assert ISO_UTC.match(body["expires_at"])
    expires = parse_time(body["expires_at"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)


def test_create_token_takes_an_expiry_in_days(client, alice):
    body = create_token(client, alice, expires_in_days=2)

    lifetime = parse_time(body["expires_at"]) - parse_time(body["created_at"])
    assert timedelta(days=2) - timedelta(seconds=5) < lifetime <= timedelta(days=2)


def test_every_token_is_different(client, alice):
    first = create_token(client, alice)["token"]

    second = create_token(client, alice)["token"]

    assert first != second


def test_token_is_stored_only_as_its_sha256(client, alice, app: Flask):
    body = create_token(client, alice)

    with app.app_context():
        token = db.session.get(Token, body["id"])
        stored = [str(getattr(token, column.key)) for column in Token.__table__.columns]
    assert hashlib.sha256(body["token"].encode()).hexdigest() in stored
    assert not any(body["token"] in value for value in stored)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"name": 3}, "name"),
        ({"name": "ok", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "ok", "expires_in_days": 366}, "expires_in_days"),
        ({"name": "ok", "expires_in_days": "soon"}, "expires_in_days"),
    ],
)
def test_create_token_rejects_a_bad_body(client, alice, body, field):
    response = client.post("/api/tokens/", json=body, auth=alice)

    assert response.status_code == 400
    assert field in response.json["errors"]["json"]


def test_create_token_rejects_malformed_json(client, alice):
    response = client.post("/api/tokens/", data="{", content_type="application/json", auth=alice)

    assert response.status_code == 400


def test_create_token_needs_credentials(client):
    response = client.post("/api/tokens/", json={"name": "x"})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_a_token_cannot_create_another_token(client, alice):
    secret = create_token(client, alice)["token"]

    response = client.post("/api/tokens/", json={"name": "child"}, headers=bearer(secret))

    assert response.status_code == 403
    assert "cannot create tokens" in response.json["detail"]


@pytest.mark.parametrize(
    "path", ["/api/", "/api/images/?page_size=5", "/api/tags/", "/api/tokens/"]
)
def test_bearer_token_authenticates_reads(client, alice, path):
    secret = create_token(client, alice)["token"]

    response = client.get(path, headers=bearer(secret))

    assert response.status_code == 200


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(client, alice, scheme):
    secret = create_token(client, alice)["token"]

    response = client.get("/api/", headers={"Authorization": f"{scheme} {secret}"})

    assert response.status_code == 200


def test_bearer_token_acts_as_its_owner(client, alice):
    secret = create_token(client, alice)["token"]

    response = client.post("/api/tags/", json={"name": "cat"}, headers=bearer(secret))

    assert response.status_code == 201
    assert response.json["created_by"] == "alice"


def test_bearer_token_uploads_an_image(client, alice):
    secret = create_token(client, alice)["token"]

    response = client.post(
        "/api/images/",
        data={"image": (io.BytesIO(image_bytes()), "x.png")},
        headers=bearer(secret),
        content_type="multipart/form-data",
    )

    assert response.status_code == 201
    assert response.json["created_by"] == "alice"


def test_admin_token_reads_trackings(client, admin):
    secret = create_token(client, admin)["token"]

    response = client.get("/api/trackings/", headers=bearer(secret))

    assert response.status_code == 200


def test_user_token_may_not_read_trackings(client, alice):
    secret = create_token(client, alice)["token"]

    response = client.get("/api/trackings/", headers=bearer(secret))

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("secret", ["nope", "ims_" + "a" * 43, ""])
def test_unknown_token_is_401_with_a_bearer_challenge(client, alice, secret):
    response = client.get("/api/images/", headers=bearer(secret))

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.json["detail"]


def test_unknown_token_names_the_bearer_scheme(client):
    response = client.get("/api/images/", headers=bearer("nope"))

    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_token_is_refused(client, alice, app: Flask):
    body = create_token(client, alice)
    with app.app_context():
        past = datetime.now(UTC) - timedelta(seconds=1)
        db.session.execute(update(Token).where(Token.id == body["id"]).values(expires_at=past))
        db.session.commit()

    response = client.get("/api/images/", headers=bearer(body["token"]))

    assert response.status_code == 401


def test_token_of_a_deactivated_user_is_refused(client, alice, runner):
    secret = create_token(client, alice)["token"]
    runner.invoke(args=["users", "deactivate", "alice"])

    response = client.get("/api/images/", headers=bearer(secret))

    assert response.status_code == 401


def test_list_tokens_never_shows_a_secret(client, alice):
    created = create_token(client, alice, name="ci")

    response = client.get("/api/tokens/", auth=alice)

    assert response.status_code == 200
    assert response.json["count"] == 1
    assert response.json["results"] == [
        {key: created[key] for key in ("id", "name", "username", "created_at", "expires_at")}
    ]
    assert created["token"] not in response.get_data(as_text=True)


def test_list_tokens_shows_only_the_callers_tokens_newest_first(client, alice, bob):
    first = create_token(client, alice, name="one")
    create_token(client, bob, name="bob's")
    second = create_token(client, alice, name="two")

    response = client.get("/api/tokens/", auth=alice)

    assert [token["id"] for token in response.json["results"]] == [second["id"], first["id"]]


def test_list_tokens_is_paginated(client, alice):
    for number in range(3):
        create_token(client, alice, name=f"t{number}")

    response = client.get("/api/tokens/?page=2&page_size=2", auth=alice)

    assert response.json["count"] == 3
    assert len(response.json["results"]) == 1
    assert response.json["previous"] == "http://localhost/api/tokens/?page_size=2&page=1"


def test_list_tokens_with_a_token(client, alice):
    secret = create_token(client, alice)["token"]

    response = client.get("/api/tokens/", headers=bearer(secret))

    assert response.status_code == 200
    assert response.json["count"] == 1


def test_list_tokens_needs_credentials(client):
    response = client.get("/api/tokens/")

    assert response.status_code == 401


@pytest.mark.parametrize("slash", ["/", ""])
def test_deleted_token_is_refused(client, alice, slash):
    body = create_token(client, alice)

    response = client.delete(f"/api/tokens/{body['id']}{slash}", auth=alice)

    assert response.status_code == 204
    assert response.data == b""
    assert client.get("/api/", headers=bearer(body["token"])).status_code == 401
    assert client.get("/api/tokens/", auth=alice).json["count"] == 0


def test_a_token_may_revoke_itself(client, alice):
    body = create_token(client, alice)

    response = client.delete(f"/api/tokens/{body['id']}/", headers=bearer(body["token"]))

    assert response.status_code == 204
    assert client.get("/api/", headers=bearer(body["token"])).status_code == 401


def test_deleting_someone_elses_token_is_404(client, alice, bob):
    body = create_token(client, alice)

    response = client.delete(f"/api/tokens/{body['id']}/", auth=bob)

    assert response.status_code == 404
    assert client.get("/api/", headers=bearer(body["token"])).status_code == 200


@pytest.mark.parametrize("token_id", [999, 2**31, 2**70])
def test_deleting_an_unknown_token_is_404(client, alice, token_id):
    response = client.delete(f"/api/tokens/{token_id}/", auth=alice)

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_tokens_route_refuses_other_methods(client, alice):
    response = client.put("/api/tokens/", json={}, auth=alice)

    assert response.status_code == 405


def test_deleting_a_user_row_removes_its_tokens(client, alice, app: Flask):
    create_token(client, alice)

    with app.app_context():
        db.session.execute(db.text("DELETE FROM trackings"))
        db.session.execute(db.text("DELETE FROM users WHERE username = 'alice'"))
        db.session.commit()
        remaining = db.session.scalars(select(Token)).all()

    assert remaining == []


# Tracking


def test_tracking_records_basic_auth(client, alice, admin):
    client.get("/api/tags/", auth=alice)

    row = trackings_of(client, admin, "/api/tags/")[0]

    assert row["auth_method"] == "basic"
    assert row["username"] == "alice"


def test_tracking_records_bearer_auth(client, alice, admin):
    secret = create_token(client, alice)["token"]

    client.get("/api/tags/", headers=bearer(secret))

    row = trackings_of(client, admin, "/api/tags/")[0]
    assert row["auth_method"] == "bearer"
    assert row["username"] == "alice"
    assert secret not in json.dumps(row)


def test_tracking_records_a_failed_bearer_attempt(client, admin):
    client.get("/api/tags/", headers=bearer("ims_wrong"))

    row = trackings_of(client, admin, "/api/tags/")[0]

    assert row["auth_method"] == "bearer"
    assert row["user"] is None
    assert row["status_code"] == 401
    assert "ims_wrong" not in json.dumps(row)


def test_tracking_records_the_scheme_of_a_malformed_header(client, admin):
    response = client.get("/api/tags/", headers={"Authorization": "BASIC not-base64!"})

    row = trackings_of(client, admin, "/api/tags/")[0]

    assert response.status_code == 401
    assert row["auth_method"] == "basic"
    assert row["username"] is None
    assert "not-base64" not in json.dumps(row)


def test_tracking_records_no_method_without_credentials(client, admin):
    client.get("/api/tags/")

    row = trackings_of(client, admin, "/api/tags/")[0]

    assert row["auth_method"] is None


def test_tracking_redacts_the_new_token(client, alice, admin):
    secret = create_token(client, alice, name="deploy")["token"]

    row = trackings_of(client, admin, "/api/tokens/")[0]

    assert row["status_code"] == 201
    assert row["response"]["token"] == "[redacted]"
    assert row["response"]["name"] == "deploy"
    assert row["data"] == {"name": "deploy"}
    assert secret not in json.dumps(row)


# Who the credentials are for: /api/me/


@pytest.mark.parametrize("path", ["/api/me/", "/api/me"])
def test_me_names_the_user_of_a_password(client, alice, path):
    response = client.get(path, auth=("ALICE", alice[1]))

    assert response.status_code == 200
    assert response.json == {
        "id": response.json["id"],
        "username": "alice",
        "is_admin": False,
        "auth_method": "basic",
    }


def test_me_names_the_owner_of_a_token_and_an_admin(client, alice, admin):
    secret = create_token(client, admin)["token"]

    response = client.get("/api/me/", headers=bearer(secret))

    assert response.status_code == 200
    assert (response.json["username"], response.json["is_admin"]) == ("root", True)
    assert response.json["auth_method"] == "bearer"
    assert response.json["id"] != client.get("/api/me/", auth=alice).json["id"]


def test_me_needs_credentials(client, alice):
    assert client.get("/api/me/").status_code == 401
    assert client.get("/api/me/", auth=(alice[0], "wrong")).status_code == 401
