"""The storage contract: what every backend does, run against the local folder and S3.

Each test runs once per backend: `local` (a folder in the test's temporary folder) and `s3`
(a bucket on SeaweedFS, which skips where SeaweedFS cannot run, and fails when
IMAGESTORE_TEST_REQUIRE_SERVICES is set). What only one backend does stays in its own module:
tests/test_files.py (the local folder, decoding, faults of the disk) and tests/test_s3.py
(object content types, presigned downloads, faults of the store, settings).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import Auth, checksum, image_bytes, image_rows, run_check
from PIL import Image as PILImage
from seaweed import S3Server
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from imagestore.db import db
from imagestore.storage import Storage

# The bucket prefix the S3 backend stores under (`s3_settings` in conftest.py).
S3_PREFIX = "media/"


class Store:
    """A backend's files seen directly, not through the app, by their storage keys."""

    def keys(self) -> list[str]:
        """List every stored file's key, sorted."""
        raise NotImplementedError

    def read(self, key: str) -> bytes:
        raise NotImplementedError

    def write(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def remove(self, key: str) -> None:
        raise NotImplementedError


class Folder(Store):
    """The files of the local backend, below its media folder (staged files included)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def keys(self) -> list[str]:
        return sorted(
            os.path.relpath(os.path.join(folder, name), self.root)
            for folder, _, names in os.walk(self.root)
            for name in names
        )

    def read(self, key: str) -> bytes:
        with open(os.path.join(self.root, key), "rb") as file:
            return file.read()

    def write(self, key: str, data: bytes) -> None:
        path = os.path.join(self.root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(data)

    def remove(self, key: str) -> None:
        os.remove(os.path.join(self.root, key))


class Bucket(Store):
    """The objects of the S3 backend: keys under the prefix lose it, any other key shows whole."""

    def __init__(self, server: S3Server, name: str) -> None:
        self.client = server.client()
        self.name = name

    def keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        found = (item["Key"] for page in pages for item in page.get("Contents", []))
        return sorted(key.removeprefix(S3_PREFIX) for key in found)

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=S3_PREFIX + key)["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=S3_PREFIX + key, Body=data)

    def remove(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=S3_PREFIX + key)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.service)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend_settings(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Return the settings that select the backend; S3 starts (or skips on) SeaweedFS."""
    if backend == "s3":
        return request.getfixturevalue("s3_settings")
    return {}


@pytest.fixture
def app(make_app: Callable[..., Flask], backend_settings: dict[str, Any]) -> Flask:
    """The app on the backend under test; `client`, `upload` and the users follow it."""
    return make_app(**backend_settings)


@pytest.fixture
def store(app: Flask, backend: str, request: pytest.FixtureRequest) -> Store:
    if backend == "s3":
        return Bucket(request.getfixturevalue("s3_server"), request.getfixturevalue("bucket"))
    return Folder(app.config["MEDIA_FOLDER"])


@pytest.fixture
def storage(app: Flask) -> Storage:
    return app.extensions["imagestore.storage"]


@pytest.fixture
def photo(alice: Auth, upload: Callable[..., Any]) -> dict[str, Any]:
    """A 600 x 300 JPEG uploaded through the API."""
    response = upload(alice, content=image_bytes("JPEG", (600, 300)), filename="Beach day.jpg")
    assert response.status_code == 201, response.json
    return response.json


def content_key(content: bytes, suffix: str) -> str:
    """Return the storage key of content: `ab/abcdef...<suffix>`."""
    sha256 = checksum(content)
    return f"{sha256[:2]}/{sha256}{suffix}"


# The interface: stage, place, open, delete, exists, objects, check


def test_stage_copies_a_stream_with_its_size_and_checksum(storage: Storage) -> None:
    content = image_bytes("PNG", (30, 20))

    staged = storage.stage(io.BytesIO(content))

    try:
        assert (staged.size, staged.sha256) == (len(content), checksum(content))
        with open(staged.path, "rb") as file:
            assert file.read() == content
    finally:
        staged.discard()
    assert not os.path.exists(staged.path)


def test_place_stores_the_staged_file_under_its_key_and_uses_it_up(
    storage: Storage, store: Store
) -> None:
    content = image_bytes("PNG", (30, 20))
    staged = storage.stage(io.BytesIO(content))

    storage.place(staged, "ab/placed.png")

    assert storage.exists("ab/placed.png")
    assert store.read("ab/placed.png") == content
    with closing(storage.open("ab/placed.png")) as file:
        assert file.read() == content
    assert not os.path.exists(staged.path)


def test_open_of_a_missing_key_is_file_not_found(storage: Storage) -> None:
    assert not storage.exists("ab/missing.png")
    with pytest.raises(FileNotFoundError):
        storage.open("ab/missing.png")


def test_delete_removes_a_file_and_a_missing_file_is_no_error(
    storage: Storage, store: Store
) -> None:
    storage.place(storage.stage(io.BytesIO(b"some bytes")), "ab/gone.png")

    storage.delete("ab/gone.png")
    storage.delete("ab/gone.png")

    assert not storage.exists("ab/gone.png")
    assert store.keys() == []


def test_objects_lists_every_file_with_its_size_and_time(storage: Storage) -> None:
    storage.place(storage.stage(io.BytesIO(b"four")), "ab/one.png")
    storage.place(storage.stage(io.BytesIO(b"sixsix")), "cd/two.webp")

    listed = sorted(storage.objects(), key=lambda stored: stored.key)

    assert [(stored.key, stored.size) for stored in listed] == [
        ("ab/one.png", 4),
        ("cd/two.webp", 6),
    ]
    assert all(abs(time.time() - stored.modified) < 60 for stored in listed)


def test_check_of_a_usable_store_passes(storage: Storage) -> None:
    assert storage.check() is None


# Uploads and duplicates


def test_upload_stores_one_file_under_its_checksum(
    alice: Auth, upload: Callable[..., Any], store: Store
) -> None:
    content = image_bytes("PNG", (20, 10))

    response = upload(alice, content=content)

    assert response.status_code == 201
    assert response.json["sha256"] == checksum(content)
    assert store.keys() == [content_key(content, ".png")]
    assert store.read(content_key(content, ".png")) == content


def test_identical_uploads_share_one_file(
    alice: Auth, upload: Callable[..., Any], store: Store
) -> None:
    content = image_bytes("PNG", (20, 20))

    first = upload(alice, content=content).json
    second = upload(alice, content=content, filename="again.png").json

    assert first["id"] != second["id"]
    assert store.keys() == [content_key(content, ".png")]


def test_deleting_one_of_two_copies_keeps_the_file(
    client: FlaskClient, alice: Auth, upload: Callable[..., Any], store: Store
) -> None:
    content = image_bytes("PNG", (20, 20))
    first = upload(alice, content=content).json
    second = upload(alice, content=content).json

    response = client.delete(f"/api/images/{first['id']}/", auth=alice)

    assert response.status_code == 204
    assert store.keys() == [content_key(content, ".png")]
    assert client.get(second["image"], auth=alice).data == content


def test_deleting_the_last_copy_removes_the_file(
    client: FlaskClient, alice: Auth, upload: Callable[..., Any], store: Store
) -> None:
    content = image_bytes("PNG", (20, 20))
    ids = [upload(alice, content=content).json["id"] for _ in range(2)]

    for image_id in ids:
        client.delete(f"/api/images/{image_id}/", auth=alice)

    assert store.keys() == []


def test_upload_rejecting_a_duplicate_is_409_with_the_existing_id_and_adds_nothing(
    app: Flask, client: FlaskClient, alice: Auth, upload: Callable[..., Any], store: Store
) -> None:
    content = image_bytes("PNG", (20, 20))
    existing = upload(alice, content=content).json
    data = {"image": (io.BytesIO(content), "again.png")}

    response = client.post("/api/images/?on_duplicate=reject", data=data, auth=alice)

    assert response.status_code == 409
    assert response.json["existing_id"] == existing["id"]
    assert response.json["existing"] == f"http://localhost/api/images/{existing['id']}/"
    assert image_rows(app) == 1
    assert store.keys() == [content_key(content, ".png")]


def test_refused_batch_stores_no_file(
    app: Flask, client: FlaskClient, alice: Auth, store: Store
) -> None:
    data = {
        "image": [
            (io.BytesIO(image_bytes("PNG", (9, 9))), "good.png"),
            (io.BytesIO(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), "bad.svg"),
        ]
    }

    response = client.post("/api/images/", data=data, auth=alice)

    assert response.status_code == 400
    assert image_rows(app) == 0
    assert store.keys() == []


# Downloads


def test_download_is_the_stored_bytes_with_caching_and_safety_headers(
    client: FlaskClient, alice: Auth, photo: dict[str, Any], store: Store
) -> None:
    response = client.get(photo["image"], auth=alice)

    assert response.status_code == 200
    assert response.data == store.read(f"{photo['sha256'][:2]}/{photo['sha256']}.jpg")
    assert checksum(response.data) == photo["sha256"]
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["Content-Length"] == str(photo["size"])
    assert response.headers["ETag"] == f'"{photo["sha256"]}"'
    assert response.headers["Last-Modified"]
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "private, max-age=86400"
    assert response.headers["Content-Disposition"] == 'inline; filename="Beach day.jpg"'


def test_download_needs_credentials(client: FlaskClient, photo: dict[str, Any]) -> None:
    response = client.get(photo["image"])

    assert response.status_code == 401


def test_download_with_a_matching_etag_is_304(
    client: FlaskClient, alice: Auth, photo: dict[str, Any]
) -> None:
    headers = {"If-None-Match": f'"{photo["sha256"]}"'}

    response = client.get(photo["image"], auth=alice, headers=headers)

    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == f'"{photo["sha256"]}"'


def test_download_not_modified_since_is_304(
    client: FlaskClient, alice: Auth, photo: dict[str, Any]
) -> None:
    last_modified = client.get(photo["image"], auth=alice).headers["Last-Modified"]

    response = client.get(photo["image"], auth=alice, headers={"If-Modified-Since": last_modified})

    assert response.status_code == 304


def test_download_of_a_range_is_206(
    client: FlaskClient, alice: Auth, photo: dict[str, Any]
) -> None:
    whole = client.get(photo["image"], auth=alice).data

    response = client.get(photo["image"], auth=alice, headers={"Range": "bytes=10-19"})

    assert response.status_code == 206
    assert response.data == whole[10:20]
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(whole)}"
    assert response.headers["Content-Length"] == "10"


