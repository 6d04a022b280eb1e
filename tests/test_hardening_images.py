"""Decompression bombs: files small on the wire that decode huge.

An accepted image is decoded within bounds: its thumbnails decode reduced where the format can.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage
from seaweed import S3Server

from imagestore.storage import S3Storage

Auth = tuple[str, str]


# Attacks: flat colours compress to almost nothing whatever their size


@functools.cache
def flat(fmt: str, mode: str, size: tuple[int, int], **options: Any) -> bytes:
    """Return an image of one colour in a Pillow format; the same call reuses its bytes."""
    colour = {"RGBA": (10, 20, 30, 40), "CMYK": (1, 2, 3, 4), "I;16": 30000}.get(mode, 7)
    buffer = io.BytesIO()
    PILImage.new(mode, size, colour).save(buffer, fmt, **options)
    return buffer.getvalue()


# Helpers


def post_files(client: FlaskClient, auth: Auth, files: list[tuple[bytes, str]]) -> Any:
    """Upload files in the `image` fields of one request."""
    data = {"image": [(io.BytesIO(content), name) for content, name in files]}
    return client.post("/api/images/", data=data, auth=auth, content_type="multipart/form-data")


def status_field(pid: int | str, key: str) -> str:
    """Return one field of a process's status (/proc/PID/status), as text."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split()[1]
    raise KeyError(key)


def status_mb(pid: int | str, key: str) -> float:
    """Return a memory figure (VmRSS, VmHWM) of a process, in MB."""
    return int(status_field(pid, key)) / 1024


def peak_growth_mb(action: Callable[[], Any]) -> tuple[Any, float]:
    """Run an action; return its result and how far this process's peak RSS rose meanwhile."""
    clear_refs = Path("/proc/self/clear_refs")
    if not os.access(clear_refs, os.W_OK):
        pytest.skip("the peak RSS of a process cannot be reset here")
    # Memory that earlier tests freed but the heap kept would hide new allocations.
    malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)
    clear_refs.write_text("5")  # the peak (VmHWM) starts again from the current RSS
    before = status_mb("self", "VmRSS")
    result = action()
    return result, status_mb("self", "VmHWM") - before


# Accepted images decode within bounds


def test_a_65000x769_jpeg_has_thumbnails_decoded_reduced(client: FlaskClient, alice: Auth) -> None:
    """Attack: a 50-megapixel strip, which a square draft box decoded whole (382 MB)."""
    image = post_files(client, alice, [(flat("JPEG", "RGB", (65000, 769)), "strip.jpg")]).json

    for size in (128, 256, 512):
        response, growth = peak_growth_mb(
            lambda size=size: client.get(image["thumbnails"][str(size)], auth=alice)
        )

        assert response.status_code == 200
        assert growth < 32, f"{size}: {growth:.0f} MB"
        with PILImage.open(io.BytesIO(response.data)) as thumbnail:
            assert thumbnail.width == size and thumbnail.height <= 6


def test_a_16_bit_greyscale_png_gets_a_grey_thumbnail(client: FlaskClient, alice: Auth) -> None:
    """Attack: 16-bit samples, which Pillow cannot reduce: the thumbnail failed with a 500."""
    image = post_files(client, alice, [(flat("PNG", "I;16", (1200, 800)), "deep.png")]).json

    response = client.get(image["thumbnails"]["256"], auth=alice)

    assert response.status_code == 200
    with PILImage.open(io.BytesIO(response.data)) as thumbnail:
        assert thumbnail.size == (256, 171)
        red, green, blue = thumbnail.convert("RGB").getpixel((128, 85))
        assert abs(red - 30000 // 256) <= 3 and red == green == blue


# The S3 backend


@pytest.fixture
def s3_app(
    make_app: Callable[..., Flask], s3_settings: dict[str, Any], tmp_path: Path
) -> Iterator[Flask]:
    """An app storing in the test bucket, staging in a folder of the test's own."""
    app = make_app(**s3_settings)
    storage = app.extensions["imagestore.storage"]
    assert isinstance(storage, S3Storage)
    storage.staging_folder = str(tmp_path / "staging")
    yield app


def bucket_keys(s3_server: S3Server, bucket: str) -> list[str]:
    """List the keys of the test bucket, read directly from the store."""
    found = s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(item["Key"] for item in found)


def test_s3_strip_thumbnails_are_decoded_reduced(
    s3_app: Flask, s3_server: S3Server, bucket: str, alice: Auth
) -> None:
    """Attack: the 65000x769 JPEG strip, its thumbnails read from the object store."""
    client = s3_app.test_client()
    image = post_files(client, alice, [(flat("JPEG", "RGB", (65000, 769)), "strip.jpg")]).json

    response, growth = peak_growth_mb(lambda: client.get(image["thumbnails"]["512"], auth=alice))

    assert response.status_code == 200
    assert growth < 32, f"{growth:.0f} MB"
    assert f"media/{image['sha256'][:2]}/{image['sha256']}.512.webp" in bucket_keys(
        s3_server, bucket
    )
