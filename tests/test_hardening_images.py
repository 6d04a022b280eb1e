"""Decompression bombs: files small on the wire that decode huge, alone or many in one request.

Each attack is refused with a 400 that names the file, its pixels and the limit, before any pixel
is decoded, or accepted and decoded within bounds: a worker of a real gunicorn stays under
300 MB while it checks the worst accepted images and makes every thumbnail of them.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import http.client
import io
import json
import os
import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import Auth, bucket_keys, image_rows, media_files, post_files, settings
from live_server import serve
from PIL import Image as PILImage
from seaweed import S3Server

from imagestore import config as defaults
from imagestore import create_app
from imagestore.storage.s3 import S3Storage

LIMIT = f"at most {defaults.MAX_DECODED_MB} MB are allowed"
WORKER_PEAK_MB = 300


# Attacks: flat colours compress to almost nothing whatever their size


@functools.cache
def flat(fmt: str, mode: str, size: tuple[int, int], **options: Any) -> bytes:
    """Return an image of one colour in a Pillow format; the same call reuses its bytes."""
    colour = {"RGBA": (10, 20, 30, 40), "CMYK": (1, 2, 3, 4), "I;16": 30000}.get(mode, 7)
    buffer = io.BytesIO()
    PILImage.new(mode, size, colour).save(buffer, fmt, **options)
    return buffer.getvalue()


def webp_bomb() -> bytes:
    """Return the 2 KB lossless WebP of 16383x3051 pixels, just under the pixel limit."""
    return flat("WEBP", "RGB", (16383, 3051), lossless=True)


def gif_outgrowing_its_screen(width: int, height: int) -> bytes:
    """Return a GIF whose 10x10 logical screen holds one frame of `width` x `height`."""
    content = bytearray(flat("GIF", "P", (width, height)))
    content[6:10] = struct.pack("<HH", 10, 10)
    return bytes(content)


def mpo(size: tuple[int, int]) -> bytes:
    """Return an MPO: a JPEG with a second picture after it, as phone cameras write."""
    buffer = io.BytesIO()
    first, second = PILImage.new("RGB", size, "teal"), PILImage.new("RGB", (64, 48), "navy")
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    return buffer.getvalue()


def noise_webp(size: tuple[int, int]) -> bytes:
    """Return a lossy WebP of noise: large pixels and a large file at once."""
    pixels = PILImage.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    pixels.save(buffer, "WEBP", quality=90)
    return buffer.getvalue()


# Helpers


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


def assert_refused(response: Any, app: Flask, *parts: str) -> None:
    """Assert a 400 problem whose detail holds every part, and that nothing was stored."""
    assert response.status_code == 400, response.json
    assert response.content_type == "application/problem+json"
    for part in parts:
        assert part in response.json["detail"]
    assert media_files(app) == []
    assert image_rows(app) == 0


# One file over the memory limit: 400 naming it, before any pixel is decoded


def test_a_2_kb_lossless_webp_of_16383x3051_is_refused(
    app: Flask, client: FlaskClient, alice: Auth
) -> None:
    """Attack: the 2 KB WebP that took a worker from 145 MB to 910 MB."""
    bomb = webp_bomb()
    assert len(bomb) < 4096

    response = post_files(client, alice, [(bomb, "flat.webp")])

    reason = (
        f"The image has 16383x3051 pixels, which take about 763 MB of memory to decode; {LIMIT}."
    )
    assert_refused(response, app, f"flat.webp: {reason}")
    assert response.json["errors"] == {"files": {"image": [reason]}}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("image", "options"),
    [
        (("PNG", "RGBA", (7071, 7071)), {}),
        (("JPEG", "RGB", (7071, 7071)), {"progressive": True, "subsampling": 0}),
        (("JPEG", "CMYK", (7071, 7071)), {"progressive": True}),
        (("WEBP", "RGBA", (5000, 5000)), {"lossless": True}),
    ],
    ids=["png", "progressive-jpeg", "progressive-cmyk-jpeg", "webp-with-alpha"],
)
def test_a_small_file_that_decodes_huge_is_refused(
    app: Flask,
    client: FlaskClient,
    alice: Auth,
    image: tuple[str, str, tuple[int, int]],
    options: dict[str, Any],
) -> None:
    """Attack: a flat image under the pixel limit that compresses to a few hundred KB.

    A progressive JPEG is decoded from all its coefficients at once, whatever the scale.
    """
    content = flat(*image, **options)
    assert len(content) < 1024 * 1024

    response = post_files(client, alice, [(content, "small.img")])

    width, height = image[2]
    assert_refused(response, app, "small.img: ", f"has {width}x{height} pixels", LIMIT)


def test_a_huge_gif_frame_in_a_tiny_screen_is_judged_by_the_frame(
    make_app: Callable[..., Flask], alice: Auth
) -> None:
    """Attack: a GIF whose 10x10 screen hides a 7071x7071 frame (95 MB to decode)."""
    app = make_app(MAX_DECODED_MB=64)

    response = post_files(app.test_client(), alice, [(gif_outgrowing_its_screen(7071, 7071), "g")])

    assert_refused(response, app, "has 7071x7071 pixels", "about 96 MB", "at most 64 MB")


def test_the_memory_limit_is_a_setting(make_app: Callable[..., Flask], alice: Auth) -> None:
    """Attack: probing the limit; a 512x510 RGB PNG takes just under 1 MB with its file."""
    app = make_app(MAX_DECODED_MB=1)
    client = app.test_client()

    accepted = post_files(client, alice, [(flat("PNG", "RGB", (512, 510)), "fits.png")])
    refused = post_files(client, alice, [(flat("PNG", "RGB", (512, 520)), "over.png")])

    assert accepted.status_code == 201, accepted.json
    assert refused.status_code == 400
    assert refused.json["detail"] == (
        "over.png: The image has 512x520 pixels, which take about 2 MB of memory to decode;"
        " at most 1 MB are allowed."
    )
    assert image_rows(app) == 1


def test_forty_webp_bombs_in_one_request_are_refused_at_once(
    app: Flask, client: FlaskClient, alice: Auth
) -> None:
    """Attack: 40 of the 2 KB WebPs in one request, which kept a worker for 33 s."""
    files = [(webp_bomb(), f"bomb-{number}.webp") for number in range(40)]
    started = time.monotonic()

    response = post_files(client, alice, files)

    assert time.monotonic() - started < 10  # refused from their headers, none decoded
    assert_refused(response, app, "40 of 40 files are not accepted images", "#39 bomb-39.webp")
    assert len(response.json["errors"]["files"]["image"]) == 40


# Many files together over the request's budget


def test_files_together_over_the_request_budget_are_refused_before_decoding(
    app: Flask, client: FlaskClient, alice: Auth
) -> None:
    """Attack: 22 GIFs of 50 megapixels (37 KB each), each under the limit, 2.1 GB together."""
    files = [(flat("GIF", "P", (7071, 7071)), f"{number}.gif") for number in range(22)]

    response = post_files(client, alice, files)

    message = (
        "The 22 files take about 2099 MB of memory to decode; at most 2048 MB are allowed in"
        " one request. Send them in several."
    )
    assert_refused(response, app, message)
    assert response.json["errors"] == {"files": {"image": [message]}}


def test_the_request_budget_is_a_setting(make_app: Callable[..., Flask], alice: Auth) -> None:
    """Attack: probing the budget; each 512x510 RGB PNG takes just under 1 MB with its file."""
    app = make_app(MAX_REQUEST_DECODED_MB=3)
    client = app.test_client()
    three = [(flat("PNG", "RGB", (512, 510)), f"{number}.png") for number in range(3)]

    accepted = post_files(client, alice, three)
    refused = post_files(client, alice, [*three, (flat("PNG", "RGB", (512, 510)), "4.png")])

    assert accepted.status_code == 201, accepted.json
    assert refused.status_code == 400
    assert refused.json["detail"] == (
        "The 4 files take about 4 MB of memory to decode; at most 3 MB are allowed in one"
        " request. Send them in several."
    )
    assert image_rows(app) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("image", "options"),
    [(("PNG", "RGBA", (1920, 1080)), {}), (("JPEG", "RGB", (4032, 3024)), {"quality": 90})],
    ids=["1080p-screenshots-with-alpha", "12-megapixel-photos"],
)
def test_ordinary_bulk_uploads_fit_the_request_budget(
    make_app: Callable[..., Flask],
    alice: Auth,
    image: tuple[str, str, tuple[int, int]],
    options: dict[str, Any],
) -> None:
    """Not an attack: 100 screenshots or 100 phone photos in one request stay accepted."""
    app = make_app(MAX_UPLOAD_MB=100)  # real photos are larger than these flat ones
    files = [(flat(*image, **options), f"{number}.img") for number in range(100)]

    response = post_files(app.test_client(), alice, files)

    assert response.status_code == 201, response.json
    assert image_rows(app) == 100


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
            assert thumbnail.width == size
            assert thumbnail.height <= 6


def test_a_50_megapixel_mpo_is_checked_reduced(client: FlaskClient, alice: Auth) -> None:
    """Attack: a JPEG with a second picture (MPO), which was decoded whole (190 MB) on upload."""
    pair = mpo((7071, 7071))

    response, growth = peak_growth_mb(lambda: post_files(client, alice, [(pair, "pair.jpg")]))

    assert response.status_code == 201, response.json
    assert growth < 32, f"{growth:.0f} MB"


def test_a_16_bit_greyscale_png_gets_a_grey_thumbnail(client: FlaskClient, alice: Auth) -> None:
    """Attack: 16-bit samples, which Pillow cannot reduce: the thumbnail failed with a 500."""
    image = post_files(client, alice, [(flat("PNG", "I;16", (1200, 800)), "deep.png")]).json

    response = client.get(image["thumbnails"]["256"], auth=alice)

    assert response.status_code == 200
    with PILImage.open(io.BytesIO(response.data)) as thumbnail:
        assert thumbnail.size == (256, 171)
        red, green, blue = thumbnail.convert("RGB").getpixel((128, 85))
        assert abs(red - 30000 // 256) <= 3
        assert red == green == blue


def test_a_thumbnail_over_a_lowered_limit_is_409_and_the_file_still_downloads(
    make_app: Callable[..., Flask], client: FlaskClient, alice: Auth
) -> None:
    """Attack: a large image stored before MAX_DECODED_MB was lowered, asked for its thumbnail."""
    image = post_files(client, alice, [(flat("PNG", "RGB", (1000, 1000)), "big.png")]).json
    lowered = make_app(MAX_DECODED_MB=1).test_client()

    thumbnail = lowered.get(image["thumbnails"]["128"], auth=alice)
    original = lowered.get(f"/api/images/{image['id']}/file", auth=alice)

    assert thumbnail.status_code == 409
    assert thumbnail.content_type == "application/problem+json"
    assert thumbnail.json["detail"] == (
        f"No thumbnail is made of image {image['id']}. The image has 1000x1000 pixels, which"
        " take about 4 MB of memory to decode; at most 1 MB are allowed."
    )
    assert original.status_code == 200
    assert not any(name.endswith(".webp") for name in media_files(lowered.application))


@pytest.mark.parametrize("name", ["MAX_DECODED_MB", "MAX_REQUEST_DECODED_MB"])
@pytest.mark.parametrize("value", ["lots", 0, True])
def test_a_bad_memory_limit_stops_the_app(
    database_url: str, tmp_path: Path, name: str, value: Any
) -> None:
    """Attack on the configuration: a limit that is no number, or none, fails at startup."""
    with pytest.raises(ValueError, match=name):
        create_app(settings(database_url, tmp_path) | {name: value})


# The S3 backend: the same refusals leave nothing in the bucket or the staging folder


@pytest.fixture
def s3_app(make_app: Callable[..., Flask], s3_settings: dict[str, Any], tmp_path: Path) -> Flask:
    """An app storing in the test bucket, staging in a folder of the test's own."""
    app = make_app(**s3_settings)
    storage = app.extensions["imagestore.storage"]
    assert isinstance(storage, S3Storage)
    storage.staging_folder = str(tmp_path / "staging")
    return app


