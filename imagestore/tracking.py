"""Blueprint "tracking": the read-only /api/trackings/ log, and the recorder that fills it."""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any

from flask import Blueprint, Flask, Request, Response, abort, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from .auth import auth, auth_method
from .extensions import db
from .logs import request_id
from .models import Tracking, utcnow
from .openapi import doc
from .pagination import keyset_page, paginate
from .schemas import TrackingFilters, tracking_schema, use_args
from .tracking_writer import JSONText, flush_trackings, save_tracking

bp = Blueprint("tracking", __name__, url_prefix="/api/trackings")
log = logging.getLogger(__name__)

# Paths under /api/ that are not recorded: the log itself, and the API's own documentation.
UNTRACKED_PREFIXES = ("/api/trackings", "/api/openapi.json", "/api/docs")
# Keys whose values are never stored, matched case-insensitively anywhere in the key.
SECRET_MARKERS = ("password", "secret", "token", "authorization", "cookie", "key")
# JSON text holding none of these needs no redaction: no secret key, no NUL, no surrogate.
UNSAFE_JSON_BYTES = (*(marker.encode() for marker in SECRET_MARKERS), b"\\u0000", b"\\ud")
REDACTED = "[redacted]"
TEXT_LIMIT = 512
# Longest response body whose redacted form is remembered (128 of them at most).
CLEANED_BODY_CACHE_LIMIT = 4096


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


def is_tracked(path: str) -> bool:
    """Tell whether a request path is recorded."""
    return (path == "/api" or path.startswith("/api/")) and not path.startswith(UNTRACKED_PREFIXES)


def is_secret(key: str) -> bool:
    """Tell whether a key names something that must not be stored."""
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def storable(text: str) -> str:
    """Return text that every database stores: no NUL, no lone surrogate."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode()


def short(text: str | None, limit: int) -> str | None:
    """Return storable text cut to `limit` characters; None for no text."""
    return storable(text)[:limit] if text else None


def redact(value: Any) -> Any:
    """Copy a JSON-like value with the values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {
            storable(str(key)): REDACTED if is_secret(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return storable(value)
    return value


def flatten(multi: Any) -> dict[str, Any]:
    """Turn a MultiDict into a dict: one value as itself, several as a list."""
    return {key: values[0] if len(values) == 1 else values for key, values in multi.lists()}


def file_summary(upload: Any) -> dict[str, Any]:
    """Describe an uploaded file by name, content type and size, never its content."""
    stream = upload.stream
    position = stream.tell()
    size = stream.seek(0, 2)
    stream.seek(position)
    return {"filename": upload.filename, "content_type": upload.mimetype, "size": size}


def request_data(req: Request, response: Response) -> Any:
    """Return the request body as JSON-like data: parsed JSON, or form fields and file summaries."""
    if response.status_code == 413:
        return None  # the body was refused unread
    if not req.content_length and "chunked" not in req.headers.get("Transfer-Encoding", ""):
        return None  # no body: nothing to parse
    if req.is_json:
        return req.get_json(silent=True)
    try:
        form, files = req.form, req.files
    except HTTPException:
        return None
    if not form and not files:
        return None
    data = flatten(form)
    for key, uploads in files.lists():
        summaries = [file_summary(upload) for upload in uploads]
        data[key] = summaries[0] if len(summaries) == 1 else summaries
    return data


def capped(value: Any, limit: int) -> tuple[Any, bool]:
    """Return the value, or its JSON text cut to `limit` characters when longer; and whether cut."""
    if value is None:
        return None, False
    text = json.dumps(value, default=str)
    if len(text.encode()) <= limit:
        return value, False
    return text.encode()[:limit].decode(errors="ignore"), True


def needs_cleaning(text: bytes) -> bool:
    """Tell whether JSON text may need redaction (a secret marker anywhere) or `storable()`."""
    lowered = text.lower()
    return any(marker in lowered for marker in UNSAFE_JSON_BYTES)


def cleaned_body(text: bytes, limit: int) -> tuple[Any, bool]:
    """Return a JSON body redacted and capped, and whether it was cut (None for invalid JSON).

    What it returns is immutable (JSON text, or text cut), so rows may share it.
    """
    try:
        body = json.loads(text)
    except ValueError:
        return None, False
    value, cut = capped(redact(body), limit)
    return (value if cut else JSONText(json.dumps(value, default=str))), cut


# The same, remembered for short bodies that come back the same, such as the API root's (its
# "tokens" link is a secret marker): their redaction is paid once.
remembered_body = functools.lru_cache(maxsize=128)(cleaned_body)


def stored_response(response: Response, limit: int) -> tuple[Any, bool]:
    """Return the response body to store (redacted, capped) and whether it was cut.

    The common case is cheap: a body that mentions no secret marker needs no redaction, so it
    is stored as the JSON text it is, or cut.
    """
    if response.is_streamed or not response.is_json:
        return None, False
    text = response.get_data()
    if needs_cleaning(text):
        clean = remembered_body if len(text) <= CLEANED_BODY_CACHE_LIMIT else cleaned_body
        return clean(text, limit)
    if len(text) > limit:
        return text[:limit].decode(errors="ignore"), True
    return JSONText(text.decode()), False


def describe(req: Request, response: Response) -> dict[str, Any]:
    """Build the tracking row of a request, redacted and capped."""
    limit = current_app.config["TRACKING_BODY_LIMIT"]
    user = auth.current_user()
    attempted = req.authorization.username if req.authorization else None
    data, data_cut = capped(redact(request_data(req, response)), limit)
    body, body_cut = stored_response(response, limit)
    headers = {
        key: REDACTED if is_secret(key) else value
        for key, value in response.headers.items()
        if key.lower() != "set-cookie"
    }
    started = g.get("tracking_started", time.perf_counter())
    return {
        "user_id": user.id if user else None,
        "username": user.username if user else short(attempted, 150),
        "auth_method": auth_method(req),
        "method": req.method,
        "endpoint": short(req.path, 1024),
        "query": redact(flatten(req.args)) or None,
        "data": data,
        "status_code": response.status_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "remote_addr": req.remote_addr,
        "user_agent": short(req.user_agent.string, TEXT_LIMIT),
        "headers": headers,
        "response": body,
        "truncated": data_cut or body_cut,
        "created_at": utcnow(),
        "request_id": request_id(),
    }


def start_request() -> None:
    """Note when the request started; before a read of the log, let it see this process's rows."""
    g.tracking_started = time.perf_counter()
    if request.path.startswith(bp.url_prefix):
        flush_trackings()  # before any read of the log begins


def record_request(response: Response) -> Response:
    """Store one tracking row per API call, failed calls included; never fail the response."""
    if current_app.config["TRACKING_ENABLED"] and is_tracked(request.path):
        try:
            row = describe(request._get_current_object(), response)
            # Whatever the view left uncommitted is abandoned; the row is written on its own.
            # Closing (not rolling back) keeps the loaded objects readable without a reload.
            if db.session.registry.has():
                db.session.close()
            g.db_writes = False
            save_tracking(row)
        except SQLAlchemyError:
            log.exception("tracking row lost for %s %s", request.method, request.path)
    return response


def init_tracking(app: Flask) -> None:
    """Time and record every request to the API."""
    app.before_request(start_request)
    app.after_request(record_request)
