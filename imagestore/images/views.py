"""Blueprint "images": /api/images/, upload, list, filter, fetch, re-tag and delete images."""

import os
from typing import Any

from flask import current_app, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload
from werkzeug.exceptions import Conflict, NotFound, PreconditionFailed
from werkzeug.http import parse_range_header
from werkzeug.wrappers import Response

from ..auth import auth, ensure_may_change
from ..db import MAX_ID, db, writes
from ..errors import bad_field, invalid_input, problem_response
from ..models import Image, Tag, User, fold_name
from ..openapi import doc
from ..pagination import read_keyset_page, read_page
from ..schemas import use_args
from ..security import DOWNLOAD_POLICY
from ..storage import get_storage
from ..tags import find_tags
from . import bp
from .imaging import TooBigToDecode, stored_media_types
from .rows import IMAGE_BY_ID, cursor_query, page_queries, read_images, write_images
from .schemas import (
    CreateMissingTags,
    FileArgs,
    ImageFilters,
    ImagePatch,
    ImageSchema,
    ImageUpdate,
    ImageUploadArgs,
    ImageUploadFiles,
    ImageUploadForm,
    image_schema,
)
from .uploads import remove_images, store_uploads, thumbnail

IMAGE_OWNERS_ONLY = "Only the image's uploader or an administrator may change it."


def no_image(image_id: int) -> NotFound:
    """Return the 404 of an id that names no image (a larger one than any column holds too)."""
    return NotFound(f"No image has the id {image_id}.")


def find_image(image_id: int, for_update: bool = False) -> Image:
    """Return an image with its tags and uploader loaded, or answer 404.

    `for_update` locks its row (PostgreSQL) so that concurrent changes of it wait in turn.
    """
    query = (
        db.select(Image)
        .where(Image.id == image_id)
        .options(selectinload(Image.tags), joinedload(Image.created_by))
    )
    if for_update:
        query = query.with_for_update(of=Image)
    image = db.session.scalar(query) if image_id <= MAX_ID else None
    if image is None:
        raise no_image(image_id)
    return image


def refuse_unknown_filter_values(filters: dict[str, Any]) -> None:
    """Answer 400 naming the filter values that can match no image, rather than ignore them.

    An unknown tag in `exclude_tags` would exclude nothing (a private image shown), in
    `any_tags` it would narrow nothing; an unknown uploader or a type never stored would give
    an empty list for a typo. `tags` keeps the old service's answer: no image has an unknown
    tag, so the list is empty.
    """
    messages: dict[str, list[str]] = {}
    named = [*filters.get("any_tags", ()), *filters.get("exclude_tags", ())]
    if named:
        folded = {fold_name(name) for name in named}
        known = set(db.session.scalars(select(Tag.name_folded).where(Tag.name_folded.in_(folded))))
        for field in ("any_tags", "exclude_tags"):
            unknown = [name for name in filters.get(field, ()) if fold_name(name) not in known]
            if unknown:
                messages[field] = [f"Unknown tags: {', '.join(unknown)}."]
    uploader = filters.get("created_by")
    if uploader and db.session.scalar(User.named(uploader).with_only_columns(User.id)) is None:
        messages["created_by"] = [f"No user is named {uploader!r}."]
    content_type = filters.get("content_type")
    if content_type:
        stored = stored_media_types(current_app.config["IMAGE_FORMATS"])
        if content_type.lower() not in stored:
            listed = ", ".join(sorted(stored))
            messages["content_type"] = [f"Images are stored as {listed}; not {content_type}."]
    if messages:
        invalid_input({"query": messages})


@bp.get("/")
@doc(image_schema, page=True)
@auth.login_required
@use_args(ImageFilters(), location="query")
def list_images(query_args: dict[str, Any]) -> dict[str, Any]:
    """Return one page of images, newest first, that match the filters.

    With `cursor` the page is found by id, below the cursor (above it oldest first), not
    counted or skipped to: a walk sees each image once, while others are added and deleted.
    """
    refuse_unknown_filter_values(query_args)
    if "cursor" in query_args:
        query, params = cursor_query(query_args)
        return read_keyset_page(read_images, query, params, query_args)
    page, count = page_queries(query_args)
    return read_page(read_images, page, count, query_args)


@bp.post("/")
@doc(
    (image_schema, ImageSchema(many=True)),  # one file: the image; several: the list of them
    status=201,
    errors=(409,),
    headers={"Location": "URL of the new image (one file only)"},
)
@auth.login_required
@writes
@use_args(ImageUploadArgs(), location="query")
@use_args(ImageUploadForm(), location="form")
@use_args(ImageUploadFiles(), location="files")
def create_image(
    query_args: dict[str, Any], form_args: dict[str, Any], files_args: dict[str, Any]
) -> tuple[dict[str, Any] | list[dict[str, Any]], int, dict[str, str]]:
    """Store uploaded images (one, or up to 100 at once) with shared tags, all or nothing."""
    images = store_uploads(
        files_args["image"],
        form_args["tags"],
        auth.current_user().id,
        create_missing_tags=query_args["create_missing_tags"],
        reject_duplicates=query_args["on_duplicate"] == "reject",
    )
    if len(images) > 1:
        return write_images(images), 201, {}
    location = url_for("images.get_image", image_id=images[0].id, _external=True)
    return write_images(images)[0], 201, {"Location": location}


