"""Images' schemas: the image resource, upload, re-tag and bulk bodies, and the list filters."""

from collections.abc import Mapping
from typing import Any

from flask import current_app, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..models import fold_name
from ..schemas import (
    Checksum,
    Checksums,
    Creator,
    Cursor,
    DatedPageArgs,
    Input,
    TagNames,
    Timestamp,
)
from ..urls import external_url


class ImageSchema(Schema):
    id = fields.Integer()
    image = fields.Function(
        lambda image: external_url("images.get_image_file", image_id=image.id),
        metadata={"type": "string", "format": "uri"},
    )
    tags = fields.Function(
        lambda image: [tag.name for tag in image.tags],
        metadata={"type": "array", "items": {"type": "string"}},
    )
    thumbnails = fields.Function(
        lambda image: {
            str(size): external_url("images.get_image_file", image_id=image.id, size=size)
            for size in current_app.config["THUMBNAIL_SIZES"]
        },
        metadata={"type": "object", "additionalProperties": {"type": "string", "format": "uri"}},
    )
    filename = fields.String(metadata={"description": "The uploaded file's name, cleaned."})
    content_type = fields.String(metadata={"description": "The media type of the image's format."})
    format = fields.String(
        metadata={
            "description": "The image format, by Pillow's name: JPEG, PNG, GIF, WEBP... (a JPEG"
            " with more pictures after the first, an MPO, is a JPEG)."
        }
    )
    size = fields.Integer(metadata={"description": "The file's length in bytes."})
    width = fields.Integer(metadata={"description": "In pixels."})
    height = fields.Integer(metadata={"description": "In pixels."})
    sha256 = fields.String(metadata={"description": "The SHA-256 of the file's bytes, in hex."})
    created_by = Creator()
    created_at = Timestamp()


class CreateMissingTags(Schema):
    create_missing_tags = fields.Boolean(
        load_default=False, metadata={"description": "Create tags that do not exist yet."}
    )


class ImageUploadArgs(CreateMissingTags):
    on_duplicate = fields.String(load_default="allow", validate=validate.OneOf(["allow", "reject"]))


class FileArgs(Schema):
    size = fields.Integer(validate=validate.Range(min=1))


class ImageUploadForm(Input):
    tags = TagNames(load_default=list)


MAX_FILES_PER_UPLOAD = 100


class ImageUploadFiles(Input):
    image = fields.List(
        fields.Raw(),
        required=True,
        validate=validate.Length(
            max=MAX_FILES_PER_UPLOAD,
            error=f"Send at most {MAX_FILES_PER_UPLOAD} files in the `image` field.",
        ),
    )


class ImageUpdate(Input):
    read_only = frozenset(ImageSchema().fields) - {"tags"}

    tags = TagNames(required=True)


class ImagePatch(Input):
    read_only = ImageUpdate.read_only

    tags = TagNames()

    @validates_schema
    def changes_something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "tags" not in data:
            raise ValidationError(
                "Give `tags`: a PATCH changes the fields it names, and this one names none.",
                field_name="tags",
            )


MAX_IMAGES_PER_BULK = 1000


class Id(fields.Integer):
    """An id: a JSON whole number (never 1.5, "1" or true), or its digits in a form field."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        if isinstance(value, str) and value.isascii() and value.isdigit() and not request.is_json:
            value = int(value)
        return super()._deserialize(value, attr, data, **kwargs)


def image_ids() -> fields.List:
    """Return the field of a bulk request's image ids."""
    return fields.List(
        Id(strict=True, validate=validate.Range(min=1, max=2**31 - 1)),
        required=True,
        validate=validate.Length(min=1, max=MAX_IMAGES_PER_BULK),
    )


class BulkTag(Input):
    images = image_ids()
    add = TagNames(load_default=list)
    remove = TagNames(load_default=list)

    @validates_schema
    def changes_something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.get("add") and not data.get("remove"):
            raise ValidationError("Give tags to `add`, to `remove` or both.", field_name="add")
        both = {fold_name(name) for name in data.get("add", [])} & {
            fold_name(name) for name in data.get("remove", [])
        }
        if both:
            raise ValidationError("A tag cannot be both added and removed.", field_name="remove")


class BulkDelete(Input):
    images = image_ids()


IMAGE_ORDERINGS = ["created_at", "-created_at", "size", "-size", "id", "-id"]
# A cursor is an id: it walks the images by id, newest (the default) or oldest first.
CURSOR_ORDERINGS = ["-id", "id"]


class ImageFilters(DatedPageArgs):
    cursor = Cursor(
        validate=validate.Range(min=0, max=2**63 - 1),
        metadata={
            "description": "Keyset paging by id: images below this id (above it with"
            " `ordering=id`), no count (`next` goes on); empty starts at the newest (oldest)."
        },
    )
    tags = TagNames(
        metadata={"description": "Images having all of these tags (an unknown tag: none)."}
    )
    any_tags = TagNames(
        metadata={"description": "Images having at least one of these tags; unknown ones: 400."}
    )
    exclude_tags = TagNames(
        metadata={"description": "Images having none of these tags; unknown ones: 400."}
    )
    untagged = fields.Boolean(metadata={"description": "true: only images with no tag."})
    sha256 = Checksum()
    created_after = fields.AwareDateTime(metadata={"description": "Created at or after."})
    created_before = fields.AwareDateTime(metadata={"description": "Created before."})
    created_by = fields.String(
        validate=validate.Length(min=1, max=150),
        metadata={"description": "Uploaded by this user (any case); an unknown user: 400."},
    )
    content_type = fields.String(
        validate=validate.Length(min=1, max=50),
        metadata={"description": "Of this media type; one images are never stored as: 400."},
    )
    min_width = fields.Integer(validate=validate.Range(min=1, max=2**31 - 1))
    min_height = fields.Integer(validate=validate.Range(min=1, max=2**31 - 1))
    # No default here: pages are ordered -created_at unless asked, cursors -id (Image.matching).
    ordering = fields.String(
        validate=validate.OneOf(IMAGE_ORDERINGS),
        metadata={
            "default": "-created_at",
            "description": "With `cursor`, only `-id` (then the default) or `id`.",
        },
    )

    @validates_schema
    def cursor_walks_by_id(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "cursor" in data and data.get("ordering", "-id") not in CURSOR_ORDERINGS:
            raise ValidationError(
                "A cursor walks the images by id: give ordering=-id (newest first, the default"
                " with a cursor) or ordering=id (oldest first), or use pages for this ordering.",
                field_name="ordering",
            )


image_schema = ImageSchema()


# Which contents are stored (exists.py)

MAX_CHECKSUMS_PER_QUERY = 1000


class ContentQuery(Input):
    sha256 = Checksums(
        required=True,
        validate=validate.Length(
            max=MAX_CHECKSUMS_PER_QUERY,
            error=f"Give at most {MAX_CHECKSUMS_PER_QUERY} checksums.",
        ),
        metadata={"description": "SHA-256 digests of files, in hexadecimal (any case)."},
    )


class ContentFound(Schema):
    exists = fields.List(
        fields.String(),
        metadata={
            "description": "The digests asked for that some image has, in the order given, in"
            " lower case, each once."
        },
    )
    images = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={"description": "For each of them, the id of the oldest image with the bytes."},
    )
