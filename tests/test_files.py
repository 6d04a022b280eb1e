"""The image pipeline on the local folder: decoding checks, duplicates, thumbnails, disk faults.

What every storage backend does (files, downloads, the storage check) is in
tests/test_storage_contract.py, which runs on this folder and on S3.
"""

from __future__ import annotations

import errno
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
from helpers import checksum, image_bytes, image_rows, media_files, run_check
from PIL import Image as PILImage

from imagestore.db import db
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


@pytest.mark.parametrize("size", ["100", "1024", "0", "-5", "big"])
def test_thumbnail_of_a_size_not_offered_is_400(
    app: Flask, client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], size: str
) -> None:
    response = client.get(f"/api/images/{photo['id']}/file?size={size}", auth=alice)

    assert response.status_code == 400
    assert "size" in response.json["errors"]["query"]
    assert len(media_files(app)) == 1


# The storage check


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
    assert not os.path.exists(old)
    assert os.path.exists(young)


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
    assert image_rows(app) == 0
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
