"""The image pipeline: decoding checks, deduplication, downloads, thumbnails, storage check."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import image_bytes, media_files
from PIL import Image as PILImage
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from imagestore.db import db
from imagestore.models import Image
from imagestore.storage import Staged
from imagestore.storage.local import LocalStorage


def png_header(width: int, height: int) -> bytes:
    """Return a PNG that declares a size but whose pixel data is one tiny compressed block."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def rotated_jpeg(width: int, height: int) -> bytes:
    """Return a JPEG stored `width` x `height` whose EXIF says: turn it a quarter to show it."""
    exif = PILImage.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), "green").save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def checksum(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def image_count(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Image.id)))


@pytest.fixture
def photo(alice: tuple[str, str], upload: Callable[..., Any]) -> dict[str, Any]:
    response = upload(alice, content=image_bytes("JPEG", (600, 300)), filename="Beach day.jpg")
    assert response.status_code == 201, response.json
    return response.json


# What a file is comes from decoding it


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"<html><script>alert(1)</script></html>", "not an image in an accepted format"),
        (b"GIF89a<html><body>polyglot</body></html>", "not an image in an accepted format"),
        (image_bytes("PNG", (40, 40)) + b"<script>alert(1)</script>", None),
        (image_bytes("JPEG", (64, 64))[:-300], "damaged or truncated"),
        (png_header(40, 40)[:-20], "damaged or truncated"),
    ],
    ids=["html", "gif-html-polyglot", "png-with-trailing-html", "truncated-jpeg", "cut-png"],
)
def test_upload_is_judged_by_decoding(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any], content: bytes, reason: str
) -> None:
    response = upload(alice, content=content, filename="image.png")

    if reason is None:  # trailing bytes after a whole image do not stop it decoding
        assert response.status_code == 201
        return
    assert response.status_code == 400
    assert reason in response.json["detail"]
    assert media_files(app) == []


