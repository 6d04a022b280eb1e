"""Blueprint "tags": /api/tags/, create, list, search, rename and delete tags."""

from typing import Any

from flask import Blueprint, abort, url_for
from marshmallow import ValidationError
from sqlalchemy import Connection, Select
from sqlalchemy.orm import joinedload

from .auth import auth, ensure_may_change
from .db import db, writes
from .errors import bad_field
from .models import Tag, User, fold_name
from .openapi import doc
from .pagination import count_of, page_window, read_page
from .schemas import (
    TagFilters,
    TagInput,
    TagMerge,
    normalize_tag_name,
    tag_schema,
    use_args,
    utc_text,
)

bp = Blueprint("tags", __name__, url_prefix="/api/tags")
# What a tag list reads of each tag: a column per `TagSchema` field, in its order (the creator's
# name, null once the creator is deleted). tests/test_tags.py holds the rows equal to the dump.
TAG_FIELDS = tuple(tag_schema.fields)
TAG_COLUMNS = tuple(
    User.username if name == "created_by" else getattr(Tag, name) for name in TAG_FIELDS
)
TAG_OWNERS_ONLY = "Only the tag's creator or an administrator may change it."


def find_tag(name: str) -> Tag:
    """Return the tag with this name, whatever its case and spacing, or answer 404."""
    try:
        name = normalize_tag_name(name)
    except ValidationError:
        tag = None  # no tag can have a name that is not valid
    else:
        tag = db.session.scalar(Tag.named(name).options(joinedload(Tag.created_by)))
    if tag is None:
        abort(404, description=f"No tag is named {name!r}.")
    return tag


def ensure_name_free(name: str, tag: Tag | None = None) -> None:
    """Answer 409 when another tag already has this name (case does not matter)."""
    existing = db.session.scalar(Tag.named(name))
    if existing is not None and existing is not tag:
        merge = " (POST /api/tags/<name>/merge/ merges two tags)" if tag is not None else ""
        abort(409, description=f"A tag named {existing.name!r} already exists{merge}.")


def find_tags(
    names: list[str],
    location: str,
    create_missing: bool = False,
    field: str = "tags",
    creator_id: int | None = None,
) -> list[Tag]:
    """Return the tags with these names; create the missing ones or answer 400 naming them.

    Created tags are the creator's: `creator_id`, or the user of the request.
    """
    if not names:
        return []
    found = db.session.scalars(
        db.select(Tag).where(Tag.name_folded.in_([fold_name(name) for name in names]))
    ).all()
    known = {tag.name_folded for tag in found}
    missing = [name for name in names if fold_name(name) not in known]
    if missing and not create_missing:
        bad_field(location, field, f"Unknown tags: {', '.join(missing)}.")
    created = []
    for name in missing:
        tag = Tag(created_by_id=creator_id or auth.current_user().id)
        tag.rename(name)
        created.append(tag)
    db.session.add_all(created)
    return [*found, *created]


@bp.get("/")
@doc(tag_schema, page=True)
@auth.login_required
@use_args(TagFilters(), location="query")
def list_tags(query_args: dict[str, Any]) -> dict[str, Any]:
    """Return one page of tags sorted by name, optionally only those whose name contains `name`."""
    query = Tag.matching(query_args)
    offset, size = page_window(query_args)
    return read_page(read_tags, query.limit(size).offset(offset), count_of(query), query_args)


def read_tags(connection: Connection, query: Select) -> list[dict[str, Any]]:
    """Run a select of tags and return them as `TagSchema` dumps them, from plain rows.

    A list page skips the ORM's and marshmallow's work for each tag (several times cheaper).
    """
    rows = query.with_only_columns(*TAG_COLUMNS).outerjoin(User, User.id == Tag.created_by_id)
    tags = [dict(zip(TAG_FIELDS, row, strict=True)) for row in connection.execute(rows)]
    for tag in tags:
        tag["created_at"] = utc_text(tag["created_at"])
    return tags


@bp.post("/")
@doc(tag_schema, status=201, errors=(409,), headers={"Location": "URL of the new tag"})
@auth.login_required
@writes
@use_args(TagInput(), location="json_or_form")
def create_tag(json_or_form_args: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Create a tag; 409 when one of that name exists."""
    ensure_name_free(json_or_form_args["name"])
    tag = Tag(created_by_id=auth.current_user().id)
    tag.rename(json_or_form_args["name"])
    db.session.add(tag)
    db.session.commit()
    location = url_for("tags.get_tag", name=tag.name, _external=True)
    return tag_schema.dump(tag), 201, {"Location": location}


@bp.get("/<name>/")
@doc(tag_schema)
@auth.login_required
def get_tag(name: str) -> dict[str, Any]:
    """Return one tag."""
    return tag_schema.dump(find_tag(name))


@bp.route("/<name>/", methods=["PUT", "PATCH"])
@doc(tag_schema, errors=(403, 409))
@auth.login_required
@writes
@use_args(TagInput(), location="json_or_form")
def update_tag(name: str, json_or_form_args: dict[str, Any]) -> dict[str, Any]:
    """Rename a tag; its images keep it."""
    tag = find_tag(name)
    ensure_may_change(tag.created_by_id, TAG_OWNERS_ONLY)
    ensure_name_free(json_or_form_args["name"], tag)
    tag.rename(json_or_form_args["name"])
    db.session.commit()
    return tag_schema.dump(tag)


@bp.delete("/<name>/")
@doc(status=204, errors=(403,))
@auth.login_required
@writes
def delete_tag(name: str) -> tuple[str, int]:
    """Delete a tag; it leaves every image that had it."""
    tag = find_tag(name)
    ensure_may_change(tag.created_by_id, TAG_OWNERS_ONLY)
    db.session.delete(tag)
    db.session.commit()
    return "", 204


@bp.post("/<name>/merge/")
@doc(tag_schema, errors=(403,))
@auth.login_required
@writes
@use_args(TagMerge(), location="json_or_form")
def merge_tag(name: str, json_or_form_args: dict[str, Any]) -> dict[str, Any]:
    """Give every image of this tag the tag `into`, then delete this tag, in one transaction."""
    source = find_tag(name)
    target = db.session.scalar(Tag.named(json_or_form_args["into"]))
    if target is None:
        bad_field("json_or_form", "into", f"No tag is named {json_or_form_args['into']!r}.")
    if target.id == source.id:
        bad_field("json_or_form", "into", "A tag cannot be merged into itself.")
    user = auth.current_user()
    if not (user.may_change(source.created_by_id) and user.may_change(target.created_by_id)):
        abort(403, description="Only the creator of both tags or an administrator may merge them.")
    source.merge_into(target)
    db.session.commit()
    return tag_schema.dump(target)
