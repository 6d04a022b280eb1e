"""Blueprint "images": /api/images/, upload, list, filter, fetch, re-tag and delete images."""

import logging
from typing import Any

from flask import Blueprint, Response, abort, current_app, url_for
from sqlalchemy.orm import joinedload, selectinload
from werkzeug.datastructures import FileStorage

from .auth import auth
from .errors import bad_field
from .extensions import begin_writes, db
from .imaging import NotAnImage, clean_filename, inspect_image
from .models import Image, Tag, User, fold_name
from .pagination import paginate
from .schemas import (
    ImageFilters,
    ImagePatch,
    ImageUpdate,
    ImageUploadFiles,
    ImageUploadForm,
    image_schema,
    use_args,
)
from .storage import get_storage

bp = Blueprint("images", __name__, url_prefix="/api/images")
log = logging.getLogger(__name__)

# Largest id an integer column holds; a bigger id in a URL names no image (checked in the
# view: a `max=` on the route would turn PATCH or DELETE of such an id into a 405).
MAX_ID = 2**31 - 1


def find_image(image_id: int) -> Image:
    """Return an image with its tags and uploader loaded, or answer 404."""
    if image_id > MAX_ID:
        abort(404, description=f"No image has the id {image_id}.")
    query = (
        db.select(Image)
        .where(Image.id == image_id)
        .options(selectinload(Image.tags), joinedload(Image.created_by))
    )
    image = db.session.scalar(query)
    if image is None:
        abort(404, description=f"No image has the id {image_id}.")
    return image


def find_tags(names: list[str], location: str) -> list[Tag]:
    """Return the tags with these names, or answer 400 naming the ones that do not exist."""
    if not names:
        return []
    found = db.session.scalars(
        db.select(Tag).where(Tag.name_folded.in_([fold_name(name) for name in names]))
    ).all()
    known = {tag.name_folded for tag in found}
    missing = [name for name in names if fold_name(name) not in known]
    if missing:
        bad_field(location, "tags", f"Unknown tags: {', '.join(missing)}.")
    return list(found)


def ensure_may_change(image: Image, user: User) -> None:
    """Answer 403 unless the user uploaded the image or is an admin."""
    if not (user.is_admin or image.created_by_id == user.id):
        abort(403, description="Only the image's uploader or an administrator may change it.")


def store_upload(upload: FileStorage) -> Image:
    """Check an uploaded file, store it and return its (unsaved) Image row."""
    config = current_app.config
    try:
        info = inspect_image(upload.stream, config["IMAGE_FORMATS"], config["MAX_IMAGE_PIXELS"])
    except NotAnImage as error:
        bad_field("files", "image", str(error))
    stored = get_storage().save(upload.stream, info.suffix)
    return Image(
        filename=clean_filename(upload.filename, info.suffix),
        file_key=stored.key,
        content_type=info.content_type,
        size=stored.size,
        width=info.width,
        height=info.height,
        sha256=stored.sha256,
    )


@bp.get("/")
@auth.login_required
@use_args(ImageFilters(), location="query")
def list_images(query_args: dict[str, Any]) -> dict[str, Any]:
    """Return one page of images, newest first, that match the filters."""
    query = Image.matching(query_args).options(
        selectinload(Image.tags), joinedload(Image.created_by)
    )
    return paginate(query, image_schema, query_args)


@bp.post("/")
@auth.login_required
@use_args(ImageUploadForm(), location="form")
@use_args(ImageUploadFiles(), location="files")
def create_image(
    form_args: dict[str, Any], files_args: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Store an uploaded image with its tags, which must all exist."""
    find_tags(form_args["tags"], "form")  # unknown tags are refused before any file is written
    image = store_upload(files_args["image"][0])
    try:
        begin_writes()
        image.tags = find_tags(form_args["tags"], "form")
        image.created_by = auth.current_user()
        db.session.add(image)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        get_storage().delete(image.file_key)
        raise
    location = url_for("images.get_image", image_id=image.id, _external=True)
    return image_schema.dump(image), 201, {"Location": location}


@bp.get("/<int:image_id>/")
@auth.login_required
def get_image(image_id: int) -> dict[str, Any]:
    """Return one image."""
    return image_schema.dump(find_image(image_id))


@bp.put("/<int:image_id>/")
@auth.login_required
@use_args(ImageUpdate(), location="json_or_form")
def replace_image_tags(image_id: int, json_or_form_args: dict[str, Any]) -> dict[str, Any]:
    """Replace an image's tags (PUT: `tags` is required, an empty list removes them all)."""
    return retag(image_id, json_or_form_args)


@bp.patch("/<int:image_id>/")
@auth.login_required
@use_args(ImagePatch(), location="json_or_form")
def update_image_tags(image_id: int, json_or_form_args: dict[str, Any]) -> dict[str, Any]:
    """Replace an image's tags when `tags` is given (PATCH: every field is optional)."""
    return retag(image_id, json_or_form_args)


def retag(image_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """Give an image the tags named in `args`, if any, after checking who asks."""
    begin_writes()
    image = find_image(image_id)
    ensure_may_change(image, auth.current_user())
    if "tags" in args:
        image.tags = find_tags(args["tags"], "json_or_form")
        db.session.commit()
    return image_schema.dump(image)


@bp.delete("/<int:image_id>/")
@auth.login_required
def delete_image(image_id: int) -> Response:
    """Delete an image, then its file once the row is gone."""
    begin_writes()
    image = find_image(image_id)
    ensure_may_change(image, auth.current_user())
    key = image.file_key
    db.session.delete(image)
    db.session.commit()
    try:
        get_storage().delete(key)
    except OSError:
        log.exception("file %s of deleted image %s was not removed", key, image_id)
    return Response(status=204)


@bp.get("/<int:image_id>/file")
@auth.login_required
def get_image_file(image_id: int) -> Response:
    """Send an image's stored bytes with their content type."""
    image = db.session.get(Image, image_id) if image_id <= MAX_ID else None
    if image is None:
        abort(404, description=f"No image has the id {image_id}.")
    return get_storage().send(image.file_key, image.content_type, image.sha256, image.filename)
