"""The images API: upload, list, filter, fetch, re-tag, delete and download images."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import image_bytes, image_rows, media_files, result_ids, set_created_at
from PIL import Image as PILImage

from imagestore.db import db
from imagestore.models import Image

ACCEPTED = "JPEG, PNG, GIF, WEBP"
NOT_AN_IMAGE = f"The file is not an image in an accepted format ({ACCEPTED})."
STORED_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.(jpg|png|gif|webp)$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10" fill="red"/></svg>'
)
BOUNDARY = "------------------------d74496d66958873e"


# Helpers


def noisy_png(size: tuple[int, int] = (64, 64)) -> bytes:
    """Return a PNG of noise: it does not compress, so cutting it lands inside the pixel data."""
    buffer = io.BytesIO()
    pixels = hashlib.shake_256(b"noise").digest(size[0] * size[1])
    PILImage.frombytes("L", size, pixels).save(buffer, "PNG")
    return buffer.getvalue()


def corrupted(content: bytes) -> bytes:
    """Return the image with a run of bytes in its pixel data inverted."""
    middle = len(content) // 2
    damaged = bytearray(content)
    for index in range(middle, middle + 200):
        damaged[index] ^= 0xFF
    return bytes(damaged)


def curl_body(parts: list[tuple[str, str | None, str | None, bytes]]) -> bytes:
    """Return a multipart body as curl -F writes it, from (name, filename, type, content) parts."""
    body = b""
    for name, filename, content_type, content in parts:
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{BOUNDARY}\r\n{disposition}\r\n".encode()
        if content_type is not None:
            body += f"Content-Type: {content_type}\r\n".encode()
        body += b"\r\n" + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def at(text: str) -> datetime:
    """Parse an ISO 8601 timestamp."""
    return datetime.fromisoformat(text)


@pytest.fixture
def tags(alice: tuple[str, str], make_tag: Callable[..., dict[str, Any]]) -> list[str]:
    """Create the tags `cats`, `dogs` and `my tag`."""
    return [make_tag(name, alice)["name"] for name in ("cats", "dogs", "my tag")]


@pytest.fixture
def photo(alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]) -> dict[str, Any]:
    """Upload one PNG of alice's tagged `cats`."""
    response = upload(alice, tags=["cats"])
    assert response.status_code == 201, response.json
    return response.json


# Upload


def test_upload_is_201_with_the_image(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG", (8, 6))

    response = upload(alice, content=content, filename="photo.png")

    assert response.status_code == 201
    body = response.json
    assert body == {
        "id": body["id"],
        "image": f"http://localhost/api/images/{body['id']}/file",
        "tags": [],
        "thumbnails": {
            str(size): f"http://localhost/api/images/{body['id']}/file?size={size}"
            for size in (128, 256, 512)
        },
        "filename": "photo.png",
        "content_type": "image/png",
        "format": "PNG",
        "size": len(content),
        "width": 8,
        "height": 6,
        "sha256": hashlib.sha256(content).hexdigest(),
        "created_by": "alice",
        "created_at": body["created_at"],
    }
    assert TIMESTAMP.match(body["created_at"])


def test_upload_answers_with_the_location_of_the_image(
    alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    response = upload(alice)

    assert response.headers["Location"] == f"http://localhost/api/images/{response.json['id']}/"


def test_upload_stores_the_bytes_under_their_checksum(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG")
    checksum = hashlib.sha256(content).hexdigest()

    upload(alice, content=content, filename="holiday.png")

    [stored] = media_files(app)
    assert stored == f"{checksum[:2]}/{checksum}.png"
    with open(os.path.join(app.config["MEDIA_FOLDER"], stored), "rb") as file:
        assert file.read() == content


def test_upload_as_curl_sends_it_is_accepted(
    client: FlaskClient, alice: tuple[str, str], tags: list[str]
) -> None:
    content = image_bytes("JPEG")
    body = curl_body([("image", "x.jpeg", "image/jpeg", content), ("tags", None, None, b"my tag")])

    response = client.post(
        "/api/images/",
        data=body,
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
        auth=alice,
    )

    assert response.status_code == 201
    assert response.json["tags"] == ["my tag"]
    assert response.json["filename"] == "x.jpeg"
    assert response.json["content_type"] == "image/jpeg"


def test_upload_takes_tags_as_repeated_fields(
    alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]
) -> None:
    response = upload(alice, tags=["dogs", "cats"])

    assert response.status_code == 201
    assert response.json["tags"] == ["cats", "dogs"]


def test_upload_takes_tags_as_one_comma_separated_value(
    alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]
) -> None:
    response = upload(alice, tags=["dogs, my tag,cats"])

    assert response.status_code == 201
    assert response.json["tags"] == ["cats", "dogs", "my tag"]


def test_upload_without_tags_has_none(alice: tuple[str, str], upload: Callable[..., Any]) -> None:
    response = upload(alice)

    assert response.status_code == 201
    assert response.json["tags"] == []


def test_upload_with_an_empty_tags_field_has_no_tags(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    data = {"image": (io.BytesIO(image_bytes()), "a.png"), "tags": ""}

    response = client.post("/api/images/", data=data, auth=alice)

    assert response.status_code == 201
    assert response.json["tags"] == []


def test_upload_finds_tags_whatever_their_case(
    alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]
) -> None:
    response = upload(alice, tags=["CATS", "My Tag"])

    assert response.status_code == 201
    assert response.json["tags"] == ["cats", "my tag"]


def test_upload_with_a_tag_given_twice_has_it_once(
    alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]
) -> None:
    response = upload(alice, tags=["cats", "Cats", "cats,dogs"])

    assert response.status_code == 201
    assert response.json["tags"] == ["cats", "dogs"]