def test_s3_webp_bombs_leave_no_object_and_no_staged_file(
    s3_app: Flask, s3_server: S3Server, bucket: str, alice: Auth, tmp_path: Path
) -> None:
    """Attack: the 40 WebP bombs, against the S3 backend."""
    files = [(webp_bomb(), f"bomb-{number}.webp") for number in range(40)]

    response = post_files(s3_app.test_client(), alice, files)

    assert response.status_code == 400
    assert bucket_keys(s3_server, bucket) == []
    assert os.listdir(tmp_path / "staging") == []
    assert image_rows(s3_app) == 0


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


def test_s3_thumbnail_over_a_lowered_limit_is_409_and_stores_nothing(
    make_app: Callable[..., Flask],
    s3_app: Flask,
    s3_settings: dict[str, Any],
    s3_server: S3Server,
    bucket: str,
    alice: Auth,
) -> None:
    """Attack: a stored image over a lowered MAX_DECODED_MB, its thumbnail asked from S3."""
    image = post_files(
        s3_app.test_client(), alice, [(flat("PNG", "RGB", (1000, 1000)), "big.png")]
    ).json
    lowered = make_app(**s3_settings, MAX_DECODED_MB=1).test_client()

    response = lowered.get(image["thumbnails"]["256"], auth=alice)

    assert response.status_code == 409
    assert bucket_keys(s3_server, bucket) == [f"media/{image['sha256'][:2]}/{image['sha256']}.png"]


