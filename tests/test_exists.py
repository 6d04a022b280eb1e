"""POST /api/images/exists/: which of up to 1,000 SHA-256 digests some image's bytes have."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from helpers import image_bytes

from imagestore.db import db
from imagestore.errors import PROBLEM_JSON
from imagestore.models import Tracking

Auth = tuple[str, str]
URL = "/api/images/exists/"


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def stored(upload: Callable[..., Any], auth: Auth, color: str) -> tuple[str, int]:
    """Upload a small image of this color; return its digest and id."""
    content = image_bytes(color=color)
    response = upload(auth, content=content)
    assert response.status_code == 201, response.json
    return digest(content), response.json["id"]


def test_exists_names_the_stored_digests_in_the_order_given(
    client: FlaskClient, alice: Auth, upload: Callable[..., Any]
) -> None:
    red, red_id = stored(upload, alice, "red")
    blue, blue_id = stored(upload, alice, "blue")
    missing = digest(b"never uploaded")

    response = client.post(URL, json={"sha256": [blue, missing, red]}, auth=alice)

    assert response.status_code == 200, response.json
    assert response.json == {"exists": [blue, red], "images": {blue: blue_id, red: red_id}}


def test_exists_gives_the_oldest_image_of_shared_bytes(
    client: FlaskClient, alice: Auth, upload: Callable[..., Any]
) -> None:
    red, first = stored(upload, alice, "red")
    stored(upload, alice, "red")

    response = client.post(URL, json={"sha256": [red]}, auth=alice)

    assert response.json == {"exists": [red], "images": {red: first}}


def test_exists_reads_any_case_and_answers_each_digest_once(
    client: FlaskClient, alice: Auth, upload: Callable[..., Any]
) -> None:
    red, _ = stored(upload, alice, "red")

    response = client.post(URL, json={"sha256": [red.upper(), red]}, auth=alice)

    assert response.json["exists"] == [red]


def test_exists_covers_every_uploader(
    client: FlaskClient, alice: Auth, bob: Auth, upload: Callable[..., Any]
) -> None:
    red, red_id = stored(upload, alice, "red")

    response = client.post(URL, json={"sha256": [red]}, auth=bob)

    assert response.json == {"exists": [red], "images": {red: red_id}}


def test_exists_takes_a_form_body(
    client: FlaskClient, alice: Auth, upload: Callable[..., Any]
) -> None:
    red, _ = stored(upload, alice, "red")
    blue, _ = stored(upload, alice, "blue")

    response = client.post(URL, data={"sha256": [red, blue]}, auth=alice)

    assert response.status_code == 200, response.json
    assert response.json["exists"] == [red, blue]


def test_exists_of_no_digest_is_an_empty_answer(client: FlaskClient, alice: Auth) -> None:
    response = client.post(URL, json={"sha256": []}, auth=alice)

    assert response.status_code == 200
    assert response.json == {"exists": [], "images": {}}


def test_exists_answers_without_the_trailing_slash(client: FlaskClient, alice: Auth) -> None:
    response = client.post(URL.rstrip("/"), json={"sha256": []}, auth=alice)

    assert response.status_code == 200


def test_exists_takes_a_thousand_digests(
    client: FlaskClient, alice: Auth, upload: Callable[..., Any]
) -> None:
    red, _ = stored(upload, alice, "red")
    others = [digest(str(number).encode()) for number in range(999)]

    response = client.post(URL, json={"sha256": [*others, red]}, auth=alice)

    assert response.status_code == 200, response.json
    assert response.json["exists"] == [red]


def test_exists_refuses_more_than_a_thousand_digests(client: FlaskClient, alice: Auth) -> None:
    digests = [digest(str(number).encode()) for number in range(1001)]

    response = client.post(URL, json={"sha256": digests}, auth=alice)

    assert response.status_code == 400
    assert response.content_type == PROBLEM_JSON
    assert response.json["errors"] == {"json": {"sha256": ["Give at most 1000 checksums."]}}
    assert response.json["detail"]


def test_exists_refuses_a_malformed_digest_naming_it(client: FlaskClient, alice: Auth) -> None:
    good = digest(b"x")

    response = client.post(URL, json={"sha256": [good, "abc", good[:-1] + "g"]}, auth=alice)

    assert response.status_code == 400
    assert response.content_type == PROBLEM_JSON
    assert response.json["errors"] == {
        "json": {
            "sha256": {
                "1": ["Must be 64 hexadecimal digits."],
                "2": ["Must be 64 hexadecimal digits."],
            }
        }
    }


def test_exists_refuses_what_is_not_a_string_naming_it(client: FlaskClient, alice: Auth) -> None:
    good = digest(b"x")

    response = client.post(URL, json={"sha256": [good, 5, None, good.upper()]}, auth=alice)

    assert response.status_code == 400
    assert response.json["errors"] == {
        "json": {"sha256": {"1": ["Not a valid string."], "2": ["Field may not be null."]}}
    }


def test_exists_refuses_digests_not_in_a_list(client: FlaskClient, alice: Auth) -> None:
    response = client.post(URL, json={"sha256": digest(b"x")}, auth=alice)

    assert response.status_code == 400
    assert response.json["errors"] == {"json": {"sha256": ["Not a valid list."]}}


def test_exists_refuses_a_body_without_digests(client: FlaskClient, alice: Auth) -> None:
    response = client.post(URL, json={"sha": [digest(b"x")]}, auth=alice)

    assert response.status_code == 400
    assert set(response.json["errors"]["json"]) == {"sha", "sha256"}


def test_exists_needs_credentials(client: FlaskClient) -> None:
    response = client.post(URL, json={"sha256": []})

    assert response.status_code == 401


def test_exists_is_tracked(app: Flask, client: FlaskClient, alice: Auth) -> None:
    client.post(URL, json={"sha256": [digest(b"x")]}, auth=alice)

    with app.app_context():
        rows = db.session.scalars(db.select(Tracking).where(Tracking.endpoint == URL)).all()
    assert [(row.method, row.status_code, row.username) for row in rows] == [("POST", 200, "alice")]


def test_exists_is_in_the_openapi_document(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").json

    operation = document["paths"]["/api/images/exists/"]["post"]

    assert "200" in operation["responses"]
    assert "application/json" in operation["requestBody"]["content"]
