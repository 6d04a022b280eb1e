"""Hardening of the tracking log: hostile bodies, headers and queries, secrets, killed workers.

Each test sends the attack as its input: a JSON body nested hundreds or thousands of levels
deep, megabytes of JSON from nobody, numbers PostgreSQL's JSON refuses, kilobytes of headers,
secrets under the names scripts give them, a token used as a user name, and workers killed with
SIGKILL in the middle of a burst of uploads and deletes.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from helpers import image_bytes
from live_server import LiveServer, serve

from imagestore.tracking import record as tracking
from imagestore.tracking import writer as tracking_writer

DEEP = 500
VERY_DEEP = 100_000


def nested(depth: int) -> str:
    """Return JSON text of an object nested `depth` levels deep."""
    return '{"a":' * depth + "1" + "}" * depth


def rows(client: FlaskClient, admin: tuple[str, str], **filters: Any) -> list[dict[str, Any]]:
    """Return the tracking rows the admin sees with these filters, newest first."""
    response = client.get("/api/trackings/", query_string={"page_size": 100, **filters}, auth=admin)
    assert response.status_code == 200, response.json
    return response.json["results"]


def access_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Return the JSON request log lines written to stderr so far."""
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    return [line for line in lines if line["logger"] == "imagestore.access"]


# Deep and huge JSON


@pytest.mark.parametrize(
    ("method", "path", "who"),
    [
        ("GET", "/api/", None),
        ("GET", "/api/", "alice"),
        ("POST", "/api/tags/", None),
        ("POST", "/api/tags/", "alice"),
        ("PATCH", "/api/images/1/", "alice"),
        ("PUT", "/api/images/1/", "alice"),
        ("POST", "/api/images/bulk-tag/", "alice"),
        ("DELETE", "/api/tokens/1/", "alice"),
        ("GET", "/api/no-such-route/", None),
    ],
)
def test_a_body_nested_500_deep_is_answered_tracked_and_logged(
    client, alice, admin, upload, capsys, method, path, who
):
    """A JSON body 500 levels deep, on every kind of route, with and without credentials."""
    upload(alice)
    capsys.readouterr()

    response = client.open(
        path,
        method=method,
        data=nested(DEEP),
        content_type="application/json",
        auth=alice if who else None,
    )

    assert response.status_code < 500, response.json
    [row] = rows(client, admin, endpoint=path)
    assert (row["method"], row["status_code"]) == (method, response.status_code)
    assert [line["status"] for line in access_lines(capsys)][:1] == [response.status_code]


def test_a_deep_body_is_stored_cut_at_a_fixed_depth(client, alice, admin):
    """The stored copy of a deep body keeps a bounded number of levels."""
    client.post("/api/tags/", data=nested(DEEP), content_type="application/json", auth=alice)

    [row] = rows(client, admin, endpoint="/api/tags/")
    data, depth = row["data"], 0
    while isinstance(data, dict):
        data, depth = data["a"], depth + 1
    assert (depth, data) == (tracking.MAX_DEPTH, tracking.TOO_DEEP)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/tags/"), ("PATCH", "/api/images/1/"), ("PUT", "/api/images/1/")],
)
def test_a_body_nested_beyond_the_parser_is_a_400(client, alice, admin, upload, method, path):
    """A JSON body 100,000 levels deep, past what Python's parser can follow."""
    upload(alice)

    response = client.open(
        path, method=method, data=nested(VERY_DEEP), content_type="application/json", auth=alice
    )

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert "nested too deeply" in response.json["detail"]
    [row] = rows(client, admin, endpoint=path)
    assert row["status_code"] == 400


