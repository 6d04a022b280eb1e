"""`flask trackings prune` and `flask trackings export`, through the CLI runner."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select

from imagestore.db import db
from imagestore.models import Tracking, User, utcnow
from imagestore.tracking.cli import matching_rows

REMOVED = re.compile(r"^removed (\d+) tracking rows older than \S+Z$")


def add_rows(app: Flask, *ages: timedelta, **fields: Any) -> list[int]:
    """Insert one tracking row per age (how long ago it was made); return their ids."""
    with app.app_context():
        rows = [
            Tracking(
                method=fields.get("method", "GET"),
                endpoint=fields.get("endpoint", "/api/"),
                status_code=fields.get("status_code", 200),
                duration_ms=1.5,
                truncated=False,
                created_at=utcnow() - age,
            )
            for age in ages
        ]
        db.session.add_all(rows)
        db.session.commit()
        return [row.id for row in rows]


def remaining_ids(app: Flask) -> list[int]:
    """Return the ids of the tracking rows left, in order."""
    with app.app_context():
        return list(db.session.scalars(select(Tracking.id).order_by(Tracking.id)))


def days(count: float) -> timedelta:
    """Return a span of days."""
    return timedelta(days=count)


# prune


def test_prune_removes_only_rows_older_than_the_age(app, runner):
    old = add_rows(app, days(100), days(91))
    recent = add_rows(app, days(89), days(1), timedelta(0))

    result = runner.invoke(args=["trackings", "prune", "--older-than", "90d"])

    assert result.exit_code == 0, result.output
    assert remaining_ids(app) == recent
    assert REMOVED.match(result.output.strip()).group(1) == str(len(old))


def test_prune_accepts_hours(app, runner):
    add_rows(app, timedelta(hours=13))
    recent = add_rows(app, timedelta(hours=11))

    result = runner.invoke(args=["trackings", "prune", "--older-than", "12h"])

    assert result.exit_code == 0, result.output
    assert remaining_ids(app) == recent


def test_prune_says_so_when_nothing_is_old_enough(app, runner):
    add_rows(app, days(1))

    result = runner.invoke(args=["trackings", "prune", "--older-than", "90d"])

    assert result.exit_code == 0
    assert result.output.startswith("removed 0 tracking rows older than ")


def test_prune_deletes_in_batches_of_the_given_size(app, runner):
    add_rows(app, *[days(200)] * 5)
    deletes: list[str] = []
    with app.app_context():
        engine = db.engine

    def count_deletes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)

    event.listen(engine, "before_cursor_execute", count_deletes)
    try:
        result = runner.invoke(
            args=["trackings", "prune", "--older-than", "1d", "--batch-size", "2"]
        )
    finally:
        event.remove(engine, "before_cursor_execute", count_deletes)

    assert result.output.startswith("removed 5 ")
    assert len(deletes) == 3  # 2 + 2 + 1
    assert remaining_ids(app) == []


def test_prune_commits_each_batch_on_its_own(app, runner):
    add_rows(app, *[days(200)] * 4)
    commits: list[Any] = []
    with app.app_context():
        engine = db.engine

    def count_commit(conn: Any) -> None:
        commits.append(conn)

    event.listen(engine, "commit", count_commit)
    try:
        runner.invoke(args=["trackings", "prune", "--older-than", "1d", "--batch-size", "2"])
    finally:
        event.remove(engine, "commit", count_commit)

    assert len(commits) == 3  # two full batches, then the empty one that ends the loop


@pytest.mark.parametrize("age", ["90", "90x", "-1d", "d", "1.5d", "90 days"])
def test_prune_refuses_an_age_without_a_known_unit(app, runner, age):
    add_rows(app, days(100))

    result = runner.invoke(args=["trackings", "prune", "--older-than", age])

    assert result.exit_code == 2
    assert "--older-than" in result.output
    assert len(remaining_ids(app)) == 1


def test_prune_requires_an_age(runner):
    result = runner.invoke(args=["trackings", "prune"])

    assert result.exit_code == 2
    assert "--older-than" in result.output


def test_prune_refuses_an_age_past_the_calendar(runner):
    result = runner.invoke(args=["trackings", "prune", "--older-than", "999999999d"])

    assert result.exit_code == 2
    assert "too large" in result.output


def test_prune_accepts_upper_case_units(app, runner):
    add_rows(app, days(100))

    result = runner.invoke(args=["trackings", "prune", "--older-than", "90D"])

    assert result.exit_code == 0
    assert remaining_ids(app) == []


# export


@pytest.fixture
def traffic(client, alice, bob, admin, make_tag) -> None:
    """Leave tracking rows of a few API calls by alice and bob."""
    make_tag("cats", alice)  # POST /api/tags/ 201
    client.get("/api/tags/", auth=bob)  # GET 200
    client.get("/api/tags/nope/", auth=alice)  # GET 404


def export(runner: Any, *args: str) -> Any:
    """Run `flask trackings export` with these arguments; fail on a non-zero exit."""
    result = runner.invoke(args=["trackings", "export", *args])
    assert result.exit_code == 0, result.output
    return result


def test_export_jsonl_writes_the_api_rows_oldest_first(client, admin, runner, traffic):
    api_rows = client.get("/api/trackings/", auth=admin).json["results"]

    result = export(runner, "--format", "jsonl")

    exported = [json.loads(line) for line in result.output.splitlines()]
    assert exported == list(reversed(api_rows))


def test_export_defaults_to_jsonl(runner, traffic):
    result = export(runner)

    assert len([json.loads(line) for line in result.output.splitlines()]) == 3


def test_export_csv_has_a_header_and_one_line_per_row(client, admin, runner, traffic):
    api_rows = client.get("/api/trackings/", auth=admin).json["results"]

    result = export(runner, "--format", "csv")

    reader = csv.DictReader(io.StringIO(result.output))
    rows = list(reader)
    assert reader.fieldnames == list(api_rows[0])
    assert [row["id"] for row in rows] == [str(row["id"]) for row in reversed(api_rows)]


def test_export_csv_writes_objects_as_json_and_null_as_empty(runner, traffic):
    result = export(runner, "--format", "csv", "--status-code", "201")

    [row] = csv.DictReader(io.StringIO(result.output))
    assert json.loads(row["data"]) == {"name": "cats"}
    assert json.loads(row["response"])["name"] == "cats"
    assert row["truncated"] == "false"
    assert row["query"] == ""


def test_export_with_no_rows_writes_only_the_csv_header(runner):
    result = export(runner, "--format", "csv")

    assert result.output.count("\n") == 1
    assert result.output.startswith("id,")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--user", "bob"], [("GET", "/api/tags/", 200)]),
        (["--method", "post"], [("POST", "/api/tags/", 201)]),
        (["--status-code", "404"], [("GET", "/api/tags/nope/", 404)]),
        (["--endpoint", "/api/tags/"], [("POST", "/api/tags/", 201), ("GET", "/api/tags/", 200)]),
        (["--user", "alice", "--method", "GET"], [("GET", "/api/tags/nope/", 404)]),
    ],
)
def test_export_filters_as_the_api_does(runner, traffic, args, expected):
    result = export(runner, *args)

    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(row["method"], row["endpoint"], row["status_code"]) for row in rows] == expected


def test_export_filters_by_user_id(app, runner, traffic):
    with app.app_context():
        bob_id = db.session.scalar(select(User.id).where(User.username == "bob"))

    result = export(runner, "--user", str(bob_id))

    assert [json.loads(line)["username"] for line in result.output.splitlines()] == ["bob"]


def test_export_filters_by_request_id(client, alice, runner):
    client.get("/api/", auth=alice, headers={"X-Request-ID": "wanted"})
    client.get("/api/", auth=alice, headers={"X-Request-ID": "other"})

    result = export(runner, "--request-id", "wanted")

    assert [json.loads(line)["request_id"] for line in result.output.splitlines()] == ["wanted"]


def test_export_filters_by_dates_inclusively(app, runner):
    today = utcnow().date()
    _, two_days_ago, just_now = add_rows(app, days(4), days(2), days(0))

    result = export(
        runner,
        "--start-date",
        (today - days(2)).isoformat(),
        "--end-date",
        today.isoformat(),
    )

    ids = [json.loads(line)["id"] for line in result.output.splitlines()]
    assert ids == [two_days_ago, just_now]


def test_export_refuses_an_unknown_method(runner):
    result = runner.invoke(args=["trackings", "export", "--method", "FETCH"])

    assert result.exit_code == 2
    assert "--method" in result.output


def test_export_refuses_end_date_before_start_date(runner):
    result = runner.invoke(
        args=["trackings", "export", "--start-date", "2026-02-01", "--end-date", "2026-01-01"]
    )

    assert result.exit_code == 2
    assert "--end-date" in result.output


def test_export_refuses_an_unknown_format(runner):
    result = runner.invoke(args=["trackings", "export", "--format", "xml"])

    assert result.exit_code == 2


def test_matching_rows_reads_in_batches_without_losing_or_repeating_rows(app):
    ids = add_rows(app, *[days(1)] * 5)

    with app.app_context():
        rows = list(matching_rows({}, batch_size=2))

    assert [row["id"] for row in rows] == ids


# API date filters on the trackings list, shared with the export


def test_trackings_list_filters_by_dates(app, client, admin):
    today = datetime.now(UTC).date()
    recent, _ = add_rows(app, days(0), days(3))

    page = client.get(f"/api/trackings/?start_date={today.isoformat()}", auth=admin).json

    assert [row["id"] for row in page["results"]] == [recent]


def test_trackings_list_refuses_end_date_before_start_date(client, admin):
    response = client.get("/api/trackings/?start_date=2026-02-01&end_date=2026-01-01", auth=admin)

    assert response.status_code == 400
    assert "end_date" in response.json["errors"]["query"]
