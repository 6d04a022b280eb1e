"""Images read as plain rows and written as the JSON that `ImageSchema` describes.

A page of images is the hottest response: reading columns instead of ORM objects, and writing
dicts directly instead of through marshmallow, makes it several times cheaper. The columns are
those of the schema's fields; tests/test_image_rows.py holds the output equal to
`image_schema.dump`, keys, order and values.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

from flask import current_app
from sqlalchemy import BigInteger, BindParameter, Connection, Select, bindparam, select

from ..models import Image, Tag, User, image_tags
from ..pagination import count_of, page_window
from ..schemas import utc_text
from ..urls import url_template
from .schemas import image_schema

# The fields that `image_writer` makes of the id, the tags and the settings; every other field
# of `ImageSchema` is a column, read under its name: the image's own, or its uploader's name
# (null once the uploader is deleted).
MADE_FIELDS = ("id", "image", "tags", "thumbnails")
STORED_FIELDS = tuple(name for name in image_schema.fields if name not in MADE_FIELDS)
OTHER_COLUMNS = {"created_by": User.username.label("created_by")}
# The id, then the stored fields' columns in the schema's order.
IMAGE_COLUMNS = (
    Image.id,
    *(OTHER_COLUMNS.get(name, getattr(Image, name)) for name in STORED_FIELDS),
)
# Statements of recent list requests, by their filters: a statement built once is also keyed
# and compiled once, which costs more than running it. Clients choose the filters, so the
# memory is bounded, and statements of many tag names (large, rarely repeated) are not kept.
PAGE_QUERIES: dict[tuple, tuple[Select, Select]] = {}
MAX_PAGE_QUERIES = 256
MAX_KEPT_TAG_NAMES = 20
# Arguments of a list that choose no images: a list filtered by tags alone is counted from the
# image-tag links (`Image.count_tagged`).
UNFILTERED = frozenset({"page", "page_size", "ordering", "tags"})
# Largest cursor: as the bound of a walk newest first, it stands past every id.
MAX_CURSOR = 2**63 - 1

Writer = Callable[[Sequence[Any], list[str]], dict[str, Any]]


def image_rows(query: Select) -> Select:
    """Select the `IMAGE_COLUMNS` of the images that a select of images selects."""
    return query.with_only_columns(*IMAGE_COLUMNS).outerjoin(User, User.id == Image.created_by_id)


# One image, by its id.
IMAGE_BY_ID = image_rows(select(Image).where(Image.id == bindparam("image_id")))


def remembered(filters: dict[str, Any], build: Callable[[], Any]) -> Any:
    """Return the statements that `build` makes of these filters, built once for the same ones.

    The same filters give the same statement objects, which SQLAlchemy runs at the least cost.
    """
    key = tuple(
        sorted(
            (name, tuple(value) if isinstance(value, list) else value)
            for name, value in filters.items()
        )
    )
    queries = PAGE_QUERIES.get(key)
    if queries is None:
        queries = build()
        names = sum(len(value) for value in filters.values() if isinstance(value, list))
        if names <= MAX_KEPT_TAG_NAMES:
            if len(PAGE_QUERIES) >= MAX_PAGE_QUERIES:
                PAGE_QUERIES.clear()
            PAGE_QUERIES[key] = queries
    return queries


def page_queries(filters: dict[str, Any]) -> tuple[Select, Select]:
    """Return the select of the image rows of the page asked for, and that of the match count."""

    def build() -> tuple[Select, Select]:
        offset, size = page_window(filters)
        query = Image.matching(filters)
        only_tags = filters.get("tags") and all(
            value in (None, [], "") for name, value in filters.items() if name not in UNFILTERED
        )
        count = Image.count_tagged(filters["tags"]) if only_tags else count_of(query)
        return image_rows(query).limit(size).offset(offset), count

    return remembered(filters, build)


def cursor_query(filters: dict[str, Any]) -> tuple[Select, dict[str, int]]:
    """Return the select of the image rows past the cursor, in id order, and its parameters.

    It reads one row more than a page, which tells whether another page follows. The cursor is
    a parameter: every page of a walk runs the same statement.
    """
    ordering = filters.get("ordering", "-id")
    oldest_first = ordering == "id"
    # `page` means nothing to a walk; the walk's filters, its ordering included, key it.
    walk = {name: value for name, value in filters.items() if name not in ("cursor", "page")}

    def build() -> Select:
        query = Image.matching(walk | {"ordering": ordering})
        cursor = bindparam("cursor", type_=BigInteger())
        query = query.where(Image.id > cursor if oldest_first else Image.id < cursor)
        return image_rows(query).limit(filters["page_size"] + 1)

    cursor = filters["cursor"] or (0 if oldest_first else MAX_CURSOR)  # empty: the first image
    # Keyed apart from the pages of the same filters, whatever the cursor.
    query = remembered(walk | {"cursor": None, "ordering": ordering}, build)
    return query, {"cursor": cursor}


@functools.cache
def tags_of_images(count: int) -> Select:
    """Select the tags of `count` images (ids bound as id0, id1, ...) in the order images list them.

    One statement per count (at most a page's size): an expanding `IN` list costs more, as it
    is written into the SQL again on every run.
    """
    ids: list[BindParameter[int]] = [bindparam(f"id{index}") for index in range(count)]
    return (
        select(image_tags.c.image_id, Tag.name)
        .join(Tag, Tag.id == image_tags.c.tag_id)
        .where(image_tags.c.image_id.in_(ids))
        .order_by(Tag.name_folded)
    )


def image_writer() -> Writer:
    """Return a function that writes one image, given as values of `IMAGE_COLUMNS`, and its tags.

    The URL templates and thumbnail sizes are looked up once, for every image it writes.
    """
    file_url = url_template("images.get_image_file", "image_id")
    thumbnail_url = url_template("images.get_image_file", "image_id", "size")
    sizes = [(str(size), size) for size in current_app.config["THUMBNAIL_SIZES"]]

    def write(values: Sequence[Any], tags: list[str]) -> dict[str, Any]:
        image_id = values[0]
        image = {
            "id": image_id,
            "image": file_url.format(image_id=image_id),
            "tags": tags,
            "thumbnails": {
                key: thumbnail_url.format(image_id=image_id, size=value) for key, value in sizes
            },
        }
        image.update(zip(STORED_FIELDS, values[1:], strict=True))
        image["created_at"] = utc_text(image["created_at"])  # keeps its place among the keys
        return image

    return write


def read_images(
    connection: Connection, query: Select, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run a select of `image_rows` and return the images written out, in its order.

    The rows and then their tags are read on `connection`, without the ORM's work.
    """
    rows = connection.execute(query, params).all()
    if not rows:
        return []
    tags: dict[int, list[str]] = {row[0]: [] for row in rows}
    ids = {f"id{index}": image_id for index, image_id in enumerate(tags)}
    for image_id, name in connection.execute(tags_of_images(len(ids)), ids).all():
        tags[image_id].append(name)
    write = image_writer()
    return [write(row, tags[row[0]]) for row in rows]


def write_images(images: list[Image]) -> list[dict[str, Any]]:
    """Write out images loaded as objects, with their tags and uploader."""
    write = image_writer()
    return [write(image_values(image), [tag.name for tag in image.tags]) for image in images]


def image_values(image: Image) -> tuple[Any, ...]:
    """Return the values of `IMAGE_COLUMNS` read from an image object."""
    uploader = image.created_by.username if image.created_by else None
    return (
        image.id,
        *(uploader if name == "created_by" else getattr(image, name) for name in STORED_FIELDS),
    )