def test_upload_with_unknown_tag_is_400_naming_them(
    alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]
) -> None:
    response = upload(alice, tags=["cats", "nope", "other"])

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.json["errors"] == {"form": {"tags": ["Unknown tags: nope, other."]}}
    assert "nope" in response.json["detail"]
    assert "other" in response.json["detail"]


def test_upload_with_unknown_tag_leaves_no_file_and_no_row(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]
) -> None:
    upload(alice, tags=["cats", "nope"])

    assert media_files(app) == []
    assert image_rows(app) == 0


def test_upload_with_an_invalid_tag_name_is_400(
    alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    response = upload(alice, tags=["x" * 51])

    assert response.status_code == 400
    assert "tags" in response.json["errors"]["form"]


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_upload_accepts_each_format_with_its_properties(
    alice: tuple[str, str], upload: Callable[..., Any], fmt: str, content_type: str
) -> None:
    content = image_bytes(fmt, (12, 7))

    response = upload(alice, content=content, filename=f"picture.{fmt.lower()}")

    assert response.status_code == 201
    assert response.json["content_type"] == content_type
    assert (response.json["width"], response.json["height"]) == (12, 7)
    assert response.json["size"] == len(content)
    assert response.json["sha256"] == hashlib.sha256(content).hexdigest()


def test_upload_content_type_comes_from_the_content_not_the_name(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    data = {"image": (io.BytesIO(image_bytes("GIF")), "fake.jpg", "image/jpeg")}

    response = client.post("/api/images/", data=data, auth=alice)

    assert response.status_code == 201
    assert response.json["content_type"] == "image/gif"


def test_upload_stores_the_file_with_the_suffix_of_its_format(
    app: Flask, client: FlaskClient, alice: tuple[str, str]
) -> None:
    data = {"image": (io.BytesIO(image_bytes("WEBP")), "fake.png", "image/png")}

    client.post("/api/images/", data=data, auth=alice)

    [stored] = media_files(app)
    assert stored.endswith(".webp")


def several_pictures(fmt: str) -> bytes:
    """Return a file of two pictures: an MPO (a JPEG with a second picture after it, as phone
    cameras write), or an animated PNG."""
    buffer = io.BytesIO()
    first, second = PILImage.new("RGB", (12, 7), "teal"), PILImage.new("RGB", (12, 7), "navy")
    first.save(buffer, fmt, save_all=True, append_images=[second])
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "content_type", "suffix"), [("MPO", "image/jpeg", ".jpg"), ("PNG", "image/png", ".png")]
)
def test_an_mpo_is_a_jpeg_and_an_animated_png_a_png(
    app: Flask,
    client: FlaskClient,
    alice: tuple[str, str],
    upload: Callable[..., Any],
    fmt: str,
    content_type: str,
    suffix: str,
) -> None:
    """Pillow opens them as MPO and APNG, types browsers do not show or the filter refused."""
    image = upload(alice, content=several_pictures(fmt), filename=f"camera.{fmt.lower()}").json

    assert (image["format"], image["content_type"]) == (fmt.replace("MPO", "JPEG"), content_type)
    [stored] = media_files(app)
    assert stored.endswith(suffix)
    found = client.get(f"/api/images/?content_type={content_type}", auth=alice)
    assert result_ids(found) == [image["id"]]
    assert client.get(image["image"], auth=alice).content_type == content_type


NOISY_PNG = noisy_png()
NOT_IMAGES = {
    "text": (b"just some words\n", "notes.png", NOT_AN_IMAGE),
    "svg": (SVG, "drawing.svg", NOT_AN_IMAGE),
    "empty": (b"", "empty.png", NOT_AN_IMAGE),
    "random bytes": (bytes(range(256)) * 8, "noise.jpg", NOT_AN_IMAGE),
    "bmp": (image_bytes("BMP"), "old.bmp", NOT_AN_IMAGE),
    "tiff": (image_bytes("TIFF"), "scan.tif", NOT_AN_IMAGE),
    "truncated png": (
        NOISY_PNG[: len(NOISY_PNG) // 2],
        "cut.png",
        "The image is damaged or truncated",
    ),
    "corrupt png": (corrupted(NOISY_PNG), "broken.png", "The image is damaged or truncated"),
    "png header only": (image_bytes("PNG")[:16], "header.png", "The image is damaged"),
}


@pytest.mark.parametrize("case", NOT_IMAGES.values(), ids=NOT_IMAGES.keys())
def test_upload_of_something_not_an_image_is_400_saying_why(
    alice: tuple[str, str], upload: Callable[..., Any], case: tuple[bytes, str, str]
) -> None:
    content, filename, message = case

    response = upload(alice, content=content, filename=filename)

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    [error] = response.json["errors"]["files"]["image"]
    assert error.startswith(message)
    assert error in response.json["detail"]


@pytest.mark.parametrize("case", NOT_IMAGES.values(), ids=NOT_IMAGES.keys())
def test_upload_of_something_not_an_image_leaves_no_file_and_no_row(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any], case: tuple[bytes, str, str]
) -> None:
    content, filename, _ = case

    upload(alice, content=content, filename=filename)

    assert media_files(app) == []
    assert image_rows(app) == 0


def test_upload_without_the_image_field_is_400(
    client: FlaskClient, alice: tuple[str, str], tags: list[str]
) -> None:
    response = client.post(
        "/api/images/", data={"tags": "cats"}, content_type="multipart/form-data", auth=alice
    )

    assert response.status_code == 400
    assert response.json["errors"] == {"files": {"image": ["Missing data for required field."]}}
    assert response.json["detail"]


