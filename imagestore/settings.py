"""The app's settings: read from their sources, derived from one another, checked at startup.

Defaults are in `imagestore/config.py`, then `instance/config.py` and `IMAGESTORE_*` variables
override them. A setting the service cannot work with stops the app at startup, naming it.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask

# Settings read from the environment as their exact text, not as JSON (a key "123").
TEXT_SETTINGS = (
    "SECRET_KEY",
    "DATABASE_URL",
    "MEDIA_FOLDER",
    "PASSWORD_HASH_METHOD",
    "STORAGE_URL",
    "S3_ENDPOINT_URL",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "RATELIMIT_STORAGE_URL",
    "RATELIMIT_KEY_PREFIX",
)
# Settings that are whole numbers, and the least each may be.
WHOLE_NUMBERS = {
    "PROXY_HOPS": 0,
    "LOGIN_FREE_FAILURES_PER_USER": 0,
    "LOGIN_FREE_FAILURES_PER_ADDRESS": 0,
    "LOGIN_FAILURE_WINDOW_SECONDS": 1,
    "LOGIN_LOCK_SECONDS": 1,
    "LOGIN_MAX_LOCK_SECONDS": 1,
}
# Settings that are numbers, and the range each must be in.
NUMBERS = {
    "S3_PRESIGNED_DOWNLOAD_SECONDS": (0, 7 * 24 * 3600),  # SigV4 presigned URLs live a week
    "S3_TIMEOUT_SECONDS": (0.1, 3600),
    "MAX_DECODED_MB": (1, 1024 * 1024),
    "MAX_REQUEST_DECODED_MB": (1, 1024 * 1024),
}


def load_settings(app: Flask, test_config: Mapping[str, Any] | None) -> None:
    """Read the settings into `app.config`, derive the others and check them all.

    Tests pass `test_config`, which replaces the instance's config file and the environment.
    """
    app.config.from_object("imagestore.config")
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("IMAGESTORE")
        # Values are parsed as JSON; text settings keep the variable's exact text.
        for name in TEXT_SETTINGS:
            if f"IMAGESTORE_{name}" in os.environ:
                app.config[name] = os.environ[f"IMAGESTORE_{name}"]
    else:
        app.config.update(test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    derive_settings(app)
    check_settings(app.config)


def derive_settings(app: Flask) -> None:
    """Fill in the settings computed from others: database URI, secret key, folders, limits."""
    config = app.config
    config["SQLALCHEMY_DATABASE_URI"] = database_uri(config["DATABASE_URL"])
    if config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True})
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = instance_secret(app.instance_path)
    if not config["MEDIA_FOLDER"]:
        config["MEDIA_FOLDER"] = os.path.join(app.instance_path, "media")
    if not config["TRACKING_SPOOL_FOLDER"]:
        config["TRACKING_SPOOL_FOLDER"] = os.path.join(app.instance_path, "tracking-spool")
    config["MAX_CONTENT_LENGTH"] = int(float(config["MAX_UPLOAD_MB"]) * 1024 * 1024)
    config["LOG_LEVEL"] = log_level(config["LOG_LEVEL"])


def check_settings(config: Mapping[str, Any]) -> None:
    """Raise ValueError, naming the setting, for any value the service cannot work with."""
    for name, least in WHOLE_NUMBERS.items():
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be a whole number, {least} or more, not {value!r}")
    for name, (lowest, highest) in NUMBERS.items():
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, not {value!r}")
        if not lowest <= value <= highest:
            raise ValueError(f"{name} must be between {lowest} and {highest}, not {value!r}")
    if config["LOGIN_FAILURE_WINDOW_SECONDS"] < config["LOGIN_MAX_LOCK_SECONDS"]:
        raise ValueError("LOGIN_FAILURE_WINDOW_SECONDS must be at least LOGIN_MAX_LOCK_SECONDS")
    if config["LOGIN_MAX_LOCK_SECONDS"] < config["LOGIN_LOCK_SECONDS"]:
        raise ValueError("LOGIN_MAX_LOCK_SECONDS must be at least LOGIN_LOCK_SECONDS")


def log_level(value: str | int) -> int:
    """Return the numeric logging level of a setting such as "INFO"; refuse unknown names."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    level = logging.getLevelNamesMapping().get(str(value).strip().upper())
    if level is None:
        raise ValueError(
            f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}"
        )
    return level


def database_uri(url: str) -> str:
    """Return the SQLAlchemy URI of a database URL; PostgreSQL goes through psycopg 3."""
    if not url:
        return "sqlite:///imagestore.sqlite"  # relative: inside the instance folder
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def instance_secret(instance_path: str) -> str:
    """Return the secret key kept in the instance folder, creating it the first time."""
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        # Several workers may start at once: write aside, then link, which fails if one won.
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.remove(temporary)
    with open(path) as file:
        return file.read().strip()