# A real gunicorn: the worst accepted images keep every worker under 300 MB


def worst_accepted() -> list[tuple[str, bytes]]:
    """Return the images closest to the default limit of 160 MB to decode, one of each kind.

    The figures are the service's estimates: pixels times the bytes each takes while decoding,
    plus the file.
    """
    return [
        # 10.5 megapixels at 16 bytes: 160 MB.
        ("flat.webp", flat("WEBP", "RGB", (4096, 2559), lossless=True)),
        # 9.6 megapixels at 16 bytes, and a file of about 8 MB: 155 MB.
        ("noise.webp", noise_webp((4000, 2400))),
        # 20.9 megapixels at 4 bytes and a premultiplied copy: 159 MB.
        ("alpha.png", flat("PNG", "RGBA", (5120, 4080))),
        # 41.8 megapixels at 4 bytes: 159 MB.
        ("colour.png", flat("PNG", "RGB", (8192, 5100))),
        # 50 megapixels (the pixel limit) at 2 bytes: 95 MB.
        ("deep.png", flat("PNG", "I;16", (7071, 7071))),
        ("screen.gif", flat("GIF", "P", (7071, 7071))),
        # 20.4 megapixels of CMYK coefficients at 2 bytes a sample: 156 MB.
        ("progressive.jpg", flat("JPEG", "CMYK", (5500, 3700), progressive=True)),
        # 50 megapixels, decoded at 1/8: 3 MB.
        ("strip.jpg", flat("JPEG", "RGB", (65000, 769))),
    ]


