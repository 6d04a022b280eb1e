"""The recorder: one row per API call, built from the request and its response, secrets out."""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from flask import Flask, Request, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from ..auth import auth, auth_method
from ..db import db, fetch_one
from ..logs import request_id
from ..models import CurrentUser, fold_name, utcnow
from .writer import JSONText, flush_trackings, save_tracking

log = logging.getLogger("imagestore.tracking")

LOG_PREFIX = "/api/trackings"

# Paths under /api/ that are not recorded: the log itself, and the API's own documentation.
UNTRACKED_PREFIXES = (LOG_PREFIX, "/api/openapi.json", "/api/docs")
# Keys whose values are never stored, matched case-insensitively anywhere in the key...
SECRET_MARKERS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "key",
    "credential",
    "bearer",
    "signature",
    "jwt",
    "session",
)
# ...or as a whole word of it (`auth`, `otp_code`, `X-Pass`, `authCode`): inside other words
# they are common and harmless ("author", "barcode", "compass").
SECRET_WORDS = frozenset({"auth", "pass", "otp", "totp", "hotp", "code"})
KEY_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# JSON text holding none of these needs no redaction: no secret key, no NUL, no surrogate.
# Each marker and word contains one of them ("pass" is in "password", "auth" in
# "authorization"): every search of a response body costs.
UNSAFE_JSON_BYTES = (
    b"pass",
    b"pwd",
    b"secret",
    b"token",
    b"auth",
    b"cookie",
    b"key",
    b"credential",
    b"bearer",
    b"signature",
    b"jwt",
    b"session",
    b"otp",
    b"code",
    b"\\u0000",
    b"\\ud",
)
REDACTED = "[redacted]"
TOO_DEEP = "[nested too deeply]"
# Levels of nesting of a body that are stored; deeper values are replaced by TOO_DEEP.
MAX_DEPTH = 32
TEXT_LIMIT = 512
# Longest response body whose redacted form is remembered (128 of them at most).
CLEANED_BODY_CACHE_LIMIT = 4096
# Largest request body parsed for its row when the view did not parse it already: parsing
# costs a worker time, and only TRACKING_BODY_LIMIT bytes of it are kept.
PARSE_LIMIT = 64 * 1024
# Lengths of the row's short text columns.
METHOD_LIMIT, ENDPOINT_LIMIT, ADDRESS_LIMIT = 16, 1024, 64
USERNAME_OF = "SELECT username FROM users WHERE username_folded = ?"


def is_tracked(path: str) -> bool:
    """Tell whether a request path is recorded."""
    return (path == "/api" or path.startswith("/api/")) and not path.startswith(UNTRACKED_PREFIXES)


@functools.lru_cache(maxsize=1024)
def is_secret(key: str) -> bool:
    """Tell whether a key names something that must not be stored."""
    lowered = key.lower()
    if any(marker in lowered for marker in SECRET_MARKERS):
        return True
    return any(word.lower() in SECRET_WORDS for word in KEY_WORDS.findall(key))


