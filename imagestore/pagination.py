"""One page of a query in the {count, next, previous, results} envelope of the old service."""

from typing import Any
from urllib.parse import urlencode

from flask import abort, request
from marshmallow import Schema
from sqlalchemy import Select, func, select

from .extensions import db


def page_url(page: int) -> str:
    """Return the absolute URL of another page of this list, keeping every filter."""
    params = [(key, value) for key, value in request.args.items(multi=True) if key != "page"]
    params.append(("page", str(page)))
    return f"{request.base_url}?{urlencode(params)}"


def paginate(query: Select, schema: Schema, args: dict[str, Any]) -> dict[str, Any]:
    """Run one page of a query and wrap the dumped rows with the count and the page links."""
    page, size = args["page"], args["page_size"]
    count = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    if page > 1 and (page - 1) * size >= count:
        abort(404, description="Invalid page.")
    rows = db.session.scalars(query.limit(size).offset((page - 1) * size)).all()
    return {
        "count": count,
        "next": page_url(page + 1) if page * size < count else None,
        "previous": page_url(page - 1) if page > 1 else None,
        "results": schema.dump(rows, many=True),
    }
