"""The upload protocol without HTTP: `store_uploads` and `remove_images`, rows and files."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from helpers import image_bytes
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, Conflict

from imagestore.db import db
from imagestore.images.uploads import BadUploads, remove_images, store_uploads
from imagestore.models import Image, Tag, User


@pytest.fixture
def uploader(app: Flask, alice: tuple[str, str]) -> Iterator[int]:
    """Run the test inside a request context of the app; return alice's id."""
    with app.test_request_context("/api/images/", method="POST"):
        yield db.session.scalar(select(User.id).where(User.username == "alice"))


def upload(data: bytes, name: str = "photo.png") -> FileStorage:
    return FileStorage(io.BytesIO(data), filename=name)


def stored_files(app: Flask) -> list[str]:
    """Every file under the media folder but the (empty) staging folder's."""
    root = Path(app.config["MEDIA_FOLDER"])
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def image_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Image))


def test_store_uploads_commits_rows_and_files_with_the_tags(app, uploader):
    images = store_uploads(
        [upload(image_bytes("PNG")), upload(image_bytes("JPEG"), "b.jpg")],
        ["cats"],
        uploader,
        create_missing_tags=True,
    )

    db.session.expire_all()
    stored = db.session.scalars(select(Image).order_by(Image.id)).all()
    assert [image.id for image in stored] == [image.id for image in images]
    assert [image.filename for image in stored] == ["photo.png", "b.jpg"]
    assert all([tag.name for tag in image.tags] == ["cats"] for image in stored)
    assert all(image.created_by_id == uploader for image in stored)
    assert db.session.scalar(select(Tag.created_by_id).where(Tag.name == "cats")) == uploader
    assert stored_files(app) == sorted(image.file_key for image in stored)


def test_store_uploads_refuses_an_unknown_tag_before_reading_a_file(app, uploader):
    with pytest.raises(BadRequest) as refused:
        store_uploads([upload(image_bytes())], ["nope"], uploader)

    assert "Unknown tags: nope." in str(refused.value.description)
    assert image_count() == 0
    assert stored_files(app) == []


def test_store_uploads_stores_nothing_when_one_file_is_not_an_image(app, uploader):
    files = [upload(image_bytes()), upload(b"not an image", "notes.txt")]

    with pytest.raises(BadUploads) as refused:
        store_uploads(files, [], uploader)

    assert [(failure.position, failure.filename) for failure in refused.value.failures] == [
        (1, "notes.txt")
    ]
    assert refused.value.code == 400
    assert image_count() == 0
    assert stored_files(app) == []


def test_store_uploads_rejects_duplicates_when_asked(app, uploader):
    first = store_uploads([upload(image_bytes())], [], uploader)[0].id

    with pytest.raises(Conflict) as refused:
        store_uploads([upload(image_bytes(), "again.png")], [], uploader, reject_duplicates=True)

    assert refused.value.data["extra"]["existing_id"] == first
    assert image_count() == 1


def test_store_uploads_shares_one_file_between_identical_uploads(app, uploader):
    first = store_uploads([upload(image_bytes())], [], uploader)[0]
    second = store_uploads([upload(image_bytes(), "copy.png")], [], uploader)[0]

    assert first.file_key == second.file_key
    assert stored_files(app) == [first.file_key]


def test_remove_images_keeps_a_file_another_image_still_uses(app, uploader):
    first = store_uploads([upload(image_bytes())], [], uploader)[0]
    second = store_uploads([upload(image_bytes(), "copy.png")], [], uploader)[0]
    key = os.path.join(app.config["MEDIA_FOLDER"], first.file_key)

    remove_images([first])
    assert os.path.exists(key)
    assert image_count() == 1

    remove_images([second])
    assert not os.path.exists(key)
    assert image_count() == 0
