"""The life of an image's bytes: staged, checked, placed under their checksum, released.

Upload order: temporary file and checksum of every file, header check of each (its pixels and
the memory decoding it takes, alone and for the whole request), decode check, then under the
content lock: move into place, commit the rows. Delete order: commit, then under the content
lock: remove the files when no row uses the checksum any more. A failed upload releases what
it placed.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import current_app, url_for
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, Conflict

from ..db import db
from ..errors import abort_with
from ..models import Image, Tag, lock_content
from ..storage import Staged, content_key, get_storage, thumbnail_key
from ..tags import find_tags
from .imaging import (
    MB,
    DecodeLimits,
    ImageInfo,
    NotAnImage,
    check_image,
    clean_filename,
    inspect_image,
    make_thumbnail,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckedUpload:
    """An uploaded file that was staged and decoded: ready to be placed."""

    staged: Staged
    info: ImageInfo
    filename: str

    @property
    def key(self) -> str:
        return content_key(self.staged.sha256, self.info.suffix)

    def new_image(self, tags: list[Tag], uploader_id: int) -> Image:
        """Return the (unsaved) image row of this upload."""
        return Image(
            tags=tags,
            created_by_id=uploader_id,
            filename=self.filename,
            file_key=self.key,
            content_type=self.info.content_type,
            format=self.info.format,
            size=self.staged.size,
            width=self.info.width,
            height=self.info.height,
            sha256=self.staged.sha256,
        )


class BadUpload(Exception):
    """An uploaded file is not an accepted image; says which and why."""

    def __init__(self, position: int, filename: str | None, reason: str) -> None:
        super().__init__(reason)
        self.position = position
        self.filename = filename
        self.reason = reason


def decode_limits() -> DecodeLimits:
    """Return the limits of the current app's settings on what an upload may be."""
    config = current_app.config
    return DecodeLimits(
        formats=config["IMAGE_FORMATS"],
        max_pixels=config["MAX_IMAGE_PIXELS"],
        max_decoded_bytes=int(config["MAX_DECODED_MB"] * MB),
        thumbnail_size=max(config["THUMBNAIL_SIZES"]),
    )


class BadUploads(BadRequest):
    """Some uploaded files are not accepted images (400): each is named, by position and
    name, and none of the request's files is stored."""

    def __init__(self, failures: list[BadUpload], count: int) -> None:
        self.failures = failures
        if count == 1:
            failure = failures[0]
            messages: dict[str, Any] = {"image": [failure.reason]}
            detail = f"{failure.filename or 'unnamed'}: {failure.reason}"
        else:
            messages = {
                "image": {
                    str(failure.position): [f"{failure.filename or 'unnamed'}: {failure.reason}"]
                    for failure in failures
                }
            }
            listed = "; ".join(
                f"#{failure.position} {failure.filename or 'unnamed'}: {failure.reason}"
                for failure in failures
            )
            detail = (
                f"{len(failures)} of {count} files are not accepted images, so none was stored."
                f" {listed}"
            )
        super().__init__(detail)
        self.data = {"messages": {"files": messages}}


class TooMuchToDecode(BadRequest):
    """The files of one upload would take more memory to decode, together, than allowed (400)."""

    def __init__(self, count: int, needed: int, limit: int) -> None:
        files = "1 file takes" if count == 1 else f"{count} files take"
        detail = (
            f"The {files} about {math.ceil(needed / MB)} MB of memory to decode;"
            f" at most {limit / MB:g} MB are allowed in one request. Send them in several."
        )
        super().__init__(detail)
        self.data = {"messages": {"files": {"image": [detail]}}}


def store_uploads(
    files: list[FileStorage],
    tag_names: list[str],
    uploader_id: int,
    *,
    create_missing_tags: bool = False,
    reject_duplicates: bool = False,
) -> list[Image]:
    """Store uploaded files as new images with these tags: all of them, or none (a 4xx).

    Unknown tags are refused (or created) before any file is staged; then every file is
    staged, checked and decoded; then, in one `@writes` transaction under the content lock,
    the files are placed and the rows committed. `reject_duplicates` answers 409 naming the
    image that already has a file's bytes.
    """
    find_tags(tag_names, "form", create_missing_tags, creator_id=uploader_id)
    db.session.rollback()  # staging takes a while: no transaction stays open meanwhile
    with checked_uploads(files) as checked:
        tags = find_tags(tag_names, "form", create_missing_tags, creator_id=uploader_id)
        if reject_duplicates:
            refuse_duplicates(checked)
        images = [upload.new_image(tags, uploader_id) for upload in checked]
        place_and_commit(checked, images)
    return images