def test_download_of_a_suffix_range_is_206(
    client: FlaskClient, alice: Auth, photo: dict[str, Any]
) -> None:
    whole = client.get(photo["image"], auth=alice).data

    response = client.get(photo["image"], auth=alice, headers={"Range": "bytes=-7"})

    assert response.status_code == 206
    assert response.data == whole[-7:]
    assert (
        response.headers["Content-Range"] == f"bytes {len(whole) - 7}-{len(whole) - 1}/{len(whole)}"
    )


def test_download_of_an_unsatisfiable_range_is_416_problem_json(
    client: FlaskClient, alice: Auth, photo: dict[str, Any]
) -> None:
    response = client.get(photo["image"], auth=alice, headers={"Range": "bytes=99999999-"})

    assert response.status_code == 416
    assert response.content_type == "application/problem+json"
    assert response.headers["Content-Range"] == f"bytes */{photo['size']}"


def test_download_with_a_stale_if_range_is_the_whole_file(
    client: FlaskClient, alice: Auth, photo: dict[str, Any]
) -> None:
    headers = {"Range": "bytes=0-9", "If-Range": '"an-older-version"'}

    response = client.get(photo["image"], auth=alice, headers=headers)

    assert response.status_code == 200
    assert len(response.data) == photo["size"]


