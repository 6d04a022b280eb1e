"""The Flask app's own classes and routing rules: requests, responses, JSON, no session cookie.

`ImageStore` is the one place the app object is customised: its request, response and JSON
classes are set here and nowhere else (tests/test_app.py holds that).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO, Any, cast

from flask import Flask, Request, Response
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import (
    BadRequest,
    ClientDisconnected,
    HTTPException,
    RequestEntityTooLarge,
)
from werkzeug.formparser import FormDataParser
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import Rule
from werkzeug.utils import cached_property
from werkzeug.wsgi import get_input_stream


class Fields(ImmutableMultiDict):
    """Query and form fields whose `get` of a missing key raises nothing on the way.

    werkzeug's `get` catches the exception that `[]` raises for a missing key, an HTTP error
    built with its description; webargs asks for every field of a schema, most of them absent.
    """

    def get(self, key: Any, default: Any = None, type: Any = None) -> Any:  # type: ignore[override]
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


class RequestBody(io.RawIOBase):
    """The request body as werkzeug guards it, whose read errors are 400s: the body is
    malformed or cut short, which is the client's doing. werkzeug's parsers, and `get_data`,
    only call `read`.

    gunicorn raises its own errors for a malformed chunked body (`InvalidChunkSize`,
    `ChunkMissingTerminator`): otherwise a 500. werkzeug turns a body that ends early (fewer
    bytes than announced, or gunicorn's `NoMoreData`) into a 400 that does not say so; its 413
    of a body over the limit stays.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self.stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self.stream.read(-1 if size is None else size)
        except ClientDisconnected as error:
            message = "The request body is cut short: the client sent less than it announced."
            raise BadRequest(message) from error
        except HTTPException:
            raise
        except Exception as error:
            raise BadRequest(f"The request body is malformed or cut short: {error}") from error


class ApiRequest(Request):
    """Flask's request, with its query and form fields in `Fields`; a malformed form body is a
    400, and so is a body that the server fails to read.

    werkzeug would read a malformed form body as an empty form, and answer too many fields with
    the 413 of a body over the size limit.
    """

    parameter_storage_class = Fields

    @cached_property
    def stream(self) -> IO[bytes]:
        """werkzeug's input stream (within Content-Length and MAX_CONTENT_LENGTH), whose
        server errors are 400s."""
        stream = get_input_stream(self.environ, max_content_length=self.max_content_length)
        return cast(IO[bytes], RequestBody(stream))

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


class NoCookieSession(SessionInterface):
    """No cookie session: clients authenticate on every call, so none is read or set.

    Flask's default derives a signing key for the session cookie on every request.
    """

    def open_session(self, app: Flask, request: Request) -> SessionMixin:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Set no cookie."""


class ImageStore(Flask):
    """Flask, with the classes above, which tells a plain function from an `async def` one
    once, not on every call.

    Flask asks it of every request hook and view, and Flask-HTTPAuth of its callbacks: about
    ten times a request, each an inspection of the function.
    """

    request_class = ApiRequest
    response_class = ApiResponse
    json_provider_class = JSONProvider
    session_interface = NoCookieSession()

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


def trust_proxies(app: Flask) -> None:
    """Believe X-Forwarded-For and -Proto from PROXY_HOPS proxies; with 0, from no one."""
    hops = app.config["PROXY_HOPS"]
    if hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0
        )


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
        twin.provide_automatic_options = rule.provide_automatic_options  # type: ignore[attr-defined]
        app.url_map.add(twin)