def refuse_duplicates(checked: list[CheckedUpload]) -> None:
    """Answer 409 with the existing image's id when an upload's bytes are already stored."""
    for upload in checked:
        lock_content(upload.staged.sha256)
        existing = Image.first_with_content(upload.staged.sha256)
        if existing is not None:
            abort_with(
                Conflict,
                f"Image {existing} has the same content.",
                existing_id=existing,
                existing=url_for("images.get_image", image_id=existing, _external=True),
            )


def remove_images(images: list[Image]) -> None:
    """Delete image rows, then the files that no image uses any more.

    Two transactions on purpose: the rows' deletion is committed first, then each content's
    files are removed under the content lock once no row uses them. A failure between the two
    leaves a file no row uses (`flask storage check --repair` removes it), never a row whose
    file is gone; the lock keeps a concurrent upload of the same bytes from losing its file.
    """
    contents = sorted({(image.sha256, image.file_key) for image in images})
    for image in images:
        db.session.delete(image)
    db.session.commit()
    for sha256, key in contents:
        release_content(sha256, key)


@contextmanager
def checked_uploads(uploads: list[FileStorage]) -> Iterator[list[CheckedUpload]]:
    """Stage and check every upload, all or nothing; leave no staged file behind.

    Every file's header is read before any is decoded: files over the pixel or memory limits,
    or together over the request's memory budget, are refused without decoding a pixel.
    """
    limits = decode_limits()
    storage = get_storage()
    staged: list[Staged] = []
    inspected: list[tuple[int, FileStorage, CheckedUpload]] = []
    failures: list[BadUpload] = []
    try:
        for position, upload in enumerate(uploads):
            staged.append(storage.stage(upload.stream))
            try:
                info = inspect_image(staged[-1].path, limits)
            except NotAnImage as error:
                failures.append(BadUpload(position, upload.filename, str(error)))
                continue
            name = clean_filename(upload.filename, info.suffix)
            inspected.append((position, upload, CheckedUpload(staged[-1], info, name)))
        needed = sum(checked.info.decoded_bytes for _, _, checked in inspected)
        budget = int(current_app.config["MAX_REQUEST_DECODED_MB"] * MB)
        if needed > budget:
            raise TooMuchToDecode(len(inspected), needed, budget)
        for position, upload, checked in inspected:
            try:
                check_image(checked.staged.path, limits)
            except NotAnImage as error:
                failures.append(BadUpload(position, upload.filename, str(error)))
        if failures:
            raise BadUploads(sorted(failures, key=lambda f: f.position), len(uploads))
        yield [checked for _, _, checked in inspected]
    finally:
        for file in staged:
            file.discard()


def place_and_commit(uploads: list[CheckedUpload], images: list[Image]) -> None:
    """Move checked uploads into place and commit their rows, in one locked transaction.

    The caller is a `@writes` view, and has added the rows (and anything else) to the
    session. On any failure nothing stays: the rows are rolled back and placed files that no
    other row uses are removed.
    """
    storage = get_storage()
    placed: list[CheckedUpload] = []
    try:
        for upload in uploads:
            lock_content(upload.staged.sha256)
            storage.place(upload.staged, upload.key)
            placed.append(upload)
        db.session.add_all(images)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        for upload in placed:
            release_content(upload.staged.sha256, upload.key)
        raise


def release_content(sha256: str, key: str) -> None:
    """Remove a content's file and its thumbnails once no image row uses them."""
    storage = get_storage()
    try:
        lock_content(sha256)
        if Image.first_with_content(sha256) is None:
            storage.delete(key)
            for size in current_app.config["THUMBNAIL_SIZES"]:
                storage.delete(thumbnail_key(sha256, size))
        db.session.commit()
    except Exception:
        db.session.rollback()
        # Left for `flask storage check --repair`, which removes files no row uses.
        log.exception("files of content %s were not removed", sha256)


def thumbnail(image: Image, size: int) -> str:
    """Return the key of an image's thumbnail, making it on first request."""
    storage = get_storage()
    key = thumbnail_key(image.sha256, size)
    if not storage.exists(key):
        with storage.open(image.file_key) as source:
            data = make_thumbnail(source, size, decode_limits().max_decoded_bytes)
        storage.place(storage.stage(io.BytesIO(data)), key)
    return key