def test_upload_with_the_image_as_a_plain_field_is_400(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    response = client.post(
        "/api/images/", data={"image": "photo.png"}, content_type="multipart/form-data", auth=alice
    )

    assert response.status_code == 400
    assert "image" in response.json["detail"]


def test_upload_with_a_json_body_is_415(client: FlaskClient, alice: tuple[str, str]) -> None:
    response = client.post("/api/images/", json={"image": "photo.png"}, auth=alice)

    assert response.status_code == 415
    assert response.json["accepted"] == ["multipart/form-data"]


def test_upload_of_two_files_stores_both_and_answers_a_list(
    app: Flask, client: FlaskClient, alice: tuple[str, str]
) -> None:
    files = [(io.BytesIO(image_bytes()), "a.png"), (io.BytesIO(image_bytes("GIF")), "b.gif")]

    response = client.post("/api/images/", data={"image": files}, auth=alice)

    assert response.status_code == 201
    assert [image["filename"] for image in response.json] == ["a.png", "b.gif"]
    assert image_rows(app) == 2


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/x.png", "x.png"),
        ("/absolute/path/y.png", "y.png"),
        ("a\x00b\x07c\td\x1f.png", "abcd.png"),
        ("ph\u202eoto.png", "photo.png"),
        ("  spaced.png  ", "spaced.png"),
        ("", "image.png"),
        ("..", "image.png"),
        ("../..", "image.png"),
        ("résumé.png", "résumé.png"),
    ],
)
def test_upload_sanitizes_the_filename(
    alice: tuple[str, str], upload: Callable[..., Any], given: str, kept: str
) -> None:
    response = upload(alice, filename=given)

    assert response.status_code == 201
    assert response.json["filename"] == kept


def test_upload_cuts_a_long_filename_keeping_its_extension(
    alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    response = upload(alice, filename="x" * 300 + ".png")

    assert response.status_code == 201
    assert len(response.json["filename"]) == 255
    assert response.json["filename"].endswith("x.png")


def test_upload_with_a_path_in_the_filename_writes_only_in_the_media_folder(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any], tmp_path: Any
) -> None:
    media = tmp_path / "media"
    escapes = [media / "x.png", tmp_path / "x.png", tmp_path.parent / "x.png"]

    upload(alice, filename="../../x.png")

    assert [path for path in escapes if path.exists()] == []
    [stored] = media_files(app)
    assert STORED_NAME.match(stored)


def test_upload_over_the_size_limit_is_413_problem_json(
    make_app: Callable[..., Flask], alice: tuple[str, str]
) -> None:
    client = make_app(MAX_UPLOAD_MB=0.001).test_client()
    data = {"image": (io.BytesIO(noisy_png()), "big.png")}

    response = client.post("/api/images/", data=data, auth=alice)

    assert response.status_code == 413
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == 413
    assert response.json["detail"]


def test_upload_over_the_size_limit_leaves_no_file_and_no_row(
    make_app: Callable[..., Flask], alice: tuple[str, str]
) -> None:
    app = make_app(MAX_UPLOAD_MB=0.001)
    data = {"image": (io.BytesIO(noisy_png()), "big.png")}

    app.test_client().post("/api/images/", data=data, auth=alice)

    assert media_files(app) == []
    assert image_rows(app) == 0


def test_upload_under_the_size_limit_is_accepted(
    make_app: Callable[..., Flask], alice: tuple[str, str]
) -> None:
    client = make_app(MAX_UPLOAD_MB=0.001).test_client()
    data = {"image": (io.BytesIO(image_bytes()), "small.png")}

    response = client.post("/api/images/", data=data, auth=alice)

    assert response.status_code == 201


def test_upload_with_too_many_pixels_is_400(
    make_app: Callable[..., Flask], alice: tuple[str, str]
) -> None:
    client = make_app(MAX_IMAGE_PIXELS=100).test_client()
    data = {"image": (io.BytesIO(image_bytes("PNG", (11, 10))), "wide.png")}

    response = client.post("/api/images/", data=data, auth=alice)

    assert response.status_code == 400
    [error] = response.json["errors"]["files"]["image"]
    assert error == "The image has 11x10 pixels; at most 100 are accepted."


def test_upload_with_too_many_pixels_leaves_no_file_and_no_row(
    make_app: Callable[..., Flask], alice: tuple[str, str]
) -> None:
    app = make_app(MAX_IMAGE_PIXELS=100)
    data = {"image": (io.BytesIO(image_bytes("PNG", (11, 10))), "wide.png")}

    app.test_client().post("/api/images/", data=data, auth=alice)

    assert media_files(app) == []
    assert image_rows(app) == 0


def test_upload_with_exactly_the_pixel_limit_is_accepted(
    make_app: Callable[..., Flask], alice: tuple[str, str]
) -> None:
    client = make_app(MAX_IMAGE_PIXELS=100).test_client()
    data = {"image": (io.BytesIO(image_bytes("PNG", (10, 10))), "square.png")}

    response = client.post("/api/images/", data=data, auth=alice)

    assert response.status_code == 201


# List


def test_list_without_images_is_an_empty_page(client: FlaskClient, alice: tuple[str, str]) -> None:
    response = client.get("/api/images/", auth=alice)

    assert response.status_code == 200
    assert response.json == {"count": 0, "next": None, "previous": None, "results": []}


