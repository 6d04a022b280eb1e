"""Marshmallow schemas: request bodies, query filters and responses, and the webargs parser."""

import re
import unicodedata
from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import url_for
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema
from webargs.flaskparser import FlaskParser

from .errors import invalid_input
from .models import fold_name

TAG_NAME_MAX = 50
WHITESPACE_RUN = re.compile(r"\s+")


class Parser(FlaskParser):
    """webargs parser: bad input is a 400 and views receive `query_args`, `json_args`, ..."""

    DEFAULT_VALIDATION_STATUS = 400
    USE_ARGS_POSITIONAL = False

    def handle_error(self, error, req, schema, *, error_status_code, error_headers) -> NoReturn:
        """Abort with the field messages; the error handler renders them as problem+json."""
        invalid_input(error.messages)


parser = Parser()
use_args = parser.use_args


class Timestamp(fields.DateTime):
    """A UTC timestamp written as ISO 8601 with a `Z`: 2026-11-27T10:00:00.123456Z."""

    def _serialize(self, value: datetime | None, attr, obj, **kwargs) -> str | None:
        if value is None:
            return None
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def normalize_tag_name(value: str) -> str:
    """Return a tag name in its stored form, or raise ValidationError saying what is wrong."""
    name = WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", value)).strip()
    if not name:
        raise ValidationError("Tag name must not be empty.")
    if len(name) > TAG_NAME_MAX:
        raise ValidationError(f"Tag name must be at most {TAG_NAME_MAX} characters.")
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise ValidationError("Tag name must not contain control characters.")
    if "," in name or "/" in name:
        raise ValidationError("Tag name must not contain ',' or '/'.")
    if name.strip(".") == "":
        raise ValidationError("Tag name must not be only dots.")
    return name


class TagName(fields.String):
    """A tag name: whitespace trimmed and collapsed, NFC, 1 to 50 characters, no ',' or '/'."""

    def _deserialize(self, value: Any, attr, data, **kwargs) -> str:
        return normalize_tag_name(super()._deserialize(value, attr, data, **kwargs))


class TagNames(fields.List):
    """Tag names as a list, repeated fields (`tags=a&tags=b`) or a comma list (`tags=a,b`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(TagName(), **kwargs)

    def _deserialize(self, value: Any, attr, data, **kwargs) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise self.make_error("invalid")
        pieces = []
        for item in value:
            if not isinstance(item, str):
                raise ValidationError("Each tag must be a string.")
            pieces.extend(piece for piece in item.split(",") if piece.strip())
        names = super()._deserialize(pieces, attr, data, **kwargs)
        unique = {fold_name(name): name for name in reversed(names)}
        return list(reversed(unique.values()))


class UpperString(fields.String):
    """A string compared in upper case, such as an HTTP method."""

    def _deserialize(self, value: Any, attr, data, **kwargs) -> str:
        return super()._deserialize(value, attr, data, **kwargs).upper()


class Input(Schema):
    """A request body; fields it does not know are ignored, as the old service did."""

    class Meta:
        unknown = EXCLUDE


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Integer(load_default=10, validate=validate.Range(min=1, max=100))


# Tags


class TagSchema(Schema):
    name = fields.String()
    image_count = fields.Integer()
    created_by = fields.Function(lambda tag: tag.created_by.username if tag.created_by else None)
    created_at = Timestamp()


class TagInput(Input):
    name = TagName(required=True)


class TagFilters(PageArgs):
    name = fields.String(validate=validate.Length(max=200))


# Images


class ImageSchema(Schema):
    id = fields.Integer()
    image = fields.Function(
        lambda image: url_for("images.get_image_file", image_id=image.id, _external=True)
    )
    tags = fields.Function(lambda image: [tag.name for tag in image.tags])
    filename = fields.String()
    content_type = fields.String()
    size = fields.Integer()
    width = fields.Integer()
    height = fields.Integer()
    sha256 = fields.String()
    created_by = fields.Function(
        lambda image: image.created_by.username if image.created_by else None
    )
    created_at = Timestamp()


class ImageUploadForm(Input):
    tags = TagNames(load_default=list)


class ImageUploadFiles(Schema):
    image = fields.List(
        fields.Raw(),
        required=True,
        validate=validate.Length(max=1, error="Send one file in the `image` field."),
    )


class ImageUpdate(Input):
    tags = TagNames(required=True)


class ImagePatch(Input):
    tags = TagNames()


class ImageFilters(PageArgs):
    tags = TagNames()
    start_date = fields.Date()
    end_date = fields.Date()

    @validates_schema
    def dates_in_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and end < start:
            raise ValidationError("Must not be before start_date.", field_name="end_date")


# Trackings


class TrackingSchema(Schema):
    id = fields.Integer()
    user = fields.Integer(attribute="user_id", allow_none=True)
    username = fields.String(allow_none=True)
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


class TrackingFilters(PageArgs):
    user = fields.String(validate=validate.Length(min=1, max=150))
    endpoint = fields.String(validate=validate.Length(min=1, max=1024))
    method = UpperString(
        validate=validate.OneOf(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    )
    status_code = fields.Integer(validate=validate.Range(min=100, max=599))


tag_schema = TagSchema()
image_schema = ImageSchema()
tracking_schema = TrackingSchema()
