"""Tracking: every API call leaves one row; admins read them at /api/trackings/.

`record` builds and stores the rows (an `after_request` hook), `writer` writes them to the
database (in the background, through a spool on disk), `cli` lists and prunes them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort

from ..auth import auth
from ..db import db
from ..models import Tracking
from ..openapi import doc
from ..pagination import keyset_page, paginate
from ..schemas import TrackingFilters, tracking_schema, use_args
from .record import LOG_PREFIX, init_tracking

__all__ = ["bp", "init_tracking"]

bp = Blueprint("tracking", __name__, url_prefix=LOG_PREFIX)


@bp.get("/")
@doc(tracking_schema, page=True, errors=(403,))
@auth.login_required(role="admin")
@use_args(TrackingFilters(), location="query")
def list_trackings(query_args: dict[str, Any]) -> dict[str, Any]:
    """Return one page of tracking rows, newest first, that match the filters.

    With `cursor` the page is found by id, not counted or skipped to: as fast on page 10,000 of a
    log of millions as on page 1.
    """
    query = Tracking.matching(query_args)
    if "cursor" in query_args:
        return keyset_page(query, Tracking.id, tracking_schema, query_args)
    return paginate(query, tracking_schema, query_args)


@bp.get("/<int:tracking_id>/")
@doc(tracking_schema, errors=(403,))
@auth.login_required(role="admin")
def get_tracking(tracking_id: int) -> dict[str, Any]:
    """Return one tracking row."""
    tracking = db.session.get(Tracking, tracking_id) if tracking_id < 2**63 else None
    if tracking is None:
        abort(404, description=f"No tracking row has the id {tracking_id}.")
    return tracking_schema.dump(tracking)
