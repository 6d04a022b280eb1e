"""Tracking: one redacted, capped row per /api/ request, and the admin-only /api/trackings/ log."""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Any

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient
from helpers import ISO_UTC, PASSWORD, image_bytes
from sqlalchemy import select

from imagestore.db import db
from imagestore.models import User

FIELDS = {
    "id",
    "user",
    "username",
    "auth_method",
    "method",
    "endpoint",
    "query",
    "data",
    "status_code",
    "duration_ms",
    "remote_addr",
    "user_agent",
    "headers",
    "response",
    "truncated",
    "created_at",
    "request_id",
}


def list_trackings(client: FlaskClient, admin: tuple[str, str], **filters: Any) -> dict[str, Any]:
    """Return the trackings list the admin sees with these query parameters."""
    response = client.get("/api/trackings/", query_string=filters, auth=admin)
    assert response.status_code == 200, response.json
    return response.json


def tracking_count(client: FlaskClient, admin: tuple[str, str]) -> int:
    """Return how many tracking rows exist."""
    return list_trackings(client, admin)["count"]


def only_tracking(
    client: FlaskClient, admin: tuple[str, str], endpoint: str, **filters: Any
) -> dict[str, Any]:
    """Return the one tracking row of an endpoint, read through the detail route."""
    page = list_trackings(client, admin, endpoint=endpoint, **filters)
    assert page["count"] == 1, page
    response = client.get(f"/api/trackings/{page['results'][0]['id']}/", auth=admin)
    assert response.status_code == 200, response.json
    return response.json


def user_id(app: Flask, username: str) -> int:
    """Return a user's id, which no API shows."""
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.username == username))


