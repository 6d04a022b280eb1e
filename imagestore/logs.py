"""JSON logs: one line per request and one per error (with its traceback), and request ids."""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from flask.logging import default_handler

from .auth import auth

# Every module logs under "imagestore" (Flask's app.logger is that logger too).
APP_LOGGER = "imagestore"
access_log = logging.getLogger("imagestore.access")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming request id is kept when it is this safe to log and echo; otherwise one is made.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}")
# Paths of the health probes: their successful calls are logged at DEBUG, not INFO.
PROBE_PATHS = ("/healthz", "/healthz/", "/readyz", "/readyz/")
PATH_LIMIT = 2048


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON object on one line; extra fields come from `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            entry["request_id"] = request_id()
        entry |= getattr(record, "fields", {})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class StderrHandler(logging.StreamHandler):
    """Write to whatever `sys.stderr` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


handler = StderrHandler()
handler.setFormatter(JSONFormatter())


def request_id() -> str:
    """Return the current request's id: the client's X-Request-ID when sane, else a new one."""
    if "request_id" not in g:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        if SANE_REQUEST_ID.fullmatch(incoming):
            g.request_id = incoming
        else:
            # Time-ordered, as a UUIDv7 is: the millisecond clock (48 bits), then 80 random bits
            # from the process's generator, which every forked worker reseeds. The tracking rows
            # of consecutive calls then sit side by side in the request-id index instead of on a
            # random page each, which halves the cost of inserting them into a large log.
            g.request_id = f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"
    return g.request_id


def start_request() -> None:
    """Fix the request id and note the start time, before any other hook can fail."""
    g.log_started = time.perf_counter()
    request_id()


def log_request(response: Response) -> Response:
    """Return the request id in the response and write the request's one log line."""
    # Once, not per use. Flask types `request` as the Request it stands for, not as a proxy.
    req = request._get_current_object()  # type: ignore[attr-defined]
    context = g._get_current_object()
    response.headers[REQUEST_ID_HEADER] = request_id()
    status = response.status_code
    path = req.path
    if status >= 500:
        level = logging.ERROR
    elif path in PROBE_PATHS and status < 400:
        level = logging.DEBUG  # load balancers probe every few seconds
    else:
        level = logging.INFO
    if access_log.isEnabledFor(level):
        started = context.get("log_started", time.perf_counter())
        user = auth.current_user()
        fields = {
            "method": req.method,
            "path": path[:PATH_LIMIT],
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "user": user.username if user else None,
            "remote_addr": req.remote_addr,
        }
        access_log.log(
            level, "%s %s %s", req.method, fields["path"], status, extra={"fields": fields}
        )
    return response


def init_logging(app: Flask) -> None:
    """Send the app's logs to stderr as JSON lines at LOG_LEVEL; log every request.

    Only the "imagestore" logger is configured, so gunicorn's own loggers keep their output.
    Register this before any other request hook: its before-request runs first and its
    after-request last, so the logged duration covers the whole request.
    """
    logger = logging.getLogger(APP_LOGGER)
    logger.setLevel(app.config["LOG_LEVEL"])  # a number (settings.py)
    logger.removeHandler(default_handler)  # Flask's plain-text one, had it been added already
    if handler not in logger.handlers:
        logger.addHandler(handler)
    app.before_request(start_request)
    app.after_request(log_request)
