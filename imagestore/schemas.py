"""Marshmallow schemas: request bodies, query filters and responses, and the webargs parser."""

import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import Request
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates_schema,
)
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from .errors import UnsupportedBody, invalid_input
from .models import fold_name

TAG_NAME_MAX = 50
# Tag names one field takes (a filter, an upload's tags, a bulk change): each is a condition of
# the query, and SQLite refuses expressions nested a thousand deep.
TAG_NAMES_MAX = 100
TOKEN_DAYS_DEFAULT = 30
TOKEN_DAYS_MAX = 365
# Unicode white space; Python's \s also matches the separators U+001C..U+001F, control characters.
WHITESPACE_RUN = re.compile(r"[^\S\x1c-\x1f]+")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Invisible characters that emoji are made of: the zero-width joiner and non-joiner (family and
# profession emoji) and the tag characters of subdivision flags. Variation selectors are marks.
EMOJI_JOINERS = frozenset({"\u200c", "\u200d", *map(chr, range(0xE0020, 0xE0080))})
# The media types of request bodies that carry fields, as the old service's parsers took them.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
BODY_TYPES = ("application/json", *FORM_TYPES)


class Parser(FlaskParser):
    """webargs parser: bad input is a 400 and views receive `query_args`, `json_args`, ..."""

    DEFAULT_VALIDATION_STATUS = 400
    USE_ARGS_POSITIONAL = False
    # Bodies (fields and files) refuse what their schema does not know; queries ignore it.
    # (webargs declares it an instance attribute, so it cannot be a ClassVar here.)
    DEFAULT_UNKNOWN_BY_LOCATION = {  # noqa: RUF012
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "files": None,
    }

    def _raw_load_json(self, req: Any) -> Any:
        """Parse a JSON body; one nested too deeply for Python's parser is invalid JSON, a 400."""
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            invalid_input({"json": ["Invalid JSON body: it is nested too deeply."]})

    def load_json_or_form(self, req: Any, schema: Schema) -> Any:
        """Read a body's fields from JSON or a form, as its Content-Type says; 415 otherwise.

        A body in another media type, or with none, would otherwise read as no fields at all and
        change nothing. No body at all has no fields.
        """
        if is_json_request(req):
            return self.load_json(req, schema)
        if req.mimetype in FORM_TYPES:
            return self.load_form(req, schema)
        if not req.content_length and "chunked" not in req.headers.get("Transfer-Encoding", ""):
            return core.missing
        raise UnsupportedBody(req.mimetype, BODY_TYPES)

    def load_files(self, req: Any, schema: Schema) -> Any:
        """Read a multipart body's files; a body in another media type is a 415."""
        if req.mimetype != "multipart/form-data":
            raise UnsupportedBody(req.mimetype, ("multipart/form-data",))
        return super().load_files(req, schema)

    def handle_error(
        self,
        error: ValidationError,
        req: Request,
        schema: Schema,
        *,
        error_status_code: int | None,
        error_headers: Mapping[str, str] | None,
    ) -> NoReturn:
        """Abort with the field messages; the error handler renders them as problem+json."""
        invalid_input(error.messages_dict)  # webargs keys them by location

    def use_args(self, argmap: Any, req: Any = None, **kwargs: Any) -> Callable:
        """Parse `argmap` into the view's arguments, and note it for the OpenAPI document."""
        decorator = super().use_args(argmap, req, **kwargs)
        location = kwargs.get("location") or self.location

        def note_inputs(view: Callable) -> Callable:
            wrapper = decorator(view)
            inputs = (*getattr(view, "openapi_inputs", ()), (location, argmap))
            wrapper.openapi_inputs = inputs  # type: ignore[attr-defined]  # a function attribute
            return wrapper

        return note_inputs


parser = Parser()
use_args = parser.use_args


def utc_text(value: datetime) -> str:
    """Write a timestamp in UTC as ISO 8601 with a `Z`: 2026-11-27T10:00:00.123456Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Timestamp(fields.DateTime):
    """A UTC timestamp written as ISO 8601 with a `Z`: 2026-11-27T10:00:00.123456Z."""

    def _serialize(
        self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any
    ) -> str | None:
        return None if value is None else utc_text(value)


def normalize_tag_name(value: str) -> str:
    """Return a tag name in its stored form, or raise ValidationError saying what is wrong."""
    name = WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", value)).strip()
    if not name:
        raise ValidationError("Tag name must not be empty.")
    if len(name) > TAG_NAME_MAX:
        raise ValidationError(f"Tag name must be at most {TAG_NAME_MAX} characters.")
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise ValidationError("Tag name must not contain control characters.")
    for char in name:
        if unicodedata.category(char).startswith("C") and char not in EMOJI_JOINERS:
            raise ValidationError(
                f"Tag name must not contain invisible characters such as U+{ord(char):04X}"
                " (only those that join emoji)."
            )
    if "," in name or "/" in name:
        raise ValidationError("Tag name must not contain ',' or '/'.")
    if name.strip(".") == "":
        raise ValidationError("Tag name must not be only dots.")
    return name


class TagName(fields.String):
    """A tag name: whitespace trimmed and collapsed, NFC, 1 to 50 characters, no ',' or '/'."""

    @staticmethod
    def openapi_schema(inferred: dict[str, Any]) -> dict[str, Any]:
        """Describe a tag name in the OpenAPI document."""
        rules = (
            "1 to 50 characters once whitespace is trimmed; no ',', '/', control or invisible"
            " characters (but those that join emoji)."
        )
        description = " ".join(filter(None, [inferred.get("description"), rules]))
        return inferred | {"maxLength": TAG_NAME_MAX, "description": description}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        return normalize_tag_name(super()._deserialize(value, attr, data, **kwargs))


class TagNames(fields.List):
    """Tag names as a list, repeated fields (`tags=a&tags=b`) or a comma list (`tags=a,b`)."""

    @staticmethod
    def openapi_schema(inferred: dict[str, Any]) -> dict[str, Any]:
        """Describe tag names in the OpenAPI document: a list, or one comma-separated string."""
        one_string = {
            "type": "string",
            "description": f"At most {TAG_NAMES_MAX} tag names, separated by commas.",
        }
        return {"anyOf": [inferred | {"maxItems": TAG_NAMES_MAX}, one_string]}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(TagName(), **kwargs)

    # marshmallow types a list's items as optional; a tag name never is None.
    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise self.make_error("invalid")
        pieces: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValidationError("Each tag must be a string.")
            pieces.extend(piece for piece in item.split(",") if piece.strip())
        if len(pieces) > TAG_NAMES_MAX:
            raise ValidationError(f"Give at most {TAG_NAMES_MAX} tag names.")
        names = super()._deserialize(pieces, attr, data, **kwargs)
        unique = {fold_name(name): name for name in reversed(names)}
        return list(reversed(unique.values()))


class UpperString(fields.String):
    """A string compared in upper case, such as an HTTP method."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        return super()._deserialize(value, attr, data, **kwargs).upper()


class Input(Schema):
    """A request body: a field it does not know is refused, naming it (it may be a misspelling).

    The read-only fields of the resource it changes, as a GET shows them, are known and
    ignored: a script may send back what it fetched, with its changes.
    """

    read_only: frozenset[str] = frozenset()

    class Meta:
        unknown = RAISE

    @pre_load
    def drop_read_only(self, data: Any, **kwargs: Any) -> Any:
        if not self.read_only or not isinstance(data, Mapping):
            return data
        return {key: data[key] for key in data if key not in self.read_only}


def sha256_hex(text: str) -> str | None:
    """Return a SHA-256 given in hexadecimal, any case, in lower case; None if it is not one."""
    digest = text.lower()
    return digest if SHA256_HEX.fullmatch(digest) else None


class Checksum(fields.String):
    """A SHA-256 in hexadecimal, any case; loaded in lower case."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        digest = sha256_hex(super()._deserialize(value, attr, data, **kwargs))
        if digest is None:
            raise ValidationError("Must be 64 hexadecimal digits.")
        return digest


class Checksums(fields.List):
    """A list of `Checksum`s, as a client asks which of its files are stored: a thousand at
    once. Well-formed lists are checked in one pass; any other goes through `Checksum` item by
    item, which names the bad ones."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Checksum(), **kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[Any]:
        if isinstance(value, list) and all(type(item) is str for item in value):
            digests = [sha256_hex(item) for item in value]
            if None not in digests:
                return digests
        return super()._deserialize(value, attr, data, **kwargs)


class Cursor(fields.Integer):
    """A keyset cursor: the id past which a list goes on; empty (or 0) starts at its first row."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        if value == "":
            return 0
        return super()._deserialize(value, attr, data, **kwargs)


class Creator(fields.Function):
    """The name of the user who created the object; null once that user is deleted."""

    def __init__(self) -> None:
        super().__init__(
            lambda row: row.created_by.username if row.created_by else None,
            allow_none=True,
            metadata={"type": "string"},
        )


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Integer(load_default=10, validate=validate.Range(min=1, max=100))


class DatedPageArgs(PageArgs):
    """Page arguments of a list whose rows are filtered by the day they were created."""

    start_date = fields.Date(metadata={"description": "Created on or after this day (UTC)."})
    end_date = fields.Date(metadata={"description": "Created on or before this day (UTC)."})

    @validates_schema
    def dates_in_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and end < start:
            raise ValidationError("Must not be before start_date.", field_name="end_date")


# Tags


class TagSchema(Schema):
    name = fields.String()
    image_count = fields.Integer()
    created_by = Creator()
    created_at = Timestamp()


class TagInput(Input):
    read_only = frozenset(TagSchema().fields) - {"name"}

    name = TagName(required=True)


TAG_ORDERINGS = ["name", "-name", "image_count", "-image_count", "created_at", "-created_at"]


class TagFilters(PageArgs):
    name = fields.String(validate=validate.Length(max=200))
    ordering = fields.String(load_default="name", validate=validate.OneOf(TAG_ORDERINGS))


class TagMerge(Input):
    into = TagName(required=True, metadata={"description": "The tag that takes the images."})


# Trackings


class TrackingSchema(Schema):
    id = fields.Integer()
    user = fields.Integer(attribute="user_id", allow_none=True)
    username = fields.String(allow_none=True)
    auth_method = fields.String(allow_none=True)
    method = fields.String()
    endpoint = fields.String()
    query = fields.Raw()
    data = fields.Raw()
    status_code = fields.Integer()
    duration_ms = fields.Float()
    remote_addr = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    headers = fields.Raw()
    response = fields.Raw()
    truncated = fields.Boolean()
    created_at = Timestamp()
    request_id = fields.String(allow_none=True)


class TrackingFilters(DatedPageArgs):
    cursor = Cursor(
        validate=validate.Range(min=0, max=2**63 - 1),
        metadata={
            "description": "Keyset paging: rows older than this id, no count (`next` goes on)."
        },
    )
    user = fields.String(validate=validate.Length(min=1, max=150))
    endpoint = fields.String(validate=validate.Length(min=1, max=1024))
    method = UpperString(
        validate=validate.OneOf(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    )
    status_code = fields.Integer(validate=validate.Range(min=100, max=599))
    request_id = fields.String(validate=validate.Length(min=1, max=128))


# Tokens


class TokenSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    username = fields.String(
        attribute="user.username", metadata={"description": "The user the token belongs to."}
    )
    created_at = Timestamp()
    expires_at = Timestamp()


class TokenFilters(PageArgs):
    user = fields.String(
        validate=validate.Length(min=1, max=150),
        metadata={
            "description": "The tokens of this user (any case); only admins may name another."
        },
    )


class NewTokenSchema(TokenSchema):
    """A token just created: the only time its secret is shown."""

    token = fields.String()


def printable(value: str) -> None:
    """Refuse text with control characters (PostgreSQL stores no NUL)."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValidationError("Must not contain control characters.")


class TokenInput(Input):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=100), printable])
    expires_in_days = fields.Integer(
        load_default=TOKEN_DAYS_DEFAULT, validate=validate.Range(min=1, max=TOKEN_DAYS_MAX)
    )


# The API root


class RootSchema(Schema):
    """The links `GET /api/` answers: every collection, and the API's documentation."""

    images = fields.Url()
    tags = fields.Url()
    trackings = fields.Url()
    tokens = fields.Url()
    me = fields.Url(metadata={"description": "Who the credentials are for."})
    docs = fields.Url(metadata={"description": "Swagger UI: try every route in a browser."})
    openapi = fields.Url(metadata={"description": "This OpenAPI document."})


class MeSchema(Schema):
    """The user the request's credentials are for, and how they were given."""

    id = fields.Integer()
    username = fields.String()
    is_admin = fields.Boolean(
        metadata={"description": "Whether the user may read the tracking log and change all."}
    )
    auth_method = fields.String(
        metadata={"enum": ["basic", "bearer"], "description": "A password or a bearer token."}
    )


tag_schema = TagSchema()
tracking_schema = TrackingSchema()
token_schema = TokenSchema()
new_token_schema = NewTokenSchema()