def test_a_delete_with_a_deep_body_removes_the_image_and_leaves_its_row_and_log_line(
    client, alice, admin, upload, capsys
):
    """DELETE of an image with a 500-deep JSON body: deleted, tracked and logged."""
    image_id = upload(alice).json["id"]
    capsys.readouterr()

    response = client.delete(
        f"/api/images/{image_id}/", data=nested(DEEP), content_type="application/json", auth=alice
    )

    assert response.status_code == 204
    assert client.get(f"/api/images/{image_id}/", auth=alice).status_code == 404
    [row] = rows(client, admin, endpoint=f"/api/images/{image_id}/", method="DELETE")
    assert row["status_code"] == 204
    assert next((line["method"], line["status"]) for line in access_lines(capsys)) == (
        "DELETE",
        204,
    )


def test_a_large_body_without_credentials_is_not_read_for_the_log(client, admin):
    """Megabytes of JSON from a client that gave no credentials."""
    body = json.dumps({"items": ["x" * 1000] * 2000})

    response = client.post("/api/tags/", data=body, content_type="application/json")

    assert response.status_code == 401
    [row] = rows(client, admin, endpoint="/api/tags/")
    assert (row["data"], row["truncated"]) == (None, False)


def test_a_large_body_the_view_did_not_read_is_noted_not_parsed(client, alice, admin, upload):
    """An authenticated DELETE carrying a JSON body larger than what the log parses."""
    image_id = upload(alice).json["id"]
    body = json.dumps({"items": ["x" * 1000] * 200})

    client.delete(
        f"/api/images/{image_id}/", data=body, content_type="application/json", auth=alice
    )

    [row] = rows(client, admin, endpoint=f"/api/images/{image_id}/", method="DELETE")
    assert row["data"] == f"[a body of {len(body)} bytes, not stored]"
    assert row["truncated"] is True


def test_numbers_that_postgresql_json_refuses_still_leave_a_row(client, alice, admin):
    """NaN and Infinity in a JSON body: PostgreSQL's JSONB has neither."""
    body = '{"name": "cats", "ratio": NaN, "limits": [Infinity, -Infinity]}'

    response = client.post("/api/tags/", data=body, content_type="application/json", auth=alice)

    assert response.status_code == 400  # ratio and limits are no fields of a tag
    [row] = rows(client, admin, endpoint="/api/tags/")
    assert row["data"] == {"name": "cats", "ratio": "nan", "limits": ["inf", "-inf"]}


def test_kilobytes_of_query_headers_and_address_leave_a_capped_row(make_app, alice, admin):
    """A 10,000-parameter query, a 20 KB User-Agent, a 5 KB forwarded address, a long method."""
    app = make_app(PROXY_HOPS=1)
    client = app.test_client()
    query = "&".join(f"p{n}={'v' * 20}" for n in range(10_000))

    response = client.get(
        f"/api/images/?{query}",
        headers={"User-Agent": "A" * 20_000, "X-Forwarded-For": "1" * 5_000},
        auth=alice,
    )
    client.open("/api/images/", method="PROPFINDANDMORE" * 4, auth=alice)

    assert response.status_code == 200
    [other, row] = rows(client, admin)
    assert isinstance(row["query"], str)
    assert len(row["query"].encode()) <= app.config["TRACKING_BODY_LIMIT"]
    assert len(row["user_agent"]) == tracking.TEXT_LIMIT
    assert len(row["remote_addr"]) == tracking.ADDRESS_LIMIT
    assert row["truncated"] is True
    assert (len(other["method"]), other["status_code"]) == (tracking.METHOD_LIMIT, 405)