def test_upload_over_the_pixel_limit_is_400_before_decoding(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    bomb = png_header(100_000, 100_000)  # 10 gigapixels declared in 100 bytes

    response = upload(alice, content=bomb, filename="bomb.png")

    assert response.status_code == 400
    assert "pixels" in response.json["detail"]
    assert "50000000" in response.json["detail"]
    assert media_files(app) == []


def test_tiff_is_refused_by_default(alice: tuple[str, str], upload: Callable[..., Any]) -> None:
    response = upload(alice, content=image_bytes("TIFF"), filename="scan.tif")

    assert response.status_code == 400


def test_tiff_is_accepted_when_the_setting_allows_it(
    make_app: Callable[..., Flask], make_user: Callable[..., tuple[str, str]]
) -> None:
    app = make_app(IMAGE_FORMATS=["JPEG", "PNG", "TIFF"])
    client = app.test_client()
    with app.app_context():
        from imagestore.auth import hash_password
        from imagestore.models import User

        db.session.add(User(username="carol", password_hash=hash_password("pw")))
        db.session.commit()
    data = {"image": (io.BytesIO(image_bytes("TIFF")), "scan.tif")}

    response = client.post("/api/images/", data=data, auth=("carol", "pw"))

    assert response.status_code == 201
    assert response.json["content_type"] == "image/tiff"
    assert response.json["format"] == "TIFF"


def test_upload_records_format_and_checksum(
    alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("WEBP", (30, 20))

    response = upload(alice, content=content, filename="a.png")

    assert response.json["format"] == "WEBP"
    assert response.json["content_type"] == "image/webp"
    assert response.json["sha256"] == checksum(content)


# Duplicates


def test_identical_uploads_share_one_file(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG", (20, 20))

    first = upload(alice, content=content).json
    second = upload(alice, content=content).json

    assert first["id"] != second["id"]
    assert media_files(app) == [f"{checksum(content)[:2]}/{checksum(content)}.png"]


def test_deleting_one_of_two_copies_keeps_the_file(
    app: Flask, client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG", (20, 20))
    first = upload(alice, content=content).json
    second = upload(alice, content=content).json

    client.delete(f"/api/images/{first['id']}/", auth=alice)

    assert len(media_files(app)) == 1
    assert client.get(second["image"], auth=alice).data == content


def test_deleting_the_last_copy_removes_the_file(
    app: Flask, client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG", (20, 20))
    ids = [upload(alice, content=content).json["id"] for _ in range(2)]

    for image_id in ids:
        client.delete(f"/api/images/{image_id}/", auth=alice)

    assert media_files(app) == []


def test_list_filters_by_checksum(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG", (20, 20))
    copies = [upload(alice, content=content).json["id"] for _ in range(2)]
    upload(alice, content=image_bytes("PNG", (21, 20)))

    response = client.get(f"/api/images/?sha256={checksum(content).upper()}", auth=alice)

    assert sorted(image["id"] for image in response.json["results"]) == copies


def test_list_with_a_malformed_checksum_is_400(client: FlaskClient, alice: tuple[str, str]) -> None:
    response = client.get("/api/images/?sha256=abc", auth=alice)

    assert response.status_code == 400
    assert response.json["errors"] == {"query": {"sha256": ["Must be 64 hexadecimal digits."]}}


def test_upload_rejecting_duplicates_is_409_with_the_existing_id(
    app: Flask, client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG", (20, 20))
    existing = upload(alice, content=content).json
    data = {"image": (io.BytesIO(content), "again.png")}

    response = client.post("/api/images/?on_duplicate=reject", data=data, auth=alice)

    assert response.status_code == 409
    assert response.json["existing_id"] == existing["id"]
    assert response.json["existing"] == f"http://localhost/api/images/{existing['id']}/"
    assert image_count(app) == 1
    assert len(media_files(app)) == 1


def test_upload_rejecting_duplicates_stores_new_content(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    data = {"image": (io.BytesIO(image_bytes()), "new.png")}

    response = client.post("/api/images/?on_duplicate=reject", data=data, auth=alice)

    assert response.status_code == 201


def test_upload_with_an_unknown_duplicate_policy_is_400(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    data = {"image": (io.BytesIO(image_bytes()), "new.png")}

    response = client.post("/api/images/?on_duplicate=merge", data=data, auth=alice)

    assert response.status_code == 400
    assert "on_duplicate" in response.json["errors"]["query"]


# Downloads


def test_download_has_caching_and_safety_headers(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get(photo["image"], auth=alice)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["ETag"] == f'"{photo["sha256"]}"'
    assert response.headers["Last-Modified"]
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "private, max-age=86400"
    assert response.headers["Content-Disposition"] == 'inline; filename="Beach day.jpg"'


def test_download_with_a_matching_etag_is_304(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    headers = {"If-None-Match": f'"{photo["sha256"]}"'}

    response = client.get(photo["image"], auth=alice, headers=headers)

    assert response.status_code == 304
    assert response.data == b""


def test_download_not_modified_since_is_304(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    last_modified = client.get(photo["image"], auth=alice).headers["Last-Modified"]

    response = client.get(photo["image"], auth=alice, headers={"If-Modified-Since": last_modified})

    assert response.status_code == 304


def test_download_of_a_range_is_206(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    whole = client.get(photo["image"], auth=alice).data

    response = client.get(photo["image"], auth=alice, headers={"Range": "bytes=10-19"})

    assert response.status_code == 206
    assert response.data == whole[10:20]
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(whole)}"


def test_download_of_an_unsatisfiable_range_is_416(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get(photo["image"], auth=alice, headers={"Range": "bytes=99999999-"})

    assert response.status_code == 416


def test_download_name_is_the_sanitized_upload_name(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    image = upload(alice, filename="../secret\x07/na\x1bme.png").json

    response = client.get(image["image"], auth=alice)

    assert image["filename"] == "name.png"
    assert response.headers["Content-Disposition"] == "inline; filename=name.png"


# Thumbnails


def test_image_lists_its_thumbnail_urls(photo: dict[str, Any]) -> None:
    assert photo["thumbnails"] == {
        str(size): f"http://localhost/api/images/{photo['id']}/file?size={size}"
        for size in (128, 256, 512)
    }


def test_thumbnail_keeps_the_aspect_within_its_size(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get(photo["thumbnails"]["128"], auth=alice)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/webp"
    with PILImage.open(io.BytesIO(response.data)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (128, 64))


def test_thumbnail_applies_the_exif_orientation(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    image = upload(alice, content=rotated_jpeg(400, 200), filename="phone.jpg").json

    response = client.get(image["thumbnails"]["256"], auth=alice)

    with PILImage.open(io.BytesIO(response.data)) as thumbnail:
        assert thumbnail.size == (128, 256)


def test_thumbnail_is_stored_beside_the_original_and_cached(
    app: Flask, client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    first = client.get(photo["thumbnails"]["256"], auth=alice)

    second = client.get(photo["thumbnails"]["256"], auth=alice)

    sha256 = photo["sha256"]
    assert media_files(app) == [f"{sha256[:2]}/{sha256}.256.webp", f"{sha256[:2]}/{sha256}.jpg"]
    assert first.data == second.data
    assert second.headers["ETag"] == f'"{sha256}-256"'
    assert second.headers["Cache-Control"] == "private, max-age=86400"
    assert second.headers["Content-Disposition"] == 'inline; filename="Beach day-256.webp"'


def test_thumbnail_with_a_matching_etag_is_304(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    etag = client.get(photo["thumbnails"]["128"], auth=alice).headers["ETag"]

    response = client.get(photo["thumbnails"]["128"], auth=alice, headers={"If-None-Match": etag})

    assert response.status_code == 304


@pytest.mark.parametrize("size", ["100", "1024", "0", "-5", "big"])
def test_thumbnail_of_a_size_not_offered_is_400(
    app: Flask, client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], size: str
) -> None:
    response = client.get(f"/api/images/{photo['id']}/file?size={size}", auth=alice)

    assert response.status_code == 400
    assert "size" in response.json["errors"]["query"]
    assert len(media_files(app)) == 1


def test_thumbnails_are_deleted_with_the_image(
    app: Flask, client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    for url in photo["thumbnails"].values():
        client.get(url, auth=alice)

    client.delete(f"/api/images/{photo['id']}/", auth=alice)

    assert media_files(app) == []


# The storage check


def run_check(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["storage", "check", *args])


def test_storage_check_of_a_consistent_store_passes(app: Flask, photo: dict[str, Any]) -> None:
    result = run_check(app)

    assert result.exit_code == 0
    assert "no problems" in result.output


def test_storage_check_reports_a_file_without_a_row(app: Flask, photo: dict[str, Any]) -> None:
    stray = os.path.join(app.config["MEDIA_FOLDER"], "ab", "stray.png")
    os.makedirs(os.path.dirname(stray), exist_ok=True)
    with open(stray, "wb") as file:
        file.write(b"left behind")

    result = run_check(app)

    assert result.exit_code == 1
    assert "unused file: ab/stray.png (11 bytes)" in result.output


def test_storage_check_reports_a_row_without_its_file(app: Flask, photo: dict[str, Any]) -> None:
    sha256 = photo["sha256"]
    os.remove(os.path.join(app.config["MEDIA_FOLDER"], sha256[:2], f"{sha256}.jpg"))

    result = run_check(app)

    assert result.exit_code == 1
    assert f"missing file: image {photo['id']} (sha256 {sha256})" in result.output


def test_storage_check_reports_a_changed_file(app: Flask, photo: dict[str, Any]) -> None:
    sha256 = photo["sha256"]
    with open(os.path.join(app.config["MEDIA_FOLDER"], sha256[:2], f"{sha256}.jpg"), "ab") as file:
        file.write(b"tampered")

    result = run_check(app)

    assert result.exit_code == 1
    assert f"checksum mismatch: image {photo['id']} (sha256 {sha256})" in result.output


def test_storage_repair_removes_old_unused_files_only(app: Flask, photo: dict[str, Any]) -> None:
    media = app.config["MEDIA_FOLDER"]
    old, young = os.path.join(media, "old.png"), os.path.join(media, ".staging", "upload-young")
    for path in (old, young):
        with open(path, "wb") as file:
            file.write(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))

    result = run_check(app, "--repair")

    assert "removed unused file: old.png" in result.output
    assert "unused file: .staging/upload-young (1 bytes) (younger than 3600 s" in result.output
    assert result.exit_code == 1
    assert not os.path.exists(old) and os.path.exists(young)


def test_storage_repair_never_touches_rows(app: Flask, photo: dict[str, Any]) -> None:
    sha256 = photo["sha256"]
    os.remove(os.path.join(app.config["MEDIA_FOLDER"], sha256[:2], f"{sha256}.jpg"))

    run_check(app, "--repair")

    assert image_count(app) == 1


# Faults: the client gets a clear 5xx and the store stays consistent


class FailingStorage(LocalStorage):
    """A local store whose `place` fails with a chosen error, after half a write."""

    def __init__(self, root: str, error: OSError) -> None:
        super().__init__(root)
        self.error = error

    def place(self, staged: Staged, key: str) -> None:
        half = os.path.join(self.root, key)
        os.makedirs(os.path.dirname(half), exist_ok=True)
        with open(staged.path, "rb") as source, open(half + ".part", "wb") as target:
            target.write(source.read(staged.size // 2))
        os.remove(half + ".part")
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [(OSError(errno.ENOSPC, "No space left on device"), 507), (OSError(errno.EIO, "I/O"), 503)],
    ids=["disk-full", "io-error"],
)
def test_a_failing_store_gives_a_clear_5xx_and_leaves_nothing(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any], error: OSError, status: int
) -> None:
    app.extensions["imagestore.storage"] = FailingStorage(app.config["MEDIA_FOLDER"], error)

    response = upload(alice)

    assert response.status_code == status
    assert response.content_type == "application/problem+json"
    assert response.json["detail"]
    assert image_count(app) == 0
    assert media_files(app) == []
    assert run_check(app).exit_code == 0


def test_a_failing_commit_gives_a_5xx_and_leaves_no_file(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any]
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
    assert image_count(app) == 0
    assert media_files(app) == []
    assert run_check(app).exit_code == 0


def test_a_failing_upload_keeps_the_file_another_image_uses(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG", (20, 20))
    upload(alice, content=content)
    app.extensions["imagestore.storage"] = FailingStorage(
        app.config["MEDIA_FOLDER"], OSError(errno.EIO, "I/O")
    )

    upload(alice, content=content)

    assert len(media_files(app)) == 1
    assert run_check(app).exit_code == 0