@bp.get("/<int:image_id>/")
@doc(image_schema)
@auth.login_required
def get_image(image_id: int) -> dict[str, Any]:
    """Return one image."""
    found = []
    if image_id <= MAX_ID:
        with db.engine.connect() as connection:
            found = read_images(connection, IMAGE_BY_ID, {"image_id": image_id})
    if not found:
        raise no_image(image_id)
    return found[0]


@bp.put("/<int:image_id>/")
@doc(image_schema, errors=(403,))
@auth.login_required
@writes
@use_args(CreateMissingTags(), location="query")
@use_args(ImageUpdate(), location="json_or_form")
def replace_image_tags(
    image_id: int, query_args: dict[str, Any], json_or_form_args: dict[str, Any]
) -> dict[str, Any]:
    """Replace an image's tags (PUT: `tags` is required, an empty list removes them all)."""
    return retag(image_id, json_or_form_args, query_args["create_missing_tags"])


@bp.patch("/<int:image_id>/")
@doc(image_schema, errors=(403,))
@auth.login_required
@writes
@use_args(CreateMissingTags(), location="query")
@use_args(ImagePatch(), location="json_or_form")
def update_image_tags(
    image_id: int, query_args: dict[str, Any], json_or_form_args: dict[str, Any]
) -> dict[str, Any]:
    """Replace an image's tags when `tags` is given (PATCH: every field is optional)."""
    return retag(image_id, json_or_form_args, query_args["create_missing_tags"])


def retag(image_id: int, args: dict[str, Any], create_missing: bool) -> dict[str, Any]:
    """Give an image the tags named in `args`, if any, after checking who asks."""
    image = find_image(image_id, for_update=True)
    ensure_may_change(image.created_by_id, IMAGE_OWNERS_ONLY)
    if "tags" in args:
        image.tags = find_tags(args["tags"], "json_or_form", create_missing=create_missing)
        db.session.commit()
    return write_images([image])[0]


@bp.delete("/<int:image_id>/")
@doc(status=204, errors=(403,))
@auth.login_required
@writes
def delete_image(image_id: int) -> tuple[str, int]:
    """Delete an image, then its file once no other image uses the same bytes."""
    image = find_image(image_id, for_update=True)
    ensure_may_change(image.created_by_id, IMAGE_OWNERS_ONLY)
    remove_images([image])
    return "", 204


@bp.get("/<int:image_id>/file")
@doc(media_type="image/*", errors=(409,))
@auth.login_required
@use_args(FileArgs(), location="query")
def get_image_file(image_id: int, query_args: dict[str, Any]) -> Response:
    """Send an image's bytes, or one of its thumbnails, with caching and range support."""
    image = db.session.get(Image, image_id) if image_id <= MAX_ID else None
    if image is None:
        raise no_image(image_id)
    key, mimetype, etag, filename = file_to_send(image, query_args.get("size"))
    ignore_unusable_range()
    response = get_storage().send(
        key, mimetype=mimetype, etag=etag, filename=filename, last_modified=image.created_at
    )
    if response.status_code == 412:  # werkzeug's 412 would carry the file itself
        return problem_response(PreconditionFailed("The file is not the one If-Match names."))
    if response.status_code != 302:  # a presigned redirect is cached only while it lives
        max_age = current_app.config["FILE_CACHE_SECONDS"]
        response.headers["Cache-Control"] = f"private, max-age={max_age}"
    # A file opened straight in a browser runs no script, whatever it holds (an SVG, say).
    response.headers["Content-Security-Policy"] = DOWNLOAD_POLICY
    return response


def ignore_unusable_range() -> None:
    """Drop a Range header the service does not serve (another unit than bytes, several
    ranges, or unreadable): the whole file is sent with a 200, as RFC 9110 (14.2) has it,
    rather than a 416. A single range past the file's end is still a 416."""
    value = request.environ.get("HTTP_RANGE")
    if value is None:
        return
    wanted = parse_range_header(value)
    if wanted is None or wanted.units != "bytes" or len(wanted.ranges) != 1:
        del request.environ["HTTP_RANGE"]


def file_to_send(image: Image, size: int | None) -> tuple[str, str, str, str]:
    """Return the storage key, media type, ETag and file name of an image or of its thumbnail
    of `size` pixels (made on first request)."""
    if size is None:
        return image.file_key, image.content_type, image.sha256, image.filename
    if size not in current_app.config["THUMBNAIL_SIZES"]:
        sizes = ", ".join(map(str, current_app.config["THUMBNAIL_SIZES"]))
        bad_field("query", "size", f"Must be one of: {sizes}.")
    try:
        key = thumbnail(image, size)
    except TooBigToDecode as error:
        # Stored before the limit was lowered: the file itself is still served.
        raise Conflict(f"No thumbnail is made of image {image.id}. {error}") from None
    name = f"{os.path.splitext(image.filename)[0]}-{size}.webp"
    return key, "image/webp", f"{image.sha256}-{size}", name
