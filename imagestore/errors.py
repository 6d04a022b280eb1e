"""One JSON shape for every error: RFC 9457 problem details with `detail` always present."""

import errno
import json
import logging
from typing import Any, NoReturn

from flask import Flask, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    HTTPException,
    RequestEntityTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from werkzeug.wrappers import Response

from .db import db

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class UnsupportedBody(UnsupportedMediaType):
    """415: a request body in a media type the route does not read; says which it reads.

    `Accept-Post` and `Accept-Patch` (RFC 5789) list them too.
    """

    def __init__(self, sent: str, accepted: tuple[str, ...]) -> None:
        what = f"in {sent}" if sent else "without a Content-Type"
        super().__init__(f"A body {what} is not read here: send {' or '.join(accepted)}.")
        self.accepted = accepted
        self.data = {"extra": {"accepted": list(accepted)}}

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        listed = ", ".join(self.accepted)
        return [
            *super().get_headers(*args, **kwargs),
            ("Accept-Post", listed),
            ("Accept-Patch", listed),
        ]


class InsufficientStorage(HTTPException):
    """507: the server has no room left to store the request's data."""

    code = 507
    description = "The server has no room left to store the data."


def error_body(error: HTTPException) -> dict[str, Any]:
    """Return the problem+json body that every error response uses."""
    messages = (getattr(error, "data", None) or {}).get("messages")
    detail = error.description
    if messages and detail == type(error).description:
        detail = summarize(messages)  # webargs aborts on bad JSON without a description
    body = {"type": "about:blank", "title": error.name, "status": error.code, "detail": detail}
    if messages:
        body["errors"] = stringify_keys(messages)
    return body | (getattr(error, "data", None) or {}).get("extra", {})


def stringify_keys(messages: Any) -> Any:
    """Turn every key of nested error messages into a string (marshmallow may use ints)."""
    if isinstance(messages, dict):
        return {str(key): stringify_keys(value) for key, value in messages.items()}
    return messages


def problem_response(error: HTTPException) -> Response:
    """Render an HTTP error as problem+json, keeping its headers (Allow, WWW-Authenticate)."""
    response = error.get_response()
    response.set_data(json.dumps(error_body(error)))
    response.content_type = PROBLEM_JSON
    return response


def invalid_input(messages: dict, detail: str | None = None) -> NoReturn:
    """Abort with a 400 that lists the field messages, keyed by location then field."""
    messages = name_body_location(messages)
    error = BadRequest(description=detail or summarize(messages))
    # `data` carries the body's extra members, as webargs does; werkzeug declares no such field.
    error.data = {"messages": messages}  # type: ignore[attr-defined]
    raise error


def name_body_location(messages: dict) -> dict:
    """Key a JSON-or-form body's messages by what the client sent: `json` or `form`."""
    if "json_or_form" not in messages:
        return messages
    sent = "json" if request.is_json else "form"
    return {sent if key == "json_or_form" else key: value for key, value in messages.items()}


def abort_with(error_class: type[HTTPException], detail: str, **extra: Any) -> NoReturn:
    """Abort with an HTTP error whose body also carries `extra` members (such as ids)."""
    error = error_class(description=detail)
    error.data = {"extra": extra}  # type: ignore[attr-defined]  # as in invalid_input
    raise error


def bad_field(location: str, field: str, message: str) -> NoReturn:
    """Abort with a 400 that names one field, the way input validation reports it."""
    invalid_input({location: {field: [message]}})


def summarize(messages: Any, path: str = "") -> str:
    """Flatten field messages into one readable sentence for `detail`."""
    if isinstance(messages, dict):
        parts = [
            summarize(value, f"{path}.{key}" if path else str(key))
            for key, value in messages.items()
        ]
        return " ".join(parts)
    if isinstance(messages, list) and all(isinstance(item, str) for item in messages):
        return f"{path}: {' '.join(messages)}"
    if isinstance(messages, list):
        return " ".join(summarize(item, path) for item in messages)
    return f"{path}: {messages}"


def refuse_nul_characters() -> None:
    """Answer 400 for a NUL character in the path or query: no database stores it in text."""
    query = request.query_string
    # The query is decoded only when it may hold one: "%00" or the raw byte.
    maybe = b"%00" in query or b"\x00" in query
    if "\x00" in request.path or (
        maybe and any("\x00" in key + value for key, value in request.args.items(multi=True))
    ):
        raise BadRequest("The URL must not contain NUL characters.")


def refuse_invalid_host() -> None:
    """Answer 400 for a Host header that is not a host name or address (with a port or not):
    the links of every answer are built on it. A request without one (HTTP/1.0) gets the
    server's address."""
    if not request.host and "Host" in request.headers:
        given = request.headers["Host"][:100]
        raise BadRequest(f"The Host header {given!r} is not a host name or address.")


def register_error_handlers(app: Flask) -> None:
    """Answer every error, expected or not, with problem+json; refuse URLs with NUL characters
    and Host headers that are no host."""
    app.before_request(refuse_nul_characters)
    app.before_request(refuse_invalid_host)

    # Unexpected exceptions reach this handler as a 500 (Flask logs their traceback first).
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        # Flask hands an HTTPException without a code back as the response, never to here.
        if error.code is not None and error.code >= 500:
            db.session.rollback()  # after-request hooks (log, tracking) read the user again
        return problem_response(error)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> Response:
        limit = app.config["MAX_UPLOAD_MB"]
        message = f"The request is larger than the upload limit of {limit} MB."
        return problem_response(RequestEntityTooLarge(message))

    @app.errorhandler(OSError)
    def storage_error(error: OSError) -> Response:
        # Only the file store does I/O in a request: a full disk is 507, anything else 503.
        db.session.rollback()
        log.exception("file store error", exc_info=error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return problem_response(InsufficientStorage("The file store is full."))
        return problem_response(ServiceUnavailable("The file store failed; try again later."))

    @app.errorhandler(IntegrityError)
    def integrity_error(error: IntegrityError) -> Response:
        # A concurrent request won a uniqueness race; the client can retry or pick another name.
        db.session.rollback()
        log.warning("integrity error: %s", error.orig)
        return problem_response(Conflict("The change conflicts with data saved meanwhile."))

    @app.errorhandler(StaleDataError)
    def stale_data(error: StaleDataError) -> Response:
        # A concurrent request changed or deleted the rows this one was changing.
        db.session.rollback()
        log.warning("stale data: %s", error)
        return problem_response(Conflict("Another request changed the same data; try again."))
