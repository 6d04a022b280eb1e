"""JSON log lines (one per request, one per error with its traceback) and X-Request-ID."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from helpers import settings

from imagestore import create_app
from imagestore.auth import auth

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Return the JSON lines written to stderr so far; every stderr line must be one."""
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def access_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Return the request lines written to stderr so far."""
    return [line for line in log_lines(capsys) if line["logger"] == "imagestore.access"]


@pytest.fixture(autouse=True)
def restore_log_level() -> Iterator[None]:
    """Put the `imagestore` logger's level back after a test's apps changed it."""
    yield
    logging.getLogger("imagestore").setLevel(logging.INFO)


@pytest.fixture
def failing_app(make_app: Any) -> Flask:
    """An app with an authenticated route that raises, answered with a 500 as in production."""
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    def explode() -> None:
        raise RuntimeError("the disk is on fire")

    app.add_url_rule("/api/explode", view_func=auth.login_required(explode))
    return app


# One line per request


def test_request_writes_one_json_line_with_the_documented_fields(client, alice, capsys):
    capsys.readouterr()

    response = client.get("/api/tags/", auth=alice)

    [line] = access_lines(capsys)
    assert line["time"]
    assert ISO_UTC.match(line["time"])
    assert line["level"] == "INFO"
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["user"], line["method"], line["path"], line["status"]) == (
        "alice",
        "GET",
        "/api/tags/",
        200,
    )
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0
    assert line["remote_addr"] == "127.0.0.1"


def test_anonymous_request_is_logged_without_a_user(client, capsys):
    capsys.readouterr()

    client.get("/api/images/")

    [line] = access_lines(capsys)
    assert (line["user"], line["status"]) == (None, 401)


def test_requests_outside_the_api_are_logged_too(client, capsys):
    capsys.readouterr()

    client.get("/nowhere")

    [line] = access_lines(capsys)
    assert (line["path"], line["status"]) == ("/nowhere", 404)


def test_query_string_is_not_logged(client, alice, capsys):
    capsys.readouterr()

    client.get("/api/tags/?name=secret-word", auth=alice)

    assert "secret-word" not in json.dumps(log_lines(capsys))


def test_a_newline_in_the_path_stays_inside_one_json_line(client, alice, capsys):
    capsys.readouterr()

    client.get("/api/tags/a%0A%7B%22forged%22%3A1%7D/", auth=alice)

    [line] = access_lines(capsys)
    assert line["path"] == '/api/tags/a\n{"forged":1}/'


def test_successful_probes_are_logged_only_at_debug(make_app, capsys):
    client = make_app().test_client()
    capsys.readouterr()

    client.get("/healthz")
    client.get("/readyz")

    assert access_lines(capsys) == []


def test_log_level_debug_shows_the_probes(make_app, capsys):
    client = make_app(LOG_LEVEL="DEBUG").test_client()
    capsys.readouterr()

    client.get("/healthz")

    [line] = access_lines(capsys)
    assert (line["level"], line["path"]) == ("DEBUG", "/healthz")


def test_log_level_warning_hides_successful_requests(make_app, alice, capsys):
    client = make_app(LOG_LEVEL="warning").test_client()
    capsys.readouterr()

    client.get("/api/tags/", auth=alice)

    assert access_lines(capsys) == []


def test_numeric_log_level_is_accepted(make_app, alice, capsys):
    client = make_app(LOG_LEVEL=30).test_client()
    capsys.readouterr()

    client.get("/api/tags/", auth=alice)

    assert access_lines(capsys) == []


def test_unknown_log_level_stops_the_app_from_starting(database_url, tmp_path):
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        create_app(settings(database_url, tmp_path) | {"LOG_LEVEL": "LOUD"})


def test_log_level_is_read_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGESTORE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("IMAGESTORE_LOG_LEVEL", "ERROR")

    create_app()

    assert logging.getLogger("imagestore").level == logging.ERROR
    logging.getLogger("imagestore").setLevel(logging.INFO)


# Errors


def test_unexpected_error_is_logged_with_its_traceback_and_request_id(failing_app, alice, capsys):
    capsys.readouterr()

    response = failing_app.test_client().get("/api/explode", auth=alice)

    assert response.status_code == 500
    lines = log_lines(capsys)
    [error] = [line for line in lines if "traceback" in line]
    assert error["level"] == "ERROR"
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert "RuntimeError: the disk is on fire" in error["traceback"]
    assert "Traceback (most recent call last)" in error["traceback"]


def test_a_500_is_logged_as_an_error_line_with_its_status(failing_app, alice, capsys):
    capsys.readouterr()

    failing_app.test_client().get("/api/explode", auth=alice)

    [line] = access_lines(capsys)
    assert (line["level"], line["status"], line["user"]) == ("ERROR", 500, "alice")


def test_client_errors_carry_no_traceback(client, alice, capsys):
    capsys.readouterr()

    client.post("/api/tags/", json={"name": ""}, auth=alice)

    assert not any("traceback" in line for line in log_lines(capsys))


# X-Request-ID


def test_response_carries_a_generated_request_id(client, alice):
    response = client.get("/api/", auth=alice)

    assert HEX_ID.match(response.headers["X-Request-ID"])


def test_generated_request_ids_start_with_the_time_in_milliseconds(client, alice):
    before = time.time_ns() // 1_000_000
    first = client.get("/api/", auth=alice).headers["X-Request-ID"]
    second = client.get("/api/", auth=alice).headers["X-Request-ID"]
    after = time.time_ns() // 1_000_000

    assert before <= int(first[:12], 16) <= int(second[:12], 16) <= after


def test_each_request_gets_a_new_request_id(client, alice):
    first = client.get("/api/", auth=alice).headers["X-Request-ID"]
    second = client.get("/api/", auth=alice).headers["X-Request-ID"]

    assert first != second


def test_a_sane_request_id_from_the_client_is_kept(client, alice, capsys):
    capsys.readouterr()

    response = client.get("/api/", auth=alice, headers={"X-Request-ID": "lb-1234:abcd/EF=="})

    assert response.headers["X-Request-ID"] == "lb-1234:abcd/EF=="
    assert access_lines(capsys)[0]["request_id"] == "lb-1234:abcd/EF=="


@pytest.mark.parametrize(
    "given",
    ["x" * 129, "has space", 'quote"', "semi;colon", "<script>", "naïve"],
)
def test_an_unsafe_request_id_is_replaced(client, alice, given):
    response = client.get("/api/", auth=alice, headers={"X-Request-ID": given})

    assert HEX_ID.match(response.headers["X-Request-ID"])


def test_an_empty_request_id_is_replaced(client, alice):
    response = client.get("/api/", auth=alice, headers={"X-Request-ID": ""})

    assert HEX_ID.match(response.headers["X-Request-ID"])


def test_request_id_is_returned_on_every_kind_of_response(client, alice):
    responses = [
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/nowhere"),
        client.get("/api/images/"),
        client.get("/api/images/?start_date=yesterday", auth=alice),
        client.get("/api/tags/%00/", auth=alice),
    ]

    assert [HEX_ID.match(r.headers.get("X-Request-ID", "")) is not None for r in responses] == [
        True
    ] * len(responses)


def test_a_500_response_carries_the_request_id(failing_app, alice):
    response = failing_app.test_client().get(
        "/api/explode", auth=alice, headers={"X-Request-ID": "trace-500"}
    )

    assert response.headers["X-Request-ID"] == "trace-500"


# The request id in the tracking log


def test_request_id_is_stored_in_the_tracking_row(client, alice, admin):
    client.get("/api/", auth=alice, headers={"X-Request-ID": "abc-123"})

    rows = client.get("/api/trackings/?endpoint=/api/", auth=admin).json["results"]
    assert [row["request_id"] for row in rows] == ["abc-123"]


def test_generated_request_id_is_stored_in_the_tracking_row(client, alice, admin):
    response = client.get("/api/tags/", auth=alice)

    rows = client.get("/api/trackings/?endpoint=/api/tags/", auth=admin).json["results"]
    assert rows[0]["request_id"] == response.headers["X-Request-ID"]


def test_trackings_filter_by_request_id(client, alice, admin):
    client.get("/api/", auth=alice, headers={"X-Request-ID": "first"})
    client.get("/api/", auth=alice, headers={"X-Request-ID": "second"})

    page = client.get("/api/trackings/?request_id=second", auth=admin).json

    assert [row["request_id"] for row in page["results"]] == ["second"]


def test_trackings_filter_refuses_an_overlong_request_id(client, admin):
    response = client.get(f"/api/trackings/?request_id={'x' * 129}", auth=admin)

    assert response.status_code == 400
    assert "request_id" in response.json["errors"]["query"]
