"""SQL statements per request stay constant: no query per row, whatever the page size.

On SQLite every statement the driver runs is counted (`set_trace_callback` on each connection
checked out), the tracking insert included. On PostgreSQL the statements SQLAlchemy runs are
counted (`before_cursor_execute`), and the tracking insert, which goes to the driver directly,
is checked as one new row. Transaction control (`BEGIN`, `COMMIT`, `ROLLBACK`, savepoints) and
`PRAGMA`s are not counted; every SELECT, INSERT, UPDATE and DELETE is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import tracking_rows
from sqlalchemy import event

from imagestore.db import db

# Image list: auth, count, page, tags. Detail: auth, image, tags. Tag list: auth, count, page.
IMAGE_LIST_LIMIT = 4
IMAGE_DETAIL_LIMIT = 3
TAG_LIST_LIMIT = 3
NOT_COUNTED = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")
IMAGES = 105  # more than the largest page


# Every test uploads a gallery of more images than a page holds: seconds each.
pytestmark = pytest.mark.slow


class Statements:
    """The SQL statements one block of code ran, split into tracking inserts and the rest."""

    def __init__(self) -> None:
        self.all: list[str] = []
        self.new_trackings = 0

    def add(self, statement: str) -> None:
        if not statement.lstrip().upper().startswith(NOT_COUNTED):
            self.all.append(" ".join(statement.split()))

    @property
    def tracking(self) -> list[str]:
        return [sql for sql in self.all if sql.upper().startswith("INSERT INTO TRACKINGS")]

    @property
    def request(self) -> list[str]:
        return [sql for sql in self.all if sql not in self.tracking]

    @property
    def tracking_inserts(self) -> int:
        """How many tracking inserts ran (seen by the driver, or counted as new rows)."""
        return len(self.tracking) or self.new_trackings


@pytest.fixture
def count_statements(app: Flask) -> Callable[[], Any]:
    """Return a context manager that records the statements run inside it."""

    @contextmanager
    def counting() -> Iterator[Statements]:
        statements = Statements()
        with app.app_context():
            engine = db.engine
        rows_before = tracking_rows(app)
        traced = []

        def trace(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            dbapi_connection.set_trace_callback(statements.add)
            traced.append(dbapi_connection)

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.add(statement)

        sqlite = engine.dialect.name == "sqlite"
        event.listen(
            engine, *(("checkout", trace) if sqlite else ("before_cursor_execute", before))
        )
        try:
            yield statements
        finally:
            if sqlite:
                event.remove(engine, "checkout", trace)
                for dbapi_connection in traced:
                    dbapi_connection.set_trace_callback(None)
            else:
                event.remove(engine, "before_cursor_execute", before)
        if not sqlite:
            statements.new_trackings = tracking_rows(app) - rows_before

    return counting


@pytest.fixture
def gallery(client: FlaskClient, alice, make_tag, upload) -> dict[str, Any]:
    """Upload more images than a page holds, each with two or three of three tags."""
    for name in ("cat", "dog", "sky"):
        make_tag(name, alice)
    ids = []
    for number in range(IMAGES):
        tags = ["cat", "dog", "sky"] if number % 2 else ["cat", "dog"]
        response = upload(alice, tags=tags)
        assert response.status_code == 201, response.json
        ids.append(response.json["id"])
    client.get("/api/", auth=alice)  # the first request of a user fills the credentials cache
    return {"ids": ids}


@pytest.mark.parametrize("page_size", [10, 100])
@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"tags": "cat"},
        {"tags": "cat,sky"},
        {"start_date": "2000-01-01", "end_date": "2999-12-31"},
    ],
)
def test_image_list_runs_at_most_four_statements_and_the_tracking_insert(
    client, alice, gallery, count_statements, page_size, filters
):
    with count_statements() as statements:
        response = client.get(
            "/api/images/", query_string=filters | {"page_size": page_size}, auth=alice
        )

    assert response.status_code == 200
    assert len(response.json["results"]) == min(page_size, response.json["count"])
    assert len(response.json["results"]) > 0
    assert all(image["tags"] for image in response.json["results"])
    assert len(statements.request) <= IMAGE_LIST_LIMIT, statements.request
    assert statements.tracking_inserts == 1


def test_image_list_second_page_runs_as_many_statements(client, alice, gallery, count_statements):
    with count_statements() as statements:
        response = client.get("/api/images/?page=2&page_size=100", auth=alice)

    assert len(response.json["results"]) == IMAGES - 100
    assert len(statements.request) <= IMAGE_LIST_LIMIT, statements.request
    assert statements.tracking_inserts == 1


def test_image_list_with_a_token_runs_as_many_statements(client, alice, gallery, count_statements):
    secret = client.post("/api/tokens/", json={"name": "t"}, auth=alice).json["token"]

    with count_statements() as statements:
        response = client.get(
            "/api/images/?page_size=100", headers={"Authorization": f"Bearer {secret}"}
        )

    assert response.status_code == 200
    assert len(statements.request) <= IMAGE_LIST_LIMIT, statements.request
    assert statements.tracking_inserts == 1


def test_image_detail_runs_at_most_three_statements_and_the_tracking_insert(
    client, alice, gallery, count_statements
):
    image_id = gallery["ids"][1]

    with count_statements() as statements:
        response = client.get(f"/api/images/{image_id}/", auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == ["cat", "dog", "sky"]
    assert response.json["created_by"] == "alice"
    assert len(statements.request) <= IMAGE_DETAIL_LIMIT, statements.request
    assert statements.tracking_inserts == 1


@pytest.mark.parametrize("query", [{}, {"name": "a"}, {"page_size": 100}])
def test_tag_list_runs_at_most_three_statements_and_the_tracking_insert(
    client, alice, gallery, count_statements, query
):
    with count_statements() as statements:
        response = client.get("/api/tags/", query_string=query, auth=alice)

    assert response.status_code == 200
    assert {tag["name"]: tag["image_count"] for tag in response.json["results"]} == {
        name: count
        for name, count in {"cat": IMAGES, "dog": IMAGES, "sky": IMAGES // 2}.items()
        if "a" in name or "name" not in query
    }
    assert len(statements.request) <= TAG_LIST_LIMIT, statements.request
    assert statements.tracking_inserts == 1


def test_tracking_off_writes_no_statement(client, alice, gallery, count_statements, app):
    app.config["TRACKING_ENABLED"] = False

    with count_statements() as statements:
        response = client.get("/api/images/", auth=alice)

    assert response.status_code == 200
    assert statements.tracking_inserts == 0
    assert len(statements.request) <= IMAGE_LIST_LIMIT
