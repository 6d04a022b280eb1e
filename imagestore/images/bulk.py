"""Bulk operations of the "images" blueprint: re-tag or delete many images in one transaction."""

from typing import Any

from sqlalchemy.orm import joinedload, selectinload
from werkzeug.exceptions import Forbidden

from ..auth import auth
from ..db import db, writes
from ..errors import abort_with, bad_field
from ..models import Image, Tag
from ..openapi import doc
from ..schemas import use_args
from ..tags import find_tags
from . import bp
from .rows import write_images
from .schemas import BulkDelete, BulkTag, CreateMissingTags, ImageSchema
from .uploads import remove_images


def find_images(ids: list[int]) -> list[Image]:
    """Return the images with these ids, each once, in the order given; 400 naming unknown ids."""
    wanted = list(dict.fromkeys(ids))
    query = (
        db.select(Image)
        .where(Image.id.in_(wanted))
        .options(selectinload(Image.tags), joinedload(Image.created_by))
    )
    found = {image.id: image for image in db.session.scalars(query)}
    unknown = [image_id for image_id in wanted if image_id not in found]
    if unknown:
        bad_field("json_or_form", "images", f"Unknown images: {', '.join(map(str, unknown))}.")
    return [found[image_id] for image_id in wanted]


def ensure_may_change_all(images: list[Image]) -> None:
    """Answer 403 naming the images the current user may not change."""
    user = auth.current_user()
    refused = [image.id for image in images if not user.may_change(image.created_by_id)]
    if refused:
        listed = ", ".join(map(str, refused))
        abort_with(
            Forbidden,
            f"Only the uploader or an administrator may change images {listed}.",
            images=refused,
        )


def retag_all(images: list[Image], added: list[Tag], removed: list[Tag]) -> None:
    """Give each image the `added` tags it lacks and take the `removed` ones away."""
    gone = {tag.id for tag in removed}
    for image in images:
        kept = [tag for tag in image.tags if tag.id not in gone]
        known = {tag.id for tag in kept}
        image.tags = kept + [tag for tag in added if tag.id not in known]


@bp.post("/bulk-tag/")
@doc(ImageSchema(many=True), errors=(403,))
@auth.login_required
@writes
@use_args(CreateMissingTags(), location="query")
@use_args(BulkTag(), location="json_or_form")
def bulk_tag_images(
    query_args: dict[str, Any], json_or_form_args: dict[str, Any]
) -> list[dict[str, Any]]:
    """Add tags to and remove tags from many images, all in one transaction."""
    images = find_images(json_or_form_args["images"])
    ensure_may_change_all(images)
    create_missing = query_args["create_missing_tags"]
    added = find_tags(json_or_form_args["add"], "json_or_form", create_missing, field="add")
    # An unknown tag to remove is a mistake: a 400 too.
    removed = find_tags(json_or_form_args["remove"], "json_or_form", field="remove")
    retag_all(images, added, removed)
    db.session.commit()
    return write_images(images)


@bp.post("/bulk-delete/")
@doc(status=204, errors=(403,))
@auth.login_required
@writes
@use_args(BulkDelete(), location="json_or_form")
def bulk_delete_images(json_or_form_args: dict[str, Any]) -> tuple[str, int]:
    """Delete many images in one transaction, then the files no image uses any more."""
    images = find_images(json_or_form_args["images"])
    ensure_may_change_all(images)
    remove_images(images)
    return "", 204
