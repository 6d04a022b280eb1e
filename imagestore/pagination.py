"""One page of a query in the {count, next, previous, results} envelope of the old service."""

from collections.abc import Callable
from typing import Any, NoReturn
from urllib.parse import urlencode

from flask import abort, request
from marshmallow import Schema
from sqlalchemy import Connection, Select, func, literal_column, select
from werkzeug.exceptions import NotFound

from .db import db
from .errors import abort_with

MAX_OFFSET = 2**62


def list_url(name: str, value: int, drop: tuple[str, ...] = ()) -> str:
    """Return this list's absolute URL with `name` set to `value`, keeping every filter."""
    params = [
        (key, item)
        for key, item in request.args.items(multi=True)
        if key != name and key not in drop
    ]
    params.append((name, str(value)))
    return f"{request.base_url}?{urlencode(params)}"


def page_url(page: int) -> str:
    """Return the absolute URL of another page of this list, keeping every filter."""
    return list_url("page", page)


def page_window(args: dict[str, Any]) -> tuple[int, int]:
    """Return the offset and the size of the page asked for."""
    size = args["page_size"]
    offset = (args["page"] - 1) * size
    if offset > MAX_OFFSET:  # past any table, and past what SQL takes
        abort(404, description=f"There is no page {args['page']}.")
    return offset, size


def no_such_page(page: int, size: int, total: int) -> NoReturn:
    """Answer 404 for a page past the end, saying which pages there are."""
    pages = max(1, -(-total // size))
    abort_with(
        NotFound,
        f"There is no page {page}: the list has {total} results, in {pages}"
        f" page{'s' if pages > 1 else ''} of {size}.",
        count=total,
        pages=pages,
    )


def count_of(query: Select) -> Select:
    """Select how many rows a query selects.

    Only the rows are counted: computed columns (a tag's image count) are not worked out.
    """
    rows: Select = query.with_only_columns(literal_column("1"), maintain_column_froms=True)
    return select(func.count()).select_from(rows.order_by(None).subquery())


def page_envelope(
    results: list[dict[str, Any]], args: dict[str, Any], count: Callable[[], int]
) -> dict[str, Any]:
    """Wrap one page of dumped rows with the count of all rows and the page links.

    A page that is not full is the last one: its rows tell the count and `count` is not called.
    """
    page, size = args["page"], args["page_size"]
    if page > 1 and not results:
        no_such_page(page, size, count())
    total = (page - 1) * size + len(results) if len(results) < size else count()
    return {
        "count": total,
        "next": page_url(page + 1) if page * size < total else None,
        "previous": page_url(page - 1) if page > 1 else None,
        "results": results,
    }


def read_page(
    read: Callable[[Connection, Select], list[dict[str, Any]]],
    page: Select,
    count: Select,
    args: dict[str, Any],
) -> dict[str, Any]:
    """Wrap the rows that `read` writes out of the select `page` with the count and page links.

    They are read on a connection of their own: one read transaction, none of the session's
    bookkeeping (lists are the hottest responses).
    """
    with db.engine.connect() as connection:
        return page_envelope(read(connection, page), args, lambda: connection.scalar(count))


def paginate(query: Select, schema: Schema, args: dict[str, Any]) -> dict[str, Any]:
    """Run one page of a query and wrap the dumped rows with the count and the page links."""
    offset, size = page_window(args)
    rows = db.session.scalars(query.limit(size).offset(offset)).all()
    return page_envelope(
        schema.dump(rows, many=True), args, lambda: db.session.scalar(count_of(query))
    )


def cursor_url(cursor: int) -> str:
    """Return the absolute URL of the keyset page below `cursor`, keeping every filter."""
    return list_url("cursor", cursor, drop=("page",))


def keyset_page(query: Select, key: Any, schema: Schema, args: dict[str, Any]) -> dict[str, Any]:
    """Run one page of a query ordered by `key` descending, below `args["cursor"]`; no count.

    `count` is null and `next` carries the cursor of the following page: no row is counted or
    skipped, so every page costs what the first one does.
    """
    size, cursor = args["page_size"], args["cursor"]
    if cursor:
        query = query.where(key < cursor)
    rows = db.session.scalars(query.limit(size + 1)).all()
    more = len(rows) > size
    rows = rows[:size]
    return {
        "count": None,
        "next": cursor_url(getattr(rows[-1], key.key)) if more else None,
        "previous": None,
        "results": schema.dump(rows, many=True),
    }


def read_keyset_page(
    read: Callable[[Connection, Select, dict[str, Any]], list[dict[str, Any]]],
    query: Select,
    params: dict[str, Any],
    args: dict[str, Any],
) -> dict[str, Any]:
    """Wrap the rows that `read` writes out of a keyset select as `keyset_page` does.

    The select reads one row more than a page: that row, dropped, tells that another follows.
    """
    size = args["page_size"]
    with db.engine.connect() as connection:
        results = read(connection, query, params)
    return {
        "count": None,
        "next": cursor_url(results[size - 1]["id"]) if len(results) > size else None,
        "previous": None,
        "results": results[:size],
    }