def test_when_the_row_cannot_be_described_its_bare_facts_are_stored(
    client, alice, admin, monkeypatch, capsys
):
    """A failure while describing the request (a bug): the row keeps who, what, when, status."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("cannot describe")

    monkeypatch.setattr(tracking, "request_data", broken)

    response = client.post("/api/tags/", json={"name": "cats"}, auth=alice)

    assert response.status_code == 201
    [row] = rows(client, admin, endpoint="/api/tags/")
    assert (row["username"], row["method"], row["status_code"], row["data"]) == (
        "alice",
        "POST",
        201,
        None,
    )
    assert next(line["status"] for line in access_lines(capsys)) == 201


def test_when_the_row_cannot_be_stored_the_request_is_still_logged(
    client, alice, upload, trackings_table_missing, capsys
):
    """The tracking table is gone: the delete still happens and its log line is written."""
    image_id = upload(alice).json["id"]
    capsys.readouterr()

    response = client.delete(f"/api/images/{image_id}/", auth=alice)

    assert response.status_code == 204
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert any(line["message"].startswith("tracking row lost") for line in lines)
    assert any(line.get("path") == f"/api/images/{image_id}/" for line in lines)


# Secrets


SECRET_KEYS = [
    "pwd",
    "pass",
    "passwd",
    "passphrase",
    "credentials",
    "bearer",
    "auth",
    "otp",
    "signature",
    "X-Amz-Signature",
    "jwt",
    "session",
    "code",
    "authCode",
    "otp_code",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_scripts_use_are_never_stored(client, alice, admin, key):
    """A secret under each name scripts use, in the query, a JSON body and a form body."""
    client.get(f"/api/images/?{key}=QUERY-SECRET", auth=alice)
    client.post("/api/tags/", json={"name": "cats", key: "JSON-SECRET"}, auth=alice)
    client.post("/api/tags/", data={"name": "dogs", key: "FORM-SECRET"}, auth=alice)

    stored = json.dumps(rows(client, admin))
    assert "SECRET" not in stored
    assert stored.count('"[redacted]"') >= 3


@pytest.mark.parametrize(
    "key", [*sorted(tracking.SECRET_MARKERS), *sorted(tracking.SECRET_WORDS), "X-Amz-Signature"]
)
def test_secret_keys_in_a_response_are_never_stored(app, client, alice, admin, key):
    """A route answers a secret under each name: the quick search of responses must find it."""
    app.add_url_rule("/api/answers-secret/", "answers_secret", lambda: {key: "RESPONSE-SECRET"})

    client.get("/api/answers-secret/", auth=alice)

    [row] = rows(client, admin, endpoint="/api/answers-secret/")
    assert row["response"] == {key: "[redacted]"}


@pytest.mark.parametrize("key", ["author", "barcode", "compass", "hotpot", "passenger"])
def test_words_that_merely_contain_a_secret_word_are_kept(client, alice, admin, key):
    """Keys that contain `auth`, `code`, `pass` or `otp` inside another word are not secrets."""
    client.post("/api/tags/", json={"name": "cats", key: "plain value"}, auth=alice)

    [row] = rows(client, admin, endpoint="/api/tags/")
    assert row["data"][key] == "plain value"


def test_query_secrets_are_redacted_in_the_stored_page_links(client, alice, admin, upload):
    """A secret in the query of a list: the `next` and `previous` links repeat it."""
    for color in ("red", "green", "blue"):
        upload(alice, content=image_bytes(color=color))

    response = client.get(
        "/api/images/?page=2&page_size=1&password=LINK-SECRET&api_key=KEY-SECRET", auth=alice
    )

    assert "LINK-SECRET" in response.json["next"]
    [row] = rows(client, admin, endpoint="/api/images/", method="GET")
    assert "SECRET" not in json.dumps(row)
    for link in (row["response"]["next"], row["response"]["previous"]):
        assert "password=%5Bredacted%5D" in link
        assert "api_key=%5Bredacted%5D" in link
    assert "page=3" in row["response"]["next"]


def test_a_token_given_as_a_basic_user_name_is_never_stored(client, alice, admin):
    """`curl -u ims_...:` sends a token where the user name goes."""
    token = client.post("/api/tokens/", json={"name": "ci"}, auth=alice).json["token"]
    header = "Basic " + base64.b64encode(f"{token}:".encode()).decode()

    response = client.get("/api/tags/", headers={"Authorization": header})

    assert response.status_code == 401
    [row] = rows(client, admin, endpoint="/api/tags/")
    assert row["username"] == "[redacted]"
    assert token not in json.dumps(rows(client, admin))


@pytest.mark.parametrize("given", ["alice", "ALICE"])
def test_the_name_of_a_real_user_is_kept_on_a_failed_login(client, alice, admin, given):
    """A wrong password for alice, her name typed in any case: the log says alice was the target."""
    client.get("/api/tags/", auth=(given, "wrong"))

    [row] = rows(client, admin, endpoint="/api/tags/")
    assert (row["user"], row["username"]) == (None, "alice")


def test_a_long_query_is_capped_like_a_body(small_limit_app, alice, admin):
    """A query string longer than the body limit is cut to it and flagged."""
    client = small_limit_app.test_client()

    client.get("/api/images/", query_string={"note": "n" * 1000}, auth=alice)

    [row] = rows(client, admin, endpoint="/api/images/")
    assert len(row["query"].encode()) <= 200
    assert row["truncated"] is True


# Killed workers


def call(server: LiveServer, method: str, path: str, request_id: str, body: Any = None) -> Any:
    """Send one request with a request id; return (status, JSON body), or None when cut off.

    `body` is a (bytes, content type) pair.
    """
    token = base64.b64encode(":".join(server.user).encode()).decode()
    headers = {"Authorization": f"Basic {token}", "X-Request-ID": request_id}
    data = None
    if body is not None:
        data, headers["Content-Type"] = body
    request = urllib.request.Request(
        f"{server.url}{path}", method=method, headers=headers, data=data
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, None
    except (OSError, http.client.HTTPException):
        return None  # the worker died before its answer was whole


def upload_body(number: int) -> tuple[bytes, str]:
    """Return a multipart body holding one small distinct image, and its content type."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{number}.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    image = image_bytes(size=(8 + number % 50, 6), color=f"#{number % 256:02x}0000")
    tail = f"\r\n--{boundary}--\r\n"
    return head.encode() + image + tail.encode(), f"multipart/form-data; boundary={boundary}"