def test_head_of_a_download_sends_headers_only(
    client: FlaskClient, alice: Auth, photo: dict[str, Any]
) -> None:
    response = client.head(photo["image"], auth=alice)

    assert response.status_code == 200
    assert response.data == b""
    assert response.headers["Content-Length"] == str(photo["size"])
    assert response.headers["ETag"] == f'"{photo["sha256"]}"'


# Thumbnails


def test_thumbnail_is_stored_beside_the_original_and_cached(
    client: FlaskClient, alice: Auth, photo: dict[str, Any], store: Store
) -> None:
    first = client.get(photo["thumbnails"]["256"], auth=alice)

    second = client.get(photo["thumbnails"]["256"], auth=alice)

    sha256 = photo["sha256"]
    assert store.keys() == [f"{sha256[:2]}/{sha256}.256.webp", f"{sha256[:2]}/{sha256}.jpg"]
    assert first.status_code == second.status_code == 200
    assert first.data == second.data == store.read(f"{sha256[:2]}/{sha256}.256.webp")
    assert second.headers["Content-Type"] == "image/webp"
    assert second.headers["ETag"] == f'"{sha256}-256"'
    assert second.headers["Cache-Control"] == "private, max-age=86400"
    assert second.headers["Content-Disposition"] == 'inline; filename="Beach day-256.webp"'
    with PILImage.open(io.BytesIO(second.data)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (256, 128))