def call(url: str, auth: Auth, method: str = "GET", body: bytes = b"", **headers: str) -> Any:
    """Send one request; return its status and its body (JSON when it is JSON)."""
    parts = urlsplit(url)
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        path = f"{parts.path}?{parts.query}" if parts.query else parts.path
        connection.request(method, path, body, {"Authorization": f"Basic {token}", **headers})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.getheader("Content-Type", "").endswith("json"):
        return response.status, json.loads(data)
    return response.status, data


def upload(url: str, auth: Auth, name: str, content: bytes) -> Any:
    """Upload one file as multipart form data; return status and JSON body."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    return call(f"{url}/api/images/", auth, "POST", body, **{"Content-Type": content_type})


@pytest.mark.slow
def test_worst_accepted_images_keep_every_gunicorn_worker_under_300_mb(tmp_path: Path) -> None:
    """Attack: the largest images still accepted, each uploaded then asked for every thumbnail.

    The peak RSS (VmHWM) of every worker is read after each request.
    """
    images = worst_accepted()
    with serve(tmp_path) as server:
        workers = server.workers()
        assert workers, server.log_tail()
        peaks: dict[int, float] = {}
        for name, content in images:
            status, image = upload(server.url, server.user, name, content)
            assert status == 201, (name, image)
            for size, thumbnail_url in image["thumbnails"].items():
                status, data = call(thumbnail_url, server.user)
                assert status == 200, (name, size, data)
            for pid in workers:
                peaks[pid] = max(peaks.get(pid, 0.0), status_mb(pid, "VmHWM"))
        assert server.workers() == workers, "a worker was replaced"

    assert max(peaks.values()) > defaults.MAX_DECODED_MB  # the worst cases did run
    assert all(peak < WORKER_PEAK_MB for peak in peaks.values()), peaks