def stored_request_ids(server: LiveServer) -> set[str]:
    """Return the request id of every tracking row, read page by page as the admin."""
    token = base64.b64encode(":".join(server.admin).encode()).decode()
    stored: set[str] = set()
    url = f"{server.url}/api/trackings/?page_size=100&cursor="
    while url:
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.load(response)
        stored |= {row["request_id"] for row in page["results"]}
        url = page["next"]
    return stored


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """gunicorn with the default tracking writer: rows written behind, kept in a spool."""
    with serve(tmp_path_factory.mktemp("killed"), {"TRACKING_WRITE_BEHIND": True}) as server:
        yield server


@pytest.mark.slow
def test_every_answered_request_has_its_row_when_workers_are_killed(live):
    """SIGKILL of workers in the middle of a burst of uploads, lists and deletes."""
    answered: list[str] = []

    def send(method: str, path: str, request_id: str, body: Any = None) -> Any:
        result = call(live, method, path, request_id, body)
        if result is not None:
            answered.append(request_id)  # list.append is atomic: no lock needed
        return result

    def client(number: int) -> None:
        for step in range(40):
            request_id = f"burst-{number}-{step}-{uuid.uuid4().hex[:8]}"
            result = send("POST", "/api/images/", request_id, upload_body(number * 100 + step))
            if result is not None and result[0] == 201 and step % 2:
                send("DELETE", f"/api/images/{result[1]['id']}/", f"{request_id}-delete")
            send("GET", "/api/images/", f"{request_id}-list")

    threads = [threading.Thread(target=client, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    killed = 0
    while any(thread.is_alive() for thread in threads) and killed < 8:
        time.sleep(0.4)
        if pids := live.workers():
            os.kill(random.choice(pids), signal.SIGKILL)
            killed += 1
    for thread in threads:
        thread.join()

    time.sleep(2 * tracking_writer.LINGER_SECONDS)  # the live workers' rows are written by now
    stored = stored_request_ids(live)  # which first writes what the killed workers left
    assert killed >= 4
    assert len(answered) > 200
    assert [request_id for request_id in answered if request_id not in stored] == []
