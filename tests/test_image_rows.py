"""Images written from rows or objects are exactly what `ImageSchema` dumps: keys, order, values."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from imagestore.db import db
from imagestore.images.rows import (
    MAX_KEPT_TAG_NAMES,
    image_rows,
    page_queries,
    read_images,
    write_images,
)
from imagestore.images.schemas import image_schema
from imagestore.models import Image


@pytest.fixture
def images(app: Flask, alice, make_tag, upload: Callable[..., Any]) -> list[int]:
    """Upload an image with tags, one without, and one whose uploader is gone."""
    for name in ("Zebra", "apple", "Mango"):
        make_tag(name, alice)
    ids = [
        upload(alice, tags=["Zebra", "apple", "Mango"]).json["id"],
        upload(alice).json["id"],
        upload(alice, tags=["apple"]).json["id"],
    ]
    with app.app_context():
        orphan = db.session.get(Image, ids[2])
        orphan.created_by_id = None
        orphan.created_at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # no microseconds
        db.session.commit()
    return ids


def dumped(ids: list[int]) -> list[dict[str, Any]]:
    """Return the images as `image_schema` dumps them, newest first."""
    query = (
        select(Image)
        .where(Image.id.in_(ids))
        .order_by(Image.id.desc())
        .options(selectinload(Image.tags), joinedload(Image.created_by))
    )
    return image_schema.dump(db.session.scalars(query).all(), many=True)


@pytest.mark.parametrize("base_url", ["http://localhost", "https://example.org:8443/root"])
def test_rows_read_are_written_as_the_schema_dumps_them(
    app: Flask, images: list[int], base_url: str
) -> None:
    with app.test_request_context("/api/images/", base_url=base_url):
        expected = dumped(images)

        query = select(Image).where(Image.id.in_(images)).order_by(Image.id.desc())
        written = read_images(db.session.connection(), image_rows(query))

    assert written == expected
    assert [list(image) for image in written] == [list(image) for image in expected]
    assert [image["created_by"] for image in written] == [None, "alice", "alice"]
    assert written[-1]["tags"] == ["apple", "Mango", "Zebra"]


def test_objects_are_written_as_the_schema_dumps_them(app: Flask, images: list[int]) -> None:
    with app.test_request_context("/api/images/"):
        expected = dumped(images)

        query = select(Image).where(Image.id.in_(images)).order_by(Image.id.desc())
        written = write_images(db.session.scalars(query).all())

    assert written == expected
    assert [list(image) for image in written] == [list(image) for image in expected]


def test_no_rows_are_read_as_an_empty_list(app: Flask) -> None:
    with app.test_request_context("/api/images/"):
        written = read_images(
            db.session.connection(), image_rows(select(Image).where(Image.id == 1))
        )

    assert written == []


def test_the_statements_of_the_same_filters_are_built_once() -> None:
    filters = {"page": 1, "page_size": 10, "ordering": "-created_at", "tags": ["cat", "dog"]}

    first, second = page_queries(filters), page_queries(dict(filters))

    assert first is second


def test_the_statements_of_many_tag_names_are_not_kept() -> None:
    names = [f"tag-{number}" for number in range(MAX_KEPT_TAG_NAMES + 1)]
    filters = {"page": 1, "page_size": 10, "ordering": "-created_at", "any_tags": names}

    first, second = page_queries(filters), page_queries(filters)

    assert first is not second