def storable(text: str) -> str:
    """Return text that every database stores: no NUL, no lone surrogate."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode()


def short(text: str | None, limit: int) -> str | None:
    """Return storable text cut to `limit` characters; None for no text."""
    return storable(text)[:limit] if text else None


def redact_text(text: str) -> str:
    """Return storable text with the values of secret-looking query parameters of a URL redacted.

    Page links (`next`, `previous`) repeat the query of the request, secrets included.
    """
    text = storable(text)
    base, mark, query = text.partition("?")
    if not mark or "=" not in query:
        return text
    query, hash_mark, fragment = query.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(is_secret(name) for name, _ in pairs):
        return text
    query = urlencode([(name, REDACTED if is_secret(name) else value) for name, value in pairs])
    return f"{base}?{query}{hash_mark}{fragment}"


def redact(value: Any, depth: int = 0) -> Any:
    """Copy a JSON-like value with secrets replaced, storable by every database.

    Values of secret-looking keys and of secret-looking URL query parameters are redacted;
    nesting is kept to MAX_DEPTH levels; numbers that are not finite become text (PostgreSQL's
    JSON has none).
    """
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {
            storable(str(key)): REDACTED if is_secret(str(key)) else redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, depth + 1) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
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


def request_data(req: Request, response: Response, user: CurrentUser | None) -> tuple[Any, bool]:
    """Return the request body as JSON-like data, and whether it was left out for its size.

    JSON is parsed, a form becomes its fields and file summaries. Nothing is read of the body
    of a request that did not authenticate (anyone could send megabytes), nor of a body larger
    than PARSE_LIMIT that the view did not parse itself.
    """
    if response.status_code == 413 or user is None:
        return None, False
    size = req.content_length
    if not size and "chunked" not in req.headers.get("Transfer-Encoding", ""):
        return None, False  # no body: nothing to parse
    parsed = "form" in req.__dict__  # werkzeug keeps a parsed form there
    if not parsed and (size is None or size > PARSE_LIMIT):
        return f"[a body of {size or 'unknown'} bytes, not stored]", True
    if req.is_json:
        return req.get_json(silent=True), False
    try:
        form, files = req.form, req.files
    except HTTPException:
        return None, False
    if not form and not files:
        return None, False
    data = flatten(form)
    for key, uploads in files.lists():
        summaries = [file_summary(upload) for upload in uploads]
        data[key] = summaries[0] if len(summaries) == 1 else summaries
    return data, False


def capped(value: Any, limit: int) -> tuple[Any, bool]:
    """Return the value as JSON text, or that text cut to `limit` characters when longer (a
    string, stored as one); and whether it was cut."""
    if value is None:
        return None, False
    text = json.dumps(value, default=str)  # ASCII: a character is a byte
    if len(text) <= limit:
        return JSONText(text), False
    return text[:limit], True


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
    except (ValueError, RecursionError):
        return None, False
    return capped(redact(body), limit)


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
    # Only what is kept is searched: a key or link past the cut is not stored anyway.
    if needs_cleaning(text[:limit]):
        clean = remembered_body if len(text) <= CLEANED_BODY_CACHE_LIMIT else cleaned_body
        return clean(text, limit)
    if len(text) > limit:
        return text[:limit].decode(errors="ignore"), True
    return JSONText(text.decode()), False


def stored_username(req: Request, user: CurrentUser | None) -> str | None:
    """Return who the request is from: the user, or the user a failed Basic login named.

    A failed login is recorded under the user's own name, however its case was typed; a name
    that is no user's is not kept: it may be a password or a token typed in the wrong field.
    """
    if user is not None:
        return user.username
    attempted = req.authorization.username if req.authorization else None
    if not attempted:
        return None
    row = fetch_one(db.engine, USERNAME_OF, (fold_name(attempted),))
    return row[0] if row is not None else REDACTED


def describe(req: Request, response: Response, details: bool = True) -> dict[str, Any]:
    """Build the tracking row of a request, redacted and capped.

    Without `details` the row holds who, what, when, the status and the duration only: what is
    written when building the whole row failed. This runs on every API call: what the request
    has not parsed already (query, user agent, Authorization header) is read as plain text.
    """
    user = auth.current_user()
    started = g.get("tracking_started", time.perf_counter())
    row = {
        "user_id": user.id if user else None,
        "username": stored_username(req, user) if details else (user.username if user else None),
        "auth_method": auth_method(req),
        "method": short(req.method, METHOD_LIMIT),
        "endpoint": short(req.path, ENDPOINT_LIMIT),
        "status_code": response.status_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "remote_addr": short(req.remote_addr, ADDRESS_LIMIT),
        "truncated": False,
        "created_at": utcnow(),
        "request_id": request_id(),
    }
    if not details:
        return row
    limit = current_app.config["TRACKING_BODY_LIMIT"]
    args = flatten(req.args) if req.query_string else None
    query, query_cut = capped(redact(args) or None, limit)
    data, data_left_out = request_data(req, response, user)
    data, data_cut = capped(redact(data), limit)
    body, body_cut = stored_response(response, limit)
    agent = req.headers.get("User-Agent", "")
    row |= {
        "query": query,
        "data": data,
        "user_agent": short(agent, TEXT_LIMIT),
        "headers": {
            key: REDACTED if is_secret(key) else value
            for key, value in response.headers.items()
            if key.lower() != "set-cookie"
        },
        "response": body,
        "truncated": query_cut or data_left_out or data_cut or body_cut or len(agent) > TEXT_LIMIT,
    }
    return row


def start_request() -> None:
    """Note when the request started; before a read of the log, let it see this process's rows."""
    g.tracking_started = time.perf_counter()
    if request.path.startswith(LOG_PREFIX):
        flush_trackings()  # before any read of the log begins


def record_request(response: Response) -> Response:
    """Store one tracking row per API call, failed calls included; never fail the response.

    Should building the whole row fail, a row of the bare facts is stored instead; should
    storing fail, the loss is logged. Either way the response, and its log line, go out.
    """
    if not (current_app.config["TRACKING_ENABLED"] and is_tracked(request.path)):
        return response
    # Flask types the `request` proxy as the Request it stands for, without the proxy's methods.
    req = request._get_current_object()  # type: ignore[attr-defined]
    try:
        try:
            row = describe(req, response)
        except Exception:
            log.exception("tracking row of %s %s kept to its bare facts", req.method, req.path)
            row = describe(req, response, details=False)
        # Whatever the view left uncommitted is abandoned; the row is written on its own.
        # Closing (not rolling back) keeps the loaded objects readable without a reload.
        if db.session.registry.has():
            db.session.close()
        save_tracking(row)
    except Exception:
        log.exception("tracking row lost for %s %s", req.method, req.path[:ENDPOINT_LIMIT])
    return response


def init_tracking(app: Flask) -> None:
    """Time and record every request to the API."""
    app.before_request(start_request)
    app.after_request(record_request)