def test_list_shows_images_as_the_detail_does(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get("/api/images/", auth=alice)

    assert response.json["results"] == [photo]


def test_list_is_newest_first(
    app: Flask, client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    first, second, third = (upload(alice).json["id"] for _ in range(3))
    set_created_at(app, first, datetime(2024, 5, 3, tzinfo=UTC))
    set_created_at(app, second, datetime(2024, 5, 1, tzinfo=UTC))
    set_created_at(app, third, datetime(2024, 5, 2, tzinfo=UTC))

    response = client.get("/api/images/", auth=alice)

    assert result_ids(response) == [first, third, second]


def test_list_breaks_ties_by_highest_id_first(
    app: Flask, client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    ids = [upload(alice).json["id"] for _ in range(3)]
    for image_id in ids:
        set_created_at(app, image_id, datetime(2024, 5, 1, 12, tzinfo=UTC))

    response = client.get("/api/images/", auth=alice)

    assert result_ids(response) == sorted(ids, reverse=True)


def test_list_pages_in_the_envelope_with_absolute_links(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    ids = [upload(alice).json["id"] for _ in range(3)]

    response = client.get("/api/images/?page_size=2", auth=alice)

    assert response.json["count"] == 3
    assert response.json["next"] == "http://localhost/api/images/?page_size=2&page=2"
    assert response.json["previous"] is None
    assert result_ids(response) == [ids[2], ids[1]]


def test_list_last_page_links_back_and_not_forward(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    ids = [upload(alice).json["id"] for _ in range(3)]

    response = client.get("/api/images/?page_size=2&page=2", auth=alice)

    assert response.json["count"] == 3
    assert response.json["next"] is None
    assert response.json["previous"] == "http://localhost/api/images/?page_size=2&page=1"
    assert result_ids(response) == [ids[0]]


def test_list_links_keep_the_filters(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]
) -> None:
    for _ in range(3):
        upload(alice, tags=["cats"])
    query = "tags=cats&start_date=2000-01-01&page_size=1&page=2"

    response = client.get(f"/api/images/?{query}", auth=alice)

    base = "http://localhost/api/images/?tags=cats&start_date=2000-01-01&page_size=1"
    assert response.json["next"] == f"{base}&page=3"
    assert response.json["previous"] == f"{base}&page=1"


def test_list_pages_have_10_images_by_default(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    for _ in range(11):
        upload(alice)

    response = client.get("/api/images/", auth=alice)

    assert response.json["count"] == 11
    assert len(response.json["results"]) == 10
    assert response.json["next"] == "http://localhost/api/images/?page=2"


def test_list_accepts_a_page_size_of_100(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get("/api/images/?page_size=100", auth=alice)

    assert response.status_code == 200
    assert result_ids(response) == [photo["id"]]


@pytest.mark.parametrize("page_size", ["101", "0", "-1", "ten", ""])
def test_list_with_a_bad_page_size_is_400(
    client: FlaskClient, alice: tuple[str, str], page_size: str
) -> None:
    response = client.get(f"/api/images/?page_size={page_size}", auth=alice)

    assert response.status_code == 400
    assert list(response.json["errors"]["query"]) == ["page_size"]


@pytest.mark.parametrize("page", ["0", "-1", "two", "1.5"])
def test_list_with_a_bad_page_is_400(
    client: FlaskClient, alice: tuple[str, str], page: str
) -> None:
    response = client.get(f"/api/images/?page={page}", auth=alice)

    assert response.status_code == 400
    assert list(response.json["errors"]["query"]) == ["page"]


def test_list_page_past_the_end_is_404(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get("/api/images/?page=2", auth=alice)

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert response.json["detail"]


def test_list_huge_page_is_404(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get("/api/images/?page=99999999999&page_size=100", auth=alice)

    assert response.status_code == 404


# Filters


@pytest.fixture
def tagged(alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]) -> dict[str, int]:
    """Upload images tagged `cats` and `dogs`, only `cats`, only `dogs`, and nothing."""
    return {
        "both": upload(alice, tags=["cats", "dogs"]).json["id"],
        "cats": upload(alice, tags=["cats"]).json["id"],
        "dogs": upload(alice, tags=["dogs"]).json["id"],
        "none": upload(alice).json["id"],
    }


def test_filter_by_one_tag(
    client: FlaskClient, alice: tuple[str, str], tagged: dict[str, int]
) -> None:
    response = client.get("/api/images/?tags=cats", auth=alice)

    assert result_ids(response) == [tagged["cats"], tagged["both"]]


def test_filter_by_comma_separated_tags_needs_all_of_them(
    client: FlaskClient, alice: tuple[str, str], tagged: dict[str, int]
) -> None:
    response = client.get("/api/images/?tags=cats,dogs", auth=alice)

    assert response.json["count"] == 1
    assert result_ids(response) == [tagged["both"]]


def test_filter_by_repeated_tags_needs_all_of_them(
    client: FlaskClient, alice: tuple[str, str], tagged: dict[str, int]
) -> None:
    response = client.get("/api/images/?tags=cats&tags=dogs", auth=alice)

    assert response.json["count"] == 1
    assert result_ids(response) == [tagged["both"]]


def test_filter_by_tag_ignores_case(
    client: FlaskClient, alice: tuple[str, str], tagged: dict[str, int]
) -> None:
    response = client.get("/api/images/?tags=CATS,Dogs", auth=alice)

    assert result_ids(response) == [tagged["both"]]


def test_filter_by_the_same_tag_twice_is_filtering_by_it_once(
    client: FlaskClient, alice: tuple[str, str], tagged: dict[str, int]
) -> None:
    response = client.get("/api/images/?tags=cats,CATS", auth=alice)

    assert result_ids(response) == [tagged["cats"], tagged["both"]]


def test_filter_by_a_tag_with_a_space(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any], tags: list[str]
) -> None:
    image_id = upload(alice, tags=["my tag"]).json["id"]
    upload(alice, tags=["cats"])

    response = client.get("/api/images/?tags=my%20tag", auth=alice)

    assert result_ids(response) == [image_id]


def test_filter_by_an_unknown_tag_is_empty(
    client: FlaskClient, alice: tuple[str, str], tagged: dict[str, int]
) -> None:
    response = client.get("/api/images/?tags=nope", auth=alice)

    assert response.status_code == 200
    assert response.json == {"count": 0, "next": None, "previous": None, "results": []}


def test_filter_by_a_known_and_an_unknown_tag_is_empty(
    client: FlaskClient, alice: tuple[str, str], tagged: dict[str, int]
) -> None:
    response = client.get("/api/images/?tags=cats,nope", auth=alice)

    assert response.status_code == 200
    assert response.json["count"] == 0


def test_filter_by_an_empty_tags_value_filters_nothing(
    client: FlaskClient, alice: tuple[str, str], tagged: dict[str, int]
) -> None:
    response = client.get("/api/images/?tags=", auth=alice)

    assert response.status_code == 200
    assert response.json["count"] == 4


@pytest.fixture
def around_midnight(
    app: Flask, alice: tuple[str, str], upload: Callable[..., Any]
) -> dict[str, int]:
    """Upload four images created just before, at, near the end of, and after 2024-03-10 UTC."""
    times = {
        "before": datetime(2024, 3, 9, 23, 59, 59, 999999, tzinfo=UTC),
        "start": datetime(2024, 3, 10, 0, 0, 0, tzinfo=UTC),
        "end": datetime(2024, 3, 10, 23, 59, 59, 999999, tzinfo=UTC),
        "after": datetime(2024, 3, 11, 0, 0, 0, tzinfo=UTC),
    }
    ids = {}
    for name, when in times.items():
        ids[name] = upload(alice).json["id"]
        set_created_at(app, ids[name], when)
    return ids


def test_filter_start_date_includes_that_whole_day(
    client: FlaskClient, alice: tuple[str, str], around_midnight: dict[str, int]
) -> None:
    response = client.get("/api/images/?start_date=2024-03-10", auth=alice)

    ids = around_midnight
    assert result_ids(response) == [ids["after"], ids["end"], ids["start"]]


def test_filter_end_date_includes_that_whole_day(
    client: FlaskClient, alice: tuple[str, str], around_midnight: dict[str, int]
) -> None:
    response = client.get("/api/images/?end_date=2024-03-10", auth=alice)

    ids = around_midnight
    assert result_ids(response) == [ids["end"], ids["start"], ids["before"]]


def test_filter_start_and_end_on_the_same_date_is_that_day(
    client: FlaskClient, alice: tuple[str, str], around_midnight: dict[str, int]
) -> None:
    response = client.get("/api/images/?start_date=2024-03-10&end_date=2024-03-10", auth=alice)

    assert result_ids(response) == [around_midnight["end"], around_midnight["start"]]


def test_filter_dates_are_utc_days(
    app: Flask, client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    image_id = upload(alice).json["id"]
    # 23:30 in New York on the 10th is 04:30 UTC on the 11th.
    set_created_at(
        app, image_id, datetime(2024, 3, 10, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    )

    on_tenth = client.get("/api/images/?start_date=2024-03-10&end_date=2024-03-10", auth=alice)
    on_eleventh = client.get("/api/images/?start_date=2024-03-11&end_date=2024-03-11", auth=alice)

    assert result_ids(on_tenth) == []
    assert result_ids(on_eleventh) == [image_id]


def test_filter_dates_combine_with_tags(
    app: Flask, client: FlaskClient, alice: tuple[str, str], tagged: dict[str, int]
) -> None:
    set_created_at(app, tagged["both"], datetime(2024, 1, 1, tzinfo=UTC))
    set_created_at(app, tagged["cats"], datetime(2024, 2, 1, tzinfo=UTC))

    response = client.get("/api/images/?tags=cats&start_date=2024-01-15", auth=alice)

    assert result_ids(response) == [tagged["cats"]]


def test_filter_with_the_last_possible_end_date_is_not_an_error(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get("/api/images/?end_date=9999-12-31", auth=alice)

    assert response.status_code == 200
    assert result_ids(response) == [photo["id"]]


def test_filter_with_the_first_possible_start_date_is_not_an_error(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get("/api/images/?start_date=0001-01-01", auth=alice)

    assert response.status_code == 200
    assert result_ids(response) == [photo["id"]]


@pytest.mark.parametrize("name", ["start_date", "end_date"])
@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-02-30", "10/03/2024", ""])
def test_filter_with_a_bad_date_is_400(
    client: FlaskClient, alice: tuple[str, str], name: str, value: str
) -> None:
    response = client.get(f"/api/images/?{name}={value}", auth=alice)

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.json["errors"] == {"query": {name: ["Not a valid date."]}}
    assert name in response.json["detail"]


def test_filter_with_end_date_before_start_date_is_400(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    response = client.get("/api/images/?start_date=2024-03-10&end_date=2024-03-09", auth=alice)

    assert response.status_code == 400
    assert response.json["errors"] == {"query": {"end_date": ["Must not be before start_date."]}}


# Detail


def test_get_image_returns_it(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get(f"/api/images/{photo['id']}/", auth=alice)

    assert response.status_code == 200
    assert response.json == photo


def test_get_image_lists_tags_sorted_by_name(
    client: FlaskClient,
    alice: tuple[str, str],
    upload: Callable[..., Any],
    make_tag: Callable[..., dict[str, Any]],
) -> None:
    for name in ("zebra", "Apple", "mango"):
        make_tag(name, alice)
    image_id = upload(alice, tags=["zebra", "mango", "Apple"]).json["id"]

    response = client.get(f"/api/images/{image_id}/", auth=alice)

    assert response.json["tags"] == ["Apple", "mango", "zebra"]


def test_get_image_writes_created_at_in_utc_with_z(
    app: Flask, client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    set_created_at(
        app, photo["id"], datetime(2026, 11, 27, 11, tzinfo=timezone(timedelta(hours=1)))
    )

    response = client.get(f"/api/images/{photo['id']}/", auth=alice)

    assert response.json["created_at"] == "2026-11-27T10:00:00Z"


def test_any_user_gets_anothers_image(
    client: FlaskClient, bob: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get(f"/api/images/{photo['id']}/", auth=bob)

    assert response.status_code == 200
    assert response.json["created_by"] == "alice"


@pytest.mark.parametrize("image_id", ["12345", "0", "99999999999", "-1", "abc"])
def test_get_missing_image_is_404(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], image_id: str
) -> None:
    response = client.get(f"/api/images/{image_id}/", auth=alice)

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert response.json["detail"]


def test_post_to_an_image_is_405(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.post(f"/api/images/{photo['id']}/", auth=alice)

    assert response.status_code == 405
    assert response.content_type == "application/problem+json"
    assert "PATCH" in response.headers["Allow"]


# PATCH and PUT


@pytest.mark.parametrize("method", ["patch", "put"])
def test_retag_with_json_replaces_the_tags(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(url, json={"tags": ["dogs", "my tag"]}, auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == ["dogs", "my tag"]
    assert client.get(url, auth=alice).json["tags"] == ["dogs", "my tag"]


@pytest.mark.parametrize("method", ["patch", "put"])
def test_retag_with_repeated_form_fields_replaces_the_tags(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(url, data={"tags": ["dogs", "my tag"]}, auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == ["dogs", "my tag"]
    assert client.get(url, auth=alice).json["tags"] == ["dogs", "my tag"]


@pytest.mark.parametrize("method", ["patch", "put"])
def test_retag_with_a_multipart_comma_separated_field_replaces_the_tags(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(
        url, data={"tags": "dogs,my tag"}, content_type="multipart/form-data", auth=alice
    )

    assert response.status_code == 200
    assert response.json["tags"] == ["dogs", "my tag"]


@pytest.mark.parametrize("method", ["patch", "put"])
def test_retag_with_a_json_comma_separated_string_replaces_the_tags(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(url, json={"tags": "DOGS, cats"}, auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == ["cats", "dogs"]


@pytest.mark.parametrize("method", ["patch", "put"])
def test_retag_with_an_empty_list_clears_the_tags(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(url, json={"tags": []}, auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == []
    assert client.get(url, auth=alice).json["tags"] == []


@pytest.mark.parametrize("method", ["patch", "put"])
def test_retag_with_an_empty_form_field_clears_the_tags(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(url, data={"tags": ""}, auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == []


@pytest.mark.parametrize("method", ["patch", "put"])
def test_retag_with_unknown_tags_is_400_naming_them(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(url, json={"tags": ["dogs", "nope"]}, auth=alice)

    assert response.status_code == 400
    [messages] = response.json["errors"].values()
    assert messages == {"tags": ["Unknown tags: nope."]}
    assert "nope" in response.json["detail"]


@pytest.mark.parametrize("method", ["patch", "put"])
def test_retag_with_unknown_tags_keeps_the_old_tags(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    getattr(client, method)(url, json={"tags": ["dogs", "nope"]}, auth=alice)

    assert client.get(url, auth=alice).json["tags"] == ["cats"]


@pytest.mark.parametrize("method", ["patch", "put"])
@pytest.mark.parametrize("value", [5, None, [1, 2], {"name": "cats"}, ["x" * 51], ["a/b"]])
def test_retag_with_invalid_tags_is_400(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str, value: Any
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(url, json={"tags": value}, auth=alice)

    assert response.status_code == 400
    [messages] = response.json["errors"].values()
    assert "tags" in messages


@pytest.mark.parametrize("method", ["patch", "put"])
def test_retag_with_malformed_json_is_400(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(
        url, data='{"tags": [', content_type="application/json", auth=alice
    )

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.json["detail"]


def test_put_of_the_image_as_fetched_ignores_its_read_only_fields(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    fetched = client.get(f"/api/images/{photo['id']}/", auth=alice).json

    response = client.put(
        f"/api/images/{photo['id']}/", json=fetched | {"tags": ["dogs"]}, auth=alice
    )

    assert response.status_code == 200
    assert response.json == fetched | {"tags": ["dogs"]}


@pytest.mark.parametrize(
    ("field", "location"), [("description", "form"), ("tag", "form"), ("thumbnail", "files")]
)
def test_upload_with_an_unknown_field_is_400_naming_it(
    app: Flask, client: FlaskClient, alice: tuple[str, str], field: str, location: str
) -> None:
    value = (io.BytesIO(image_bytes()), "b.png") if location == "files" else "cats"
    data = {"image": (io.BytesIO(image_bytes()), "a.png"), field: value}

    response = client.post("/api/images/", data=data, auth=alice)

    assert response.status_code == 400
    assert response.json["errors"] == {location: {field: ["Unknown field."]}}
    assert media_files(app) == []


def test_put_without_tags_is_400(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.put(f"/api/images/{photo['id']}/", json={}, auth=alice)

    assert response.status_code == 400
    [messages] = response.json["errors"].values()
    assert messages == {"tags": ["Missing data for required field."]}


def test_put_without_a_body_is_400(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.put(f"/api/images/{photo['id']}/", auth=alice)

    assert response.status_code == 400
    [messages] = response.json["errors"].values()
    assert messages == {"tags": ["Missing data for required field."]}


@pytest.mark.parametrize("body", [{"json": {}}, {}, {"json": {"id": 5, "filename": "x.png"}}])
def test_patch_that_names_no_field_to_change_is_400(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], body: dict[str, Any]
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = client.patch(url, auth=alice, **body)

    assert response.status_code == 400
    [messages] = response.json["errors"].values()
    assert list(messages) == ["tags"]
    assert client.get(url, auth=alice).json == photo


@pytest.mark.parametrize(
    "body",
    [
        {"json": {"tag": ["dogs"]}},
        {"data": json.dumps({"tags": ["dogs"]})},  # JSON sent without its Content-Type
        {"data": json.dumps({"tags": ["dogs"]}), "content_type": "text/plain"},
    ],
)
def test_patch_that_would_change_nothing_silently_is_refused(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], body: dict[str, Any]
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = client.patch(url, auth=alice, **body)

    assert response.status_code in (400, 415)
    assert response.content_type == "application/problem+json"
    assert client.get(url, auth=alice).json == photo


@pytest.mark.parametrize("method", ["patch", "put"])
@pytest.mark.parametrize("image_id", ["12345", "99999999999"])
def test_retag_missing_image_is_404(
    client: FlaskClient, alice: tuple[str, str], tags: list[str], method: str, image_id: str
) -> None:
    response = getattr(client, method)(
        f"/api/images/{image_id}/", json={"tags": ["cats"]}, auth=alice
    )

    assert response.status_code == 404


# Permissions


@pytest.mark.parametrize("method", ["patch", "put"])
def test_another_user_cannot_retag_an_image(
    client: FlaskClient,
    bob: tuple[str, str],
    photo: dict[str, Any],
    method: str,
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(url, json={"tags": ["dogs"]}, auth=bob)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert response.json["detail"]


@pytest.mark.parametrize("method", ["patch", "put"])
def test_another_users_refused_retag_keeps_the_tags(
    client: FlaskClient,
    alice: tuple[str, str],
    bob: tuple[str, str],
    photo: dict[str, Any],
    method: str,
) -> None:
    url = f"/api/images/{photo['id']}/"

    getattr(client, method)(url, json={"tags": ["dogs"]}, auth=bob)

    assert client.get(url, auth=alice).json["tags"] == ["cats"]


def test_another_user_cannot_delete_an_image(
    client: FlaskClient, bob: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.delete(f"/api/images/{photo['id']}/", auth=bob)

    assert response.status_code == 403
    assert response.json["detail"]


def test_another_users_refused_delete_keeps_the_image_and_file(
    app: Flask,
    client: FlaskClient,
    alice: tuple[str, str],
    bob: tuple[str, str],
    photo: dict[str, Any],
) -> None:
    client.delete(f"/api/images/{photo['id']}/", auth=bob)

    assert client.get(f"/api/images/{photo['id']}/", auth=alice).status_code == 200
    assert len(media_files(app)) == 1


@pytest.mark.parametrize("method", ["patch", "put"])
def test_admin_can_retag_anothers_image(
    client: FlaskClient, admin: tuple[str, str], photo: dict[str, Any], method: str
) -> None:
    url = f"/api/images/{photo['id']}/"

    response = getattr(client, method)(url, json={"tags": ["dogs"]}, auth=admin)

    assert response.status_code == 200
    assert response.json["tags"] == ["dogs"]
    assert response.json["created_by"] == "alice"


def test_admin_can_delete_anothers_image(
    app: Flask, client: FlaskClient, admin: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.delete(f"/api/images/{photo['id']}/", auth=admin)

    assert response.status_code == 204
    assert media_files(app) == []


# Delete


def test_delete_image_is_204_without_a_body(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.delete(f"/api/images/{photo['id']}/", auth=alice)

    assert response.status_code == 204
    assert response.data == b""


def test_deleted_image_is_404(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    client.delete(f"/api/images/{photo['id']}/", auth=alice)

    response = client.get(f"/api/images/{photo['id']}/", auth=alice)

    assert response.status_code == 404


def test_delete_image_removes_the_row(
    app: Flask, client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    client.delete(f"/api/images/{photo['id']}/", auth=alice)

    with app.app_context():
        assert db.session.get(Image, photo["id"]) is None


def test_delete_image_removes_its_file(
    app: Flask, client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    assert len(media_files(app)) == 1

    client.delete(f"/api/images/{photo['id']}/", auth=alice)

    assert media_files(app) == []


def test_delete_image_removes_only_its_own_file(
    app: Flask, client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    doomed = upload(alice).json["id"]
    kept = upload(alice, content=image_bytes("GIF")).json["id"]

    client.delete(f"/api/images/{doomed}/", auth=alice)

    [stored] = media_files(app)
    assert stored.endswith(".gif")
    assert client.get(f"/api/images/{kept}/file", auth=alice).status_code == 200


def test_delete_image_keeps_its_tags(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    client.delete(f"/api/images/{photo['id']}/", auth=alice)

    response = client.get("/api/tags/cats/", auth=alice)

    assert response.status_code == 200
    assert response.json["image_count"] == 0


def test_delete_image_twice_is_404(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    client.delete(f"/api/images/{photo['id']}/", auth=alice)

    response = client.delete(f"/api/images/{photo['id']}/", auth=alice)

    assert response.status_code == 404


@pytest.mark.parametrize("image_id", ["12345", "99999999999"])
def test_delete_missing_image_is_404(
    client: FlaskClient, alice: tuple[str, str], image_id: str
) -> None:
    response = client.delete(f"/api/images/{image_id}/", auth=alice)

    assert response.status_code == 404


# File download


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_download_returns_the_exact_bytes_and_content_type(
    client: FlaskClient,
    alice: tuple[str, str],
    upload: Callable[..., Any],
    fmt: str,
    content_type: str,
) -> None:
    content = image_bytes(fmt, (9, 5))
    image_id = upload(alice, content=content).json["id"]

    response = client.get(f"/api/images/{image_id}/file", auth=alice)

    assert response.status_code == 200
    assert response.data == content
    assert response.mimetype == content_type


def test_download_follows_the_image_url(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get(photo["image"], auth=alice)

    assert response.status_code == 200
    assert hashlib.sha256(response.data).hexdigest() == photo["sha256"]


def test_download_tells_browsers_not_to_sniff(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get(f"/api/images/{photo['id']}/file", auth=alice)

    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_download_is_304_when_the_etag_matches(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    url = f"/api/images/{photo['id']}/file"
    etag = client.get(url, auth=alice).headers["ETag"]

    response = client.get(url, headers={"If-None-Match": etag}, auth=alice)

    assert response.status_code == 304
    assert response.data == b""


def test_download_answers_a_range_request(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG")
    image_id = upload(alice, content=content).json["id"]

    response = client.get(
        f"/api/images/{image_id}/file", headers={"Range": "bytes=0-9"}, auth=alice
    )

    assert response.status_code == 206
    assert response.data == content[:10]


@pytest.mark.parametrize(
    "wanted", ["items=0-9", "bytes=0-1,4-5", "bytes=ten-twenty", "bytes=9-2", "bytes"]
)
def test_download_ignores_a_range_it_does_not_serve(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any], wanted: str
) -> None:
    """Another unit, several ranges or an unreadable one: the whole file, not a 416."""
    content = image_bytes("PNG")
    image_id = upload(alice, content=content).json["id"]

    response = client.get(f"/api/images/{image_id}/file", headers={"Range": wanted}, auth=alice)

    assert response.status_code == 200
    assert response.data == content
    assert "Content-Range" not in response.headers


def test_download_of_a_range_past_the_end_is_416(
    client: FlaskClient, alice: tuple[str, str], upload: Callable[..., Any]
) -> None:
    content = image_bytes("PNG")
    image_id = upload(alice, content=content).json["id"]

    response = client.get(
        f"/api/images/{image_id}/file", headers={"Range": f"bytes={len(content)}-"}, auth=alice
    )

    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(content)}"


def test_any_user_downloads_anothers_file(
    client: FlaskClient, bob: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get(f"/api/images/{photo['id']}/file", auth=bob)

    assert response.status_code == 200
    assert len(response.data) == photo["size"]


def test_download_without_credentials_is_401(client: FlaskClient, photo: dict[str, Any]) -> None:
    response = client.get(f"/api/images/{photo['id']}/file")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.content_type == "application/problem+json"


def test_download_with_a_wrong_password_is_401(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    response = client.get(f"/api/images/{photo['id']}/file", auth=("alice", "wrong"))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("image_id", ["12345", "0", "99999999999"])
def test_download_missing_image_is_404(
    client: FlaskClient, alice: tuple[str, str], image_id: str
) -> None:
    response = client.get(f"/api/images/{image_id}/file", auth=alice)

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_download_of_a_deleted_image_is_404(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any]
) -> None:
    client.delete(f"/api/images/{photo['id']}/", auth=alice)

    response = client.get(f"/api/images/{photo['id']}/file", auth=alice)

    assert response.status_code == 404


# Trailing slashes: every route answers both ways, without a redirect


@pytest.mark.parametrize("path", ["/api/images", "/api/images/"])
def test_list_answers_with_and_without_the_slash(
    client: FlaskClient, alice: tuple[str, str], path: str
) -> None:
    response = client.get(path, auth=alice)

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/api/images", "/api/images/"])
def test_upload_answers_with_and_without_the_slash(
    client: FlaskClient, alice: tuple[str, str], path: str
) -> None:
    data = {"image": (io.BytesIO(image_bytes()), "a.png")}

    response = client.post(path, data=data, auth=alice)

    assert response.status_code == 201


@pytest.mark.parametrize("slash", ["", "/"])
def test_get_image_answers_with_and_without_the_slash(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], slash: str
) -> None:
    response = client.get(f"/api/images/{photo['id']}{slash}", auth=alice)

    assert response.status_code == 200


@pytest.mark.parametrize("method", ["patch", "put"])
@pytest.mark.parametrize("slash", ["", "/"])
def test_retag_answers_with_and_without_the_slash(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], method: str, slash: str
) -> None:
    url = f"/api/images/{photo['id']}{slash}"

    response = getattr(client, method)(url, json={"tags": ["dogs"]}, auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == ["dogs"]


@pytest.mark.parametrize("slash", ["", "/"])
def test_delete_answers_with_and_without_the_slash(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], slash: str
) -> None:
    response = client.delete(f"/api/images/{photo['id']}{slash}", auth=alice)

    assert response.status_code == 204


@pytest.mark.parametrize("slash", ["", "/"])
def test_download_answers_with_and_without_the_slash(
    client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], slash: str
) -> None:
    response = client.get(f"/api/images/{photo['id']}/file{slash}", auth=alice)

    assert response.status_code == 200
    assert response.mimetype == "image/png"


# Authentication comes first


ROUTES = [
    ("get", "/api/images/", {}),
    ("get", "/api/images/?page=0&start_date=yesterday", {}),
    ("post", "/api/images/", {}),
    ("post", "/api/images/", {"data": {"image": (io.BytesIO(b"text"), "a.png")}}),
    ("get", "/api/images/1/", {}),
    ("get", "/api/images/12345/", {}),
    ("patch", "/api/images/1/", {"json": {"tags": 5}}),
    ("put", "/api/images/1/", {}),
    ("delete", "/api/images/1/", {}),
    ("get", "/api/images/1/file", {}),
]


@pytest.mark.parametrize(("method", "path", "extra"), ROUTES)
def test_anonymous_request_is_401_before_any_400_or_404(
    client: FlaskClient, photo: dict[str, Any], method: str, path: str, extra: dict[str, Any]
) -> None:
    response = getattr(client, method)(path.replace("/1/", f"/{photo['id']}/"), **extra)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.content_type == "application/problem+json"
    assert response.json["detail"]


def test_anonymous_upload_leaves_no_file(app: Flask, client: FlaskClient) -> None:
    data = {"image": (io.BytesIO(image_bytes()), "a.png")}

    response = client.post("/api/images/", data=data)

    assert response.status_code == 401
    assert media_files(app) == []
    assert image_rows(app) == 0


def test_upload_with_a_wrong_password_is_401(client: FlaskClient, alice: tuple[str, str]) -> None:
    data = {"image": (io.BytesIO(image_bytes()), "a.png")}

    response = client.post("/api/images/", data=data, auth=("alice", "wrong"))

    assert response.status_code == 401


def test_upload_by_a_deactivated_user_is_401(
    client: FlaskClient, make_user: Callable[..., tuple[str, str]]
) -> None:
    carol = make_user("carol", active=False)
    data = {"image": (io.BytesIO(image_bytes()), "a.png")}

    response = client.post("/api/images/", data=data, auth=carol)

    assert response.status_code == 401
