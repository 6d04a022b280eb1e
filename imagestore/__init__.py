"""imagestore: a REST service for images, their tags and a log of every API call."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, g, has_request_context
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import Rule

from . import api, bulk, health, images, tags, tokens, tracking  # noqa: F401 (bulk: routes)
from .auth import init_auth
from .cli import users_cli
from .db_cli import AppCommands
from .errors import register_error_handlers
from .extensions import db
from .imaging import return_freed_memory
from .logs import init_logging
from .openapi import init_openapi
from .security import init_security
from .storage import init_storage, number_setting
from .storage_check import storage_cli
from .tokens_cli import tokens_cli
from .trackings_cli import trackings_cli

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


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; tests pass a dict that replaces instance and env config."""
    instance_path = os.environ.get("IMAGESTORE_INSTANCE_PATH") or None
    app = ImageStore(
        __name__,
        instance_path=instance_path and os.path.abspath(instance_path),
        instance_relative_config=True,
        static_folder=None,
    )
    app.cli = AppCommands(app)
    app.config.from_object("imagestore.config")
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("IMAGESTORE")
        # Values are parsed as JSON; text settings keep the variable's exact text (a key "123").
        for name in TEXT_SETTINGS:
            if f"IMAGESTORE_{name}" in os.environ:
                app.config[name] = os.environ[f"IMAGESTORE_{name}"]
    else:
        app.config.update(test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    derive_settings(app)
    return_freed_memory()
    trust_proxies(app)
    init_logging(app)  # first: its hooks wrap every other one

    app.session_interface = NoCookieSession()
    db.init_app(app)
    init_auth(app)
    init_storage(app)
    register_error_handlers(app)
    tracking.init_tracking(app)
    init_security(app)  # after tracking: its response headers are the ones recorded
    for blueprint in (api.bp, health.bp, images.bp, tags.bp, tokens.bp, tracking.bp):
        app.register_blueprint(blueprint)
    init_openapi(app)
    answer_both_slashes(app)
    app.cli.add_command(users_cli)
    app.cli.add_command(storage_cli)
    app.cli.add_command(trackings_cli)
    app.cli.add_command(tokens_cli)
    return app


class Fields(ImmutableMultiDict):
    """Query and form fields whose `get` of a missing key raises nothing on the way.

    werkzeug's `get` catches the exception that `[]` raises for a missing key, an HTTP error
    built with its description; webargs asks for every field of a schema, most of them absent.
    """

    def get(self, key: Any, default: Any = None, type: Any = None) -> Any:
        if key not in self:
            return default
        return super().get(key, default, type)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with keys in the order written and a body too deep to parse invalid (400).

    Python's parser raises RecursionError for nesting deeper than the interpreter's recursion
    limit, which would otherwise be a 500.
    """

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON body is nested too deeply") from None


class ApiRequest(Request):
    """Flask's request, with its query and form fields in `Fields`; a malformed form body is a 400.

    werkzeug would read a malformed form body as an empty form, and answer too many fields with
    the 413 of a body over the size limit.
    """

    parameter_storage_class = Fields

    def make_form_data_parser(self) -> FormDataParser:
        parser = super().make_form_data_parser()
        parser.silent = False
        return parser

    def _load_form_data(self) -> None:
        try:
            super()._load_form_data()
        except ValueError:
            raise BadRequest("The form body is malformed.") from None
        except RequestEntityTooLarge:
            if (self.content_length or 0) > (self.max_content_length or 0):
                raise
            # Within the size limit: too many form fields, or one too long (werkzeug says 413).
            raise BadRequest(
                f"The form has more than {self.max_form_parts} fields, or a field"
                f" over {self.max_form_memory_size} bytes."
            ) from None


class ApiResponse(Response):
    """Flask's response; a 204 has no body, so it has no Content-Type either."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.status_code == 204:
            del self.headers["Content-Type"]


class ImageStore(Flask):
    """Flask, which tells a plain function from an `async def` one once, not on every call.

    Flask asks it of every request hook and view, and Flask-HTTPAuth of its callbacks: about
    ten times a request, each an inspection of the function. Its requests are `ApiRequest`s,
    its responses `ApiResponse`s and its JSON is `JSONProvider`'s.
    """

    request_class = ApiRequest
    response_class = ApiResponse
    json_provider_class = JSONProvider

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sync_functions: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        sync = self.sync_functions.get(func)
        if sync is None:
            if len(self.sync_functions) >= 1024:  # functions made per request: no unbounded growth
                self.sync_functions.clear()
            sync = self.sync_functions[func] = super().ensure_sync(func)
        return sync


class NoCookieSession(SessionInterface):
    """No cookie session: clients authenticate on every call, so none is read or set.

    Flask's default derives a signing key for the session cookie on every request.
    """

    def open_session(self, app: Flask, request: Request) -> SessionMixin:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Set no cookie."""


def trust_proxies(app: Flask) -> None:
    """Believe X-Forwarded-For and -Proto from PROXY_HOPS proxies; with 0, from no one."""
    hops = app.config["PROXY_HOPS"]
    if isinstance(hops, bool) or not isinstance(hops, int) or hops < 0:
        raise ValueError(f"PROXY_HOPS must be a whole number, 0 or more, not {hops!r}")
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0)


def answer_both_slashes(app: Flask) -> None:
    """Give every route a twin with or without the trailing slash: both answer, no redirect.

    Werkzeug's own `strict_slashes=False` matching loses the 405 of a slash-less path.
    """
    for rule in list(app.url_map.iter_rules()):
        path = rule.rule
        if path == "/":
            continue  # `/` has no twin
        twin = Rule(
            path.removesuffix("/") if path.endswith("/") else f"{path}/",
            endpoint=rule.endpoint,
            methods=rule.methods,
        )
        twin.provide_automatic_options = rule.provide_automatic_options
        app.url_map.add(twin)


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
    for name in ("MAX_DECODED_MB", "MAX_REQUEST_DECODED_MB"):
        number_setting(config, name, 1, 1024 * 1024)


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


@event.listens_for(Engine, "connect")
def configure_sqlite(connection: Any, record: Any) -> None:
    """Turn on WAL, a busy timeout and foreign keys for every SQLite connection."""
    if isinstance(connection, sqlite3.Connection):
        # SQLAlchemy emits BEGIN itself (below) instead of the driver's implicit one.
        connection.isolation_level = None
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


@event.listens_for(Engine, "begin")
def begin_sqlite(connection: Connection) -> None:
    """Take SQLite's write lock at BEGIN in transactions that will write.

    A transaction that reads and then writes cannot wait for the lock when another connection
    wrote meanwhile: it fails at once with "database is locked". `BEGIN IMMEDIATE` waits (busy
    timeout) at the start instead. Views call `begin_writes()` before their writing
    transaction; reads, and the tracking insert (whose first statement writes), keep `BEGIN`.
    """
    if connection.dialect.name != "sqlite":
        return
    writes = not has_request_context() or g.get("db_writes", False)
    # Straight to the driver: it runs at least once per request, SQLAlchemy's path costs more.
    connection.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