def basic_header(username: str, password: str) -> str:
    """Return the value of an Authorization header for HTTP Basic."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# Which requests are recorded


def test_api_root_request_is_tracked(client, alice, admin):
    client.get("/api/", auth=alice)

    row = only_tracking(client, admin, "/api/")
    assert (row["method"], row["status_code"]) == ("GET", 200)


def test_api_root_without_trailing_slash_is_tracked(client, alice, admin):
    client.get("/api", auth=alice)

    assert list_trackings(client, admin, endpoint="/api")["count"] == 1


def test_each_api_request_adds_one_row(client, alice, admin, make_tag):
    make_tag("cats", alice)

    client.get("/api/tags/", auth=alice)
    client.get("/api/tags/cats/", auth=alice)
    client.patch("/api/tags/cats/", json={"name": "kittens"}, auth=alice)
    client.delete("/api/tags/kittens/", auth=alice)

    page = list_trackings(client, admin)
    assert page["count"] == 5
    assert [(row["method"], row["endpoint"]) for row in reversed(page["results"])] == [
        ("POST", "/api/tags/"),
        ("GET", "/api/tags/"),
        ("GET", "/api/tags/cats/"),
        ("PATCH", "/api/tags/cats/"),
        ("DELETE", "/api/tags/kittens/"),
    ]


def test_unknown_route_under_api_is_tracked_as_404(client, alice, admin):
    response = client.get("/api/nothing-here/", auth=alice)

    assert response.status_code == 404
    assert only_tracking(client, admin, "/api/nothing-here/")["status_code"] == 404


def test_bad_input_is_tracked_as_400(client, alice, admin):
    response = client.post("/api/tags/", json={"name": ""}, auth=alice)

    assert response.status_code == 400
    row = only_tracking(client, admin, "/api/tags/")
    assert row["status_code"] == 400
    assert row["data"] == {"name": ""}
    assert row["response"] == response.json


def test_malformed_json_is_tracked_as_400(client, alice, admin):
    response = client.post(
        "/api/tags/", data="{not json", content_type="application/json", auth=alice
    )

    assert response.status_code == 400
    assert only_tracking(client, admin, "/api/tags/")["status_code"] == 400


def test_wrong_method_is_tracked_as_405(client, alice, admin):
    response = client.delete("/api/tags/", auth=alice)

    assert response.status_code == 405
    row = only_tracking(client, admin, "/api/tags/")
    assert (row["method"], row["status_code"]) == ("DELETE", 405)


def test_failed_login_with_a_name_no_user_has_is_tracked_with_the_name_redacted(client, admin):
    response = client.get("/api/tags/", auth=("mallory", "guess"))

    assert response.status_code == 401
    row = only_tracking(client, admin, "/api/tags/")
    assert (row["user"], row["username"], row["status_code"]) == (None, "[redacted]", 401)


def test_wrong_password_of_a_real_user_is_tracked_without_the_user(client, alice, admin):
    response = client.get("/api/tags/", auth=("alice", "not the password"))

    assert response.status_code == 401
    row = only_tracking(client, admin, "/api/tags/")
    assert (row["user"], row["username"], row["status_code"]) == (None, "alice", 401)


def test_anonymous_request_is_tracked_without_user(client, admin):
    client.get("/api/tags/")

    row = only_tracking(client, admin, "/api/tags/")
    assert (row["user"], row["username"], row["status_code"]) == (None, None, 401)


def test_trackings_requests_are_not_tracked(client, alice, admin):
    client.get("/api/trackings/", auth=admin)
    client.get("/api/trackings/", auth=alice)
    client.get("/api/trackings/1/", auth=admin)
    client.get("/api/trackings")

    assert tracking_count(client, admin) == 0


def test_paths_outside_the_api_are_not_tracked(client, alice, admin):
    client.get("/", auth=alice)
    client.get("/apiary/", auth=alice)
    client.get("/static/x.css", auth=alice)

    assert tracking_count(client, admin) == 0


# What a row holds


def test_row_has_exactly_the_documented_fields(client, alice, admin):
    client.get("/api/", auth=alice)

    assert set(only_tracking(client, admin, "/api/")) == FIELDS


def test_row_records_the_authenticated_user(app, client, alice, admin):
    client.get("/api/tags/", auth=alice)

    row = only_tracking(client, admin, "/api/tags/")
    assert (row["user"], row["username"]) == (user_id(app, "alice"), "alice")


def test_row_records_method_endpoint_and_status(client, alice, admin):
    client.post("/api/tags/", json={"name": "cats"}, auth=alice)

    row = only_tracking(client, admin, "/api/tags/")
    assert (row["method"], row["endpoint"], row["status_code"]) == ("POST", "/api/tags/", 201)


def test_row_records_query_parameters(client, alice, admin):
    client.get("/api/images/?tags=a,b&page_size=5", auth=alice)

    assert only_tracking(client, admin, "/api/images/")["query"] == {
        "tags": "a,b",
        "page_size": "5",
    }


def test_row_records_a_json_body(client, alice, admin):
    client.post("/api/tags/", json={"name": "cats"}, auth=alice)

    assert only_tracking(client, admin, "/api/tags/")["data"] == {"name": "cats"}


def test_row_records_form_fields_and_a_file_summary(client, alice, admin, make_tag, upload):
    make_tag("a", alice)
    make_tag("b", alice)
    content = image_bytes()

    response = upload(alice, tags=["a", "b"], content=content, filename="photo.png")

    assert response.status_code == 201, response.json
    row = only_tracking(client, admin, "/api/images/")
    assert row["data"] == {
        "tags": ["a", "b"],
        "image": {"filename": "photo.png", "content_type": "image/png", "size": len(content)},
    }


def test_row_records_a_refused_file_by_summary_not_content(client, alice, admin):
    content = b"TOP-SECRET-FILE-CONTENT " * 10
    data = {"image": (io.BytesIO(content), "notes.txt", "text/plain")}

    response = client.post(
        "/api/images/", data=data, auth=alice, content_type="multipart/form-data"
    )

    assert response.status_code == 400
    row = only_tracking(client, admin, "/api/images/")
    assert row["data"] == {
        "image": {"filename": "notes.txt", "content_type": "text/plain", "size": len(content)}
    }
    assert "TOP-SECRET-FILE-CONTENT" not in json.dumps(row)


def test_row_records_the_response_body(client, alice, admin):
    response = client.post("/api/tags/", json={"name": "cats"}, auth=alice)

    row = only_tracking(client, admin, "/api/tags/")
    assert row["response"] == response.json
    assert row["truncated"] is False


def test_row_records_response_headers(client, alice, admin):
    response = client.post("/api/tags/", json={"name": "cats"}, auth=alice)

    headers = only_tracking(client, admin, "/api/tags/")["headers"]
    assert headers["Content-Type"] == response.headers["Content-Type"]
    assert headers["Location"] == response.headers["Location"]


def test_row_records_a_non_negative_duration(client, alice, admin):
    client.get("/api/", auth=alice)

    duration = only_tracking(client, admin, "/api/")["duration_ms"]
    assert isinstance(duration, int | float)
    assert not isinstance(duration, bool)
    assert duration >= 0


def test_row_records_client_address_and_user_agent(client, alice, admin):
    client.get(
        "/api/",
        auth=alice,
        headers={"User-Agent": "imagestore-tests/1.0"},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )

    row = only_tracking(client, admin, "/api/")
    assert (row["remote_addr"], row["user_agent"]) == ("203.0.113.7", "imagestore-tests/1.0")


def test_row_created_at_is_iso_utc_with_z(client, alice, admin):
    client.get("/api/", auth=alice)

    assert ISO_UTC.match(only_tracking(client, admin, "/api/")["created_at"])


def test_row_of_a_file_download_has_no_response_body(client, alice, admin, upload):
    image_id = upload(alice).json["id"]

    response = client.get(f"/api/images/{image_id}/file", auth=alice)

    assert response.status_code == 200
    row = only_tracking(client, admin, f"/api/images/{image_id}/file")
    assert row["response"] is None


# Redaction


def test_authorization_header_is_never_stored(client, alice, admin):
    header = basic_header(*alice)

    client.get("/api/tags/", headers={"Authorization": header})

    stored = json.dumps(only_tracking(client, admin, "/api/tags/"))
    assert header.split()[1] not in stored
    assert PASSWORD not in stored


def test_password_of_a_failed_login_is_never_stored(client, admin):
    client.get("/api/tags/", auth=("mallory", "hunter2-very-secret"))

    stored = json.dumps(only_tracking(client, admin, "/api/tags/"))
    assert "hunter2-very-secret" not in stored
    assert base64.b64encode(b"mallory:hunter2-very-secret").decode() not in stored


def test_request_cookie_values_are_never_stored(client, alice, admin):
    client.set_cookie("sessionid", "COOKIE-VALUE-1234")

    client.get("/api/tags/", auth=alice)

    assert "COOKIE-VALUE-1234" not in json.dumps(only_tracking(client, admin, "/api/tags/"))


def test_set_cookie_response_header_is_never_stored(app, client, alice, admin):
    def set_a_cookie() -> Response:
        response = Response(json.dumps({"ok": True}), content_type="application/json")
        response.set_cookie("session", "SET-COOKIE-VALUE-5678")
        return response

    app.add_url_rule("/api/cookie-check/", "cookie_check", set_a_cookie)

    response = client.get("/api/cookie-check/", auth=alice)

    assert "SET-COOKIE-VALUE-5678" in response.headers["Set-Cookie"]
    row = only_tracking(client, admin, "/api/cookie-check/")
    assert "set-cookie" not in {name.lower() for name in row["headers"]}
    assert "SET-COOKIE-VALUE-5678" not in json.dumps(row)


def test_secret_looking_response_headers_are_never_stored(app, client, alice, admin):
    app.add_url_rule(
        "/api/header-check/",
        "header_check",
        lambda: ({"ok": True}, 200, {"X-Api-Key": "HEADER-SECRET-1", "X-Auth-Token": "HS-2"}),
    )

    client.get("/api/header-check/", auth=alice)

    stored = json.dumps(only_tracking(client, admin, "/api/header-check/"))
    assert "HEADER-SECRET-1" not in stored
    assert "HS-2" not in stored


@pytest.mark.parametrize(
    "key", ["password", "new_Password", "clientSecret", "refresh_TOKEN", "Authorization", "cookie"]
)
def test_secret_keys_in_a_json_body_are_never_stored(client, alice, admin, key):
    body = {"name": "cats", key: "JSON-SECRET-VALUE"}

    client.post("/api/tags/", json=body, auth=alice)

    row = only_tracking(client, admin, "/api/tags/")
    assert "JSON-SECRET-VALUE" not in json.dumps(row)
    assert row["data"]["name"] == "cats"


def test_secret_keys_nested_in_a_json_body_are_never_stored(client, alice, admin):
    body = {
        "name": "cats",
        "meta": {"API_KEY": "NESTED-SECRET-1", "owner": "alice"},
        "items": [{"access_token": "NESTED-SECRET-2"}, {"deep": {"Cookie": "NESTED-SECRET-3"}}],
    }

    client.post("/api/tags/", json=body, auth=alice)

    row = only_tracking(client, admin, "/api/tags/")
    stored = json.dumps(row)
    assert not any(f"NESTED-SECRET-{n}" in stored for n in (1, 2, 3))
    assert row["data"]["meta"]["owner"] == "alice"


@pytest.mark.parametrize("key", ["api_key", "API_KEY", "access_token", "password", "Secret"])
def test_secret_keys_in_the_query_string_are_never_stored(client, alice, admin, key):
    client.get(f"/api/images/?tags=a&{key}=QUERY-SECRET-VALUE", auth=alice)

    row = only_tracking(client, admin, "/api/images/")
    assert "QUERY-SECRET-VALUE" not in json.dumps(row)
    assert row["query"]["tags"] == "a"


def test_secret_form_fields_are_never_stored(client, alice, admin):
    data = {"image": (io.BytesIO(image_bytes()), "photo.png"), "password": "FORM-SECRET-VALUE"}

    client.post("/api/images/", data=data, auth=alice, content_type="multipart/form-data")

    assert "FORM-SECRET-VALUE" not in json.dumps(only_tracking(client, admin, "/api/images/"))


def test_secret_keys_in_a_response_body_are_never_stored(app, client, alice, admin):
    app.add_url_rule(
        "/api/secret-body/",
        "secret_body",
        lambda: {"name": "ok", "access_token": "BODY-SECRET-1", "nested": {"apiKey": "BS-2"}},
    )

    client.get("/api/secret-body/", auth=alice)

    row = only_tracking(client, admin, "/api/secret-body/")
    stored = json.dumps(row)
    assert "BODY-SECRET-1" not in stored
    assert "BS-2" not in stored
    assert row["response"]["name"] == "ok"


def test_a_body_answered_again_is_redacted_again(app, client, alice, admin):
    app.add_url_rule(
        "/api/same-body/", "same_body", lambda: {"name": "ok", "session_token": "SAME-SECRET"}
    )

    client.get("/api/same-body/", auth=alice)
    client.get("/api/same-body/", auth=alice)

    rows = list_trackings(client, admin, endpoint="/api/same-body/")["results"]
    assert [row["response"] for row in rows] == [{"name": "ok", "session_token": "[redacted]"}] * 2


def test_the_root_links_are_stored_with_the_tokens_link_redacted(client, alice, admin):
    response = client.get("/api/", auth=alice)

    row = only_tracking(client, admin, "/api/")
    assert row["response"] == response.json | {"tokens": "[redacted]"}


# Cap on stored bodies


def test_response_body_over_the_limit_is_cut_and_flagged(small_limit_app, admin):
    client = small_limit_app.test_client()
    for name in ("alpha", "bravo", "charlie", "delta", "echo"):
        client.post("/api/tags/", json={"name": name}, auth=admin)

    response = client.get("/api/tags/", auth=admin)

    assert len(response.data) > 200
    row = only_tracking(client, admin, "/api/tags/", method="GET")
    assert row["truncated"] is True
    assert isinstance(row["response"], str)
    assert 0 < len(row["response"].encode()) <= 200
    assert '"count"' in row["response"]


def test_small_response_body_under_the_limit_is_stored_whole(small_limit_app, alice, admin):
    client = small_limit_app.test_client()

    response = client.get("/api/tags/nothing/", auth=alice)

    assert response.status_code == 404
    assert len(response.data) < 200
    row = only_tracking(client, admin, "/api/tags/nothing/")
    assert row["response"] == response.json
    assert row["truncated"] is False


def test_default_limit_keeps_a_response_of_a_few_kilobytes_whole(client, alice, admin, make_tag):
    for number in range(30):
        make_tag(f"tag number {number:02}", alice)

    response = client.get("/api/tags/?page_size=30", auth=alice)

    assert 2000 < len(response.data) < 4096
    row = only_tracking(client, admin, "/api/tags/", method="GET")
    assert row["response"] == response.json
    assert row["truncated"] is False


# Failures while recording or answering


def test_failure_to_write_the_row_does_not_change_the_response(
    client, alice, make_tag, trackings_table_missing
):
    make_tag("cats", alice)

    response = client.get("/api/tags/", auth=alice)

    assert response.status_code == 200
    assert [tag["name"] for tag in response.json["results"]] == ["cats"]


def test_failure_to_write_the_row_is_logged(client, alice, trackings_table_missing, caplog):
    caplog.set_level(logging.ERROR, logger="imagestore.tracking")

    client.get("/api/tags/", auth=alice)

    assert any(
        record.name == "imagestore.tracking" and "GET /api/tags/" in record.getMessage()
        for record in caplog.records
    )


def test_server_error_answers_problem_json_and_is_tracked(app, client, alice, admin):
    def explode() -> None:
        raise RuntimeError("boom")

    app.add_url_rule("/api/explode/", "explode", explode)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    response = client.get("/api/explode/", auth=alice)

    assert response.status_code == 500
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == 500
    assert only_tracking(client, admin, "/api/explode/")["status_code"] == 500


# The trackings API


def test_regular_user_may_not_list_trackings(client, alice):
    response = client.get("/api/trackings/", auth=alice)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert response.json["detail"]


def test_regular_user_may_not_read_a_tracking(client, alice, admin):
    client.get("/api/", auth=alice)
    tracking_id = list_trackings(client, admin)["results"][0]["id"]

    response = client.get(f"/api/trackings/{tracking_id}/", auth=alice)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"


def test_anonymous_may_not_list_trackings(client):
    response = client.get("/api/trackings/")

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_trackings_list_answers_without_trailing_slash(client, alice, admin):
    client.get("/api/", auth=alice)

    response = client.get("/api/trackings", auth=admin)

    assert response.status_code == 200
    assert response.json["count"] == 1


def test_trackings_are_listed_newest_first(client, alice, admin):
    for path in ("/api/", "/api/tags/", "/api/images/"):
        client.get(path, auth=alice)

    results = list_trackings(client, admin)["results"]

    assert [row["endpoint"] for row in results] == ["/api/images/", "/api/tags/", "/api/"]
    assert [row["id"] for row in results] == sorted((row["id"] for row in results), reverse=True)


def test_trackings_come_in_pages_of_ten(client, alice, admin):
    for _ in range(12):
        client.get("/api/", auth=alice)

    first = list_trackings(client, admin)
    second = client.get(first["next"], auth=admin).json

    assert (first["count"], len(first["results"]), first["previous"]) == (12, 10, None)
    assert "page=2" in first["next"]
    assert (len(second["results"]), second["next"]) == (2, None)


def test_tracking_detail_matches_its_list_entry(client, alice, admin):
    client.post("/api/tags/", json={"name": "cats"}, auth=alice)
    listed = list_trackings(client, admin)["results"][0]

    response = client.get(f"/api/trackings/{listed['id']}/", auth=admin)

    assert response.status_code == 200
    assert response.json == listed


def test_missing_tracking_is_404(client, admin):
    response = client.get("/api/trackings/12345/", auth=admin)

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_posting_to_trackings_is_405(client, admin):
    response = client.post("/api/trackings/", json={"method": "GET"}, auth=admin)

    assert response.status_code == 405
    assert tracking_count(client, admin) == 0


def test_trackings_filter_by_user_id(app, client, alice, bob, admin):
    client.get("/api/", auth=alice)
    client.get("/api/", auth=bob)
    client.get("/api/tags/", auth=alice)

    page = list_trackings(client, admin, user=user_id(app, "alice"))

    assert page["count"] == 2
    assert {row["username"] for row in page["results"]} == {"alice"}


def test_trackings_filter_by_username(client, alice, bob, admin):
    client.get("/api/", auth=alice)
    client.get("/api/", auth=bob)
    client.get("/api/tags/", auth=bob)

    page = list_trackings(client, admin, user="bob")

    assert page["count"] == 2
    assert {row["username"] for row in page["results"]} == {"bob"}


def test_trackings_filter_by_exact_endpoint(client, alice, admin, make_tag):
    make_tag("cats", alice)
    client.get("/api/tags/", auth=alice)
    client.get("/api/tags/cats/", auth=alice)

    page = list_trackings(client, admin, endpoint="/api/tags/")

    assert page["count"] == 2
    assert {row["endpoint"] for row in page["results"]} == {"/api/tags/"}


def test_trackings_filter_by_method_ignores_case(client, alice, admin):
    client.get("/api/tags/", auth=alice)
    client.post("/api/tags/", json={"name": "cats"}, auth=alice)

    page = list_trackings(client, admin, method="post")

    assert page["count"] == 1
    assert page["results"][0]["method"] == "POST"


def test_trackings_filter_by_status_code(client, alice, admin):
    client.get("/api/tags/", auth=alice)
    client.get("/api/tags/nothing/", auth=alice)

    page = list_trackings(client, admin, status_code=404)

    assert page["count"] == 1
    assert page["results"][0]["endpoint"] == "/api/tags/nothing/"


def test_trackings_filters_keep_their_values_in_page_links(client, alice, admin):
    for _ in range(11):
        client.get("/api/", auth=alice)

    page = list_trackings(client, admin, method="GET", status_code=200)

    assert "method=GET" in page["next"]
    assert "status_code=200" in page["next"]


def test_trackings_filter_rejects_a_non_numeric_status_code(client, admin):
    response = client.get("/api/trackings/?status_code=abc", auth=admin)

    assert response.status_code == 400
    assert "status_code" in response.json["errors"]["query"]


def test_trackings_filter_rejects_an_unknown_method(client, admin):
    response = client.get("/api/trackings/?method=FOO", auth=admin)

    assert response.status_code == 400
    assert "method" in response.json["errors"]["query"]


def test_trackings_filter_rejects_a_bad_page(client, admin):
    response = client.get("/api/trackings/?page=0", auth=admin)

    assert response.status_code == 400
    assert "page" in response.json["errors"]["query"]


# Keyset pages (`cursor`)


def test_trackings_cursor_pages_walk_every_row_once(client, alice, admin):
    for _ in range(5):
        client.get("/api/", auth=alice)
    expected = [row["id"] for row in list_trackings(client, admin, page_size=100)["results"]]

    seen, url, pages = [], "/api/trackings/?cursor=&page_size=2", 0
    while url and pages < 10:
        page = client.get(url, auth=admin).json
        assert page["count"] is None
        assert page["previous"] is None
        seen += [row["id"] for row in page["results"]]
        url, pages = page["next"], pages + 1

    assert seen == expected
    assert pages == 3


def test_trackings_cursor_keeps_the_filters(client, alice, admin):
    for path in ("/api/", "/api/tags/", "/api/", "/api/"):
        client.get(path, auth=alice)

    page = list_trackings(client, admin, cursor="", page_size=1, endpoint="/api/")

    assert [row["endpoint"] for row in page["results"]] == ["/api/"]
    assert "endpoint=%2Fapi%2F" in page["next"]
    assert f"cursor={page['results'][0]['id']}" in page["next"]


def test_trackings_cursor_below_every_row_is_an_empty_page(client, alice, admin):
    client.get("/api/", auth=alice)

    page = list_trackings(client, admin, cursor=1)

    assert page == {"count": None, "next": None, "previous": None, "results": []}


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5"])
def test_trackings_bad_cursor_is_400(client, admin, cursor):
    response = client.get(f"/api/trackings/?cursor={cursor}", auth=admin)

    assert response.status_code == 400
    assert "cursor" in response.json["errors"]["query"]