def test_thumbnail_with_a_matching_etag_is_304(
    client: FlaskClient, alice: Auth, photo: dict[str, Any]
) -> None:
    etag = client.get(photo["thumbnails"]["128"], auth=alice).headers["ETag"]

    response = client.get(photo["thumbnails"]["128"], auth=alice, headers={"If-None-Match": etag})

    assert response.status_code == 304


def test_thumbnails_are_deleted_with_the_image(
    client: FlaskClient, alice: Auth, photo: dict[str, Any], store: Store
) -> None:
    for url in photo["thumbnails"].values():
        assert client.get(url, auth=alice).status_code == 200

    client.delete(f"/api/images/{photo['id']}/", auth=alice)

    assert store.keys() == []


# Faults: a failed commit leaves no file behind


def test_a_failing_commit_gives_a_500_and_leaves_no_file(
    app: Flask, alice: Auth, upload: Callable[..., Any], store: Store
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    with app.app_context():
        engine = db.engine

    def fail_insert(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO images"):
            raise OperationalError(statement, {}, Exception("disk I/O error"))

    event.listen(engine, "before_cursor_execute", fail_insert)
    try:
        response = upload(alice)
    finally:
        event.remove(engine, "before_cursor_execute", fail_insert)

    assert response.status_code == 500
    assert response.content_type == "application/problem+json"
    assert image_rows(app) == 0
    assert store.keys() == []
    assert run_check(app).exit_code == 0


# The storage check


def test_storage_check_of_a_consistent_store_passes(
    app: Flask, client: FlaskClient, alice: Auth, photo: dict[str, Any]
) -> None:
    client.get(photo["thumbnails"]["128"], auth=alice)

    result = run_check(app)

    assert result.exit_code == 0, result.output
    assert "no problems" in result.output


def test_storage_check_reports_a_file_without_a_row(
    app: Flask, photo: dict[str, Any], store: Store
) -> None:
    store.write("ab/stray.png", b"left behind")

    result = run_check(app)

    assert result.exit_code == 1
    assert "unused file: ab/stray.png (11 bytes)" in result.output


def test_storage_check_reports_a_row_without_its_file(
    app: Flask, photo: dict[str, Any], store: Store
) -> None:
    sha256 = photo["sha256"]
    store.remove(f"{sha256[:2]}/{sha256}.jpg")

    result = run_check(app)

    assert result.exit_code == 1
    assert f"missing file: image {photo['id']} (sha256 {sha256})" in result.output


def test_storage_check_reports_a_changed_file(
    app: Flask, photo: dict[str, Any], store: Store
) -> None:
    sha256 = photo["sha256"]
    key = f"{sha256[:2]}/{sha256}.jpg"
    store.write(key, store.read(key) + b"tampered")

    result = run_check(app)

    assert result.exit_code == 1
    assert f"checksum mismatch: image {photo['id']} (sha256 {sha256})" in result.output


def test_storage_repair_removes_old_unused_files_and_keeps_used_ones(
    make_app: Callable[..., Flask],
    backend_settings: dict[str, Any],
    photo: dict[str, Any],
    store: Store,
) -> None:
    store.write("ab/stray.png", b"left behind")
    app = make_app(**backend_settings, STORAGE_REPAIR_GRACE_SECONDS=0)

    result = run_check(app, "--repair")

    assert "removed unused file: ab/stray.png" in result.output
    assert result.exit_code == 0
    sha256 = photo["sha256"]
    assert store.keys() == [f"{sha256[:2]}/{sha256}.jpg"]
    assert run_check(app).exit_code == 0


def test_storage_repair_keeps_young_unused_files(
    app: Flask, photo: dict[str, Any], store: Store
) -> None:
    store.write("ab/stray.png", b"in flight")

    result = run_check(app, "--repair")

    assert result.exit_code == 1
    assert "unused file: ab/stray.png (9 bytes) (younger than 3600 s" in result.output
    assert "ab/stray.png" in store.keys()  # noqa: SIM118 (a helper listing the backend's keys)


def test_storage_repair_never_touches_rows(app: Flask, photo: dict[str, Any], store: Store) -> None:
    sha256 = photo["sha256"]
    store.remove(f"{sha256[:2]}/{sha256}.jpg")

    run_check(app, "--repair")

    assert image_rows(app) == 1
