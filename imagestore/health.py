"""Blueprint "health": probes for load balancers and orchestrators; no auth, not tracked."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from werkzeug.exceptions import ServiceUnavailable

from .db import db
from .errors import PROBLEM_JSON, error_body
from .storage import get_storage

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    """Say the process is alive; touches neither the database nor the file store."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> dict[str, object] | Response:
    """Say whether the database and the file store answer; 503 naming what failed."""
    checks = {"database": check_database(), "storage": check_storage()}
    failed = [name for name, state in checks.items() if state != "ok"]
    if not failed:
        return {"status": "ready", "checks": checks}
    error = ServiceUnavailable(f"Not ready: {' and '.join(failed)} unreachable.")
    response = jsonify(error_body(error) | {"checks": checks})
    response.status_code = error.code
    response.content_type = PROBLEM_JSON
    return response


def check_database() -> str:
    """Run a trivial query on a pooled connection; "ok" or "failed"."""
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        log.warning("readiness: database check failed", exc_info=True)
        return "failed"
    return "ok"


def check_storage() -> str:
    """Ask the file store whether it can be used; "ok" or "failed"."""
    try:
        get_storage().check()
    except Exception:
        log.warning("readiness: storage check failed", exc_info=True)
        return "failed"
    return "ok"
