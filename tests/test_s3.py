"""The S3 backend through the HTTP API, against SeaweedFS: what only it does.

What every backend does is in tests/test_storage_contract.py, which runs on S3 too.
"""

from __future__ import annotations

import io
import mimetypes
import os
import tempfile
import urllib.error
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import DIRECT, checksum, free_port, image_bytes, image_rows, run_check
from PIL import Image as PILImage
from seaweed import S3Server

from imagestore.storage import make_storage
from imagestore.storage.s3 import S3Storage


class Bucket:
    """The test's bucket, seen directly through boto3 (not through the app)."""

    def __init__(self, server: S3Server, name: str) -> None:
        self.client = server.client()
        self.name = name

    def keys(self) -> list[str]:
        """List every key in the bucket, sorted."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def head(self, key: str) -> dict[str, Any]:
        return self.client.head_object(Bucket=self.name, Key=key)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)


@pytest.fixture
def store(s3_server: S3Server, bucket: str) -> Bucket:
    return Bucket(s3_server, bucket)


@pytest.fixture
def s3_app(make_app: Callable[..., Flask], s3_settings: dict[str, Any]) -> Flask:
    """An app whose files live in the test bucket under `media/`."""
    return make_app(**s3_settings)


@pytest.fixture
def s3_client(s3_app: Flask) -> FlaskClient:
    return s3_app.test_client()


def post_image(
    client: FlaskClient,
    auth: tuple[str, str],
    content: bytes | None = None,
    filename: str = "photo.png",
    query: str = "",
) -> Any:
    """Upload one image through the API and return the response."""
    data = {"image": (io.BytesIO(image_bytes() if content is None else content), filename)}
    return client.post(f"/api/images/{query}", data=data, auth=auth)


def media_key(content: bytes, suffix: str) -> str:
    """Return the bucket key of content under the `media/` prefix."""
    sha256 = checksum(content)
    return f"media/{sha256[:2]}/{sha256}{suffix}"


@pytest.fixture
def photo(s3_client: FlaskClient, alice: tuple[str, str]) -> dict[str, Any]:
    """A 600 x 300 JPEG stored through the S3 app."""
    response = post_image(s3_client, alice, image_bytes("JPEG", (600, 300)), "Beach day.jpg")
    assert response.status_code == 201, response.json
    return response.json


# Uploads and duplicates


def test_upload_stores_the_object_under_the_prefix_with_its_content_type(
    s3_client: FlaskClient, alice: tuple[str, str], store: Bucket
) -> None:
    content = image_bytes("PNG", (20, 10))

    response = post_image(s3_client, alice, content)

    assert response.status_code == 201
    assert store.keys() == [media_key(content, ".png")]
    assert store.head(media_key(content, ".png"))["ContentType"] == "image/png"


def test_objects_get_their_content_type_without_the_system_mime_table(
    s3_client: FlaskClient,
    alice: tuple[str, str],
    store: Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mimetypes, "guess_type", lambda *args, **kwargs: (None, None))
    content = image_bytes("WEBP", (12, 12))

    post_image(s3_client, alice, content, "a.webp")

    assert store.head(media_key(content, ".webp"))["ContentType"] == "image/webp"


def test_upload_without_a_prefix_stores_at_the_bucket_root(
    make_app: Callable[..., Flask],
    s3_settings: dict[str, Any],
    bucket: str,
    alice: tuple[str, str],
    store: Bucket,
) -> None:
    app = make_app(**s3_settings | {"STORAGE_URL": f"s3://{bucket}"})
    content = image_bytes("GIF")

    post_image(app.test_client(), alice, content, "a.gif")

    sha256 = checksum(content)
    assert store.keys() == [f"{sha256[:2]}/{sha256}.gif"]


def test_large_upload_goes_through_multipart_and_round_trips(
    make_app: Callable[..., Flask],
    s3_settings: dict[str, Any],
    alice: tuple[str, str],
    store: Bucket,
) -> None:
    app = make_app(**s3_settings, MAX_UPLOAD_MB=32)
    client = app.test_client()
    noise = PILImage.frombytes("RGB", (2000, 2000), os.urandom(2000 * 2000 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=1)  # noise does not compress: about 12 MB
    content = buffer.getvalue()

    response = post_image(client, alice, content, "noise.png")

    assert len(content) > 11 * 1024 * 1024
    assert response.status_code == 201, response.json
    assert response.json["size"] == len(content)
    # A multipart object's ETag is "<md5 of the part md5s>-<number of parts>".
    assert "-" in store.head(media_key(content, ".png"))["ETag"]
    download = client.get(response.json["image"], auth=alice)
    assert download.status_code == 200
    assert checksum(download.data) == checksum(content)


# Downloads


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Range": "bytes=10-19"},
        {"Range": "bytes=-5"},
        {"Range": "bytes=100-"},
        {"Range": "bytes=99999999-"},
        {"Range": "bytes=0-1,5-6"},
        {"If-None-Match": "SHA256"},
        {"If-None-Match": '"other"'},
        {"Range": "bytes=0-9", "If-Range": "SHA256"},
    ],
    ids=[
        "whole",
        "range",
        "suffix",
        "open-end",
        "unsatisfiable",
        "two-ranges",
        "etag-matches",
        "etag-differs",
        "if-range-matches",
    ],
)
def test_download_answers_as_the_local_backend_does(
    app: Flask,
    client: FlaskClient,
    s3_client: FlaskClient,
    alice: tuple[str, str],
    store: Bucket,
    headers: dict[str, str],
) -> None:
    content = image_bytes("JPEG", (300, 200))
    image = post_image(client, alice, content, "Été à la plage.jpg").json  # local folder
    store.put(media_key(content, ".jpg"), content)  # the same bytes in the bucket
    headers = {
        name: value.replace("SHA256", f'"{image["sha256"]}"') for name, value in headers.items()
    }
    compared = (
        "Content-Type",
        "Content-Length",
        "Content-Range",
        "ETag",
        "Last-Modified",
        "Accept-Ranges",
        "Cache-Control",
        "X-Content-Type-Options",
        "Content-Disposition",
    )

    local = client.get(image["image"], auth=alice, headers=headers)
    remote = s3_client.get(image["image"], auth=alice, headers=headers)

    assert remote.status_code == local.status_code
    assert remote.data == local.data
    assert {name: remote.headers.get(name) for name in compared} == {
        name: local.headers.get(name) for name in compared
    }


# Thumbnails


def test_thumbnail_is_made_in_the_bucket_under_the_prefix_as_webp(
    s3_client: FlaskClient, alice: tuple[str, str], photo: dict[str, Any], store: Bucket
) -> None:
    response = s3_client.get(photo["thumbnails"]["256"], auth=alice)

    sha256 = photo["sha256"]
    assert response.status_code == 200
    assert store.keys() == [
        f"media/{sha256[:2]}/{sha256}.256.webp",
        f"media/{sha256[:2]}/{sha256}.jpg",
    ]
    assert store.head(f"media/{sha256[:2]}/{sha256}.256.webp")["ContentType"] == "image/webp"


# Presigned downloads


@pytest.fixture
def presigning_client(make_app: Callable[..., Flask], s3_settings: dict[str, Any]) -> FlaskClient:
    """A client of an app that answers downloads with a redirect to a presigned URL."""
    return make_app(**s3_settings, S3_PRESIGNED_DOWNLOAD_SECONDS=60).test_client()


def test_presigned_download_redirects_to_the_store(
    presigning_client: FlaskClient, alice: tuple[str, str], s3_server: S3Server, bucket: str
) -> None:
    content = image_bytes("PNG", (30, 30))
    image = post_image(presigning_client, alice, content, "Été.png").json

    response = presigning_client.get(image["image"], auth=alice)

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(f"{s3_server.endpoint}/{bucket}/media/")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in location
    assert "X-Amz-Expires=60" in location
    with DIRECT.open(location, timeout=10) as fetched:
        assert fetched.read() == content
        assert fetched.headers["Content-Type"] == "image/png"
        assert fetched.headers["Content-Disposition"] == (
            "inline; filename=Ete.png; filename*=UTF-8''%C3%89t%C3%A9.png"
        )


def test_presigned_redirect_is_not_cached_longer_than_the_url_lives(
    presigning_client: FlaskClient, alice: tuple[str, str]
) -> None:
    image = post_image(presigning_client, alice).json

    response = presigning_client.get(image["image"], auth=alice)

    assert response.headers["Cache-Control"] == "private, max-age=60"


def test_presigned_thumbnail_is_made_then_redirected_to(
    presigning_client: FlaskClient, alice: tuple[str, str], store: Bucket
) -> None:
    image = post_image(presigning_client, alice, image_bytes("PNG", (400, 200))).json

    response = presigning_client.get(image["thumbnails"]["128"], auth=alice)

    assert response.status_code == 302
    with DIRECT.open(response.headers["Location"], timeout=10) as fetched:
        data = fetched.read()
        assert fetched.headers["Content-Type"] == "image/webp"
    with PILImage.open(io.BytesIO(data)) as thumbnail:
        assert thumbnail.size == (128, 64)


def test_presigned_url_is_refused_once_tampered_with(
    presigning_client: FlaskClient, alice: tuple[str, str]
) -> None:
    image = post_image(presigning_client, alice).json
    location = presigning_client.get(image["image"], auth=alice).headers["Location"]

    with pytest.raises(urllib.error.HTTPError) as refused:
        DIRECT.open(location.replace("X-Amz-Expires=60", "X-Amz-Expires=6000"), timeout=10)

    assert refused.value.code == 403


# Errors of the store: a clear 503, and no row without its object


@pytest.fixture
def unreachable_app(make_app: Callable[..., Flask], s3_settings: dict[str, Any]) -> Flask:
    """An app whose store endpoint is a loopback port nothing listens on."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    return make_app(**s3_settings | {"S3_ENDPOINT_URL": endpoint, "S3_TIMEOUT_SECONDS": 1})


@pytest.fixture
def denied_app(make_app: Callable[..., Flask], s3_settings: dict[str, Any]) -> Flask:
    """An app that signs its requests to the store with a wrong secret key."""
    return make_app(**s3_settings | {"S3_SECRET_ACCESS_KEY": "not the secret"})


STORE_FAULTS = ["unreachable_app", "denied_app"]


def assert_store_failed(response: Any) -> None:
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert response.json["detail"] == "The file store failed; try again later."


@pytest.mark.parametrize("faulty", STORE_FAULTS)
def test_upload_when_the_store_fails_is_503_and_leaves_no_row(
    request: pytest.FixtureRequest, alice: tuple[str, str], store: Bucket, faulty: str
) -> None:
    app = request.getfixturevalue(faulty)

    response = post_image(app.test_client(), alice)

    assert_store_failed(response)
    assert image_rows(app) == 0
    assert store.keys() == []


@pytest.mark.parametrize("faulty", STORE_FAULTS)
@pytest.mark.parametrize("size", [None, 128], ids=["original", "thumbnail"])
def test_download_when_the_store_fails_is_503(
    request: pytest.FixtureRequest,
    alice: tuple[str, str],
    photo: dict[str, Any],
    faulty: str,
    size: int | None,
) -> None:
    app = request.getfixturevalue(faulty)
    url = photo["image"] if size is None else photo["thumbnails"][str(size)]

    response = app.test_client().get(url, auth=alice)

    assert_store_failed(response)


def test_delete_while_the_store_is_down_leaves_an_orphan_that_repair_removes(
    make_app: Callable[..., Flask],
    s3_app: Flask,
    unreachable_app: Flask,
    alice: tuple[str, str],
    photo: dict[str, Any],
    store: Bucket,
    s3_settings: dict[str, Any],
) -> None:
    response = unreachable_app.test_client().delete(f"/api/images/{photo['id']}/", auth=alice)

    assert response.status_code == 204
    assert image_rows(s3_app) == 0
    assert len(store.keys()) == 1
    repairing = make_app(**s3_settings, STORAGE_REPAIR_GRACE_SECONDS=0)
    assert run_check(repairing, "--repair").exit_code == 0
    assert store.keys() == []


def test_readiness_reports_an_unreachable_store(s3_app: Flask, unreachable_app: Flask) -> None:
    ready = s3_app.test_client().get("/readyz")
    down = unreachable_app.test_client().get("/readyz")

    assert ready.status_code == 200
    assert down.status_code == 503
    assert down.json["checks"]["storage"] == "failed"


# The storage check


def test_storage_check_ignores_objects_outside_its_prefix(
    s3_app: Flask, photo: dict[str, Any], store: Bucket
) -> None:
    store.put("elsewhere/not-ours.png", b"another application's file")

    result = run_check(s3_app)

    assert result.exit_code == 0, result.output
    assert "no problems" in result.output


# Settings


@pytest.mark.parametrize(
    "url",
    ["ftp://host/media", "gs://bucket/media", "s3://", "s3:///media", "https://bucket.example/x"],
)
def test_bad_storage_url_stops_the_app_with_a_clear_error(
    make_app: Callable[..., Flask], url: str
) -> None:
    with pytest.raises(
        ValueError, match="STORAGE_URL must be file:///folder or s3://bucket/prefix"
    ):
        make_app(STORAGE_URL=url)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("S3_PRESIGNED_DOWNLOAD_SECONDS", -1),
        ("S3_PRESIGNED_DOWNLOAD_SECONDS", 8 * 24 * 3600),
        ("S3_PRESIGNED_DOWNLOAD_SECONDS", "60"),
        ("S3_TIMEOUT_SECONDS", 0),
    ],
)
def test_bad_s3_number_stops_the_app_with_a_clear_error(
    make_app: Callable[..., Flask], s3_settings: dict[str, Any], name: str, value: int
) -> None:
    with pytest.raises(ValueError, match=name):
        make_app(**s3_settings, **{name: value})


def test_file_url_selects_the_local_folder(make_app: Callable[..., Flask], tmp_path: Any) -> None:
    app = make_app(STORAGE_URL=f"file://{tmp_path / 'files'}")

    assert app.extensions["imagestore.storage"].root == str(tmp_path / "files")


def test_standard_aws_variables_are_enough(
    make_app: Callable[..., Flask],
    s3_server: S3Server,
    bucket: str,
    alice: tuple[str, str],
    store: Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    app = make_app(STORAGE_URL=f"s3://{bucket}/media")
    content = image_bytes("PNG", (5, 5))

    response = post_image(app.test_client(), alice, content)

    assert response.status_code == 201
    assert store.keys() == [media_key(content, ".png")]


def test_imagestore_settings_override_the_aws_variables(
    make_app: Callable[..., Flask],
    s3_settings: dict[str, Any],
    alice: tuple[str, str],
    store: Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "someone else's secret")
    app = make_app(**s3_settings)

    response = post_image(app.test_client(), alice)

    assert response.status_code == 201
    assert len(store.keys()) == 1


def test_staged_uploads_are_private_and_not_left_behind(
    s3_app: Flask, s3_client: FlaskClient, alice: tuple[str, str], tmp_path: Any
) -> None:
    storage = s3_app.extensions["imagestore.storage"]
    assert isinstance(storage, S3Storage)
    assert storage.staging_folder == tempfile.gettempdir()
    storage.staging_folder = str(tmp_path / "staging")  # watched without other runs' files

    stored = post_image(s3_client, alice)
    refused = post_image(s3_client, alice, b"not an image")

    assert (stored.status_code, refused.status_code) == (201, 400)
    assert os.listdir(tmp_path / "staging") == []


def test_make_storage_takes_bucket_and_prefix_from_the_url(s3_settings: dict[str, Any]) -> None:
    config = {"MEDIA_FOLDER": "", "S3_TIMEOUT_SECONDS": 5, "S3_PRESIGNED_DOWNLOAD_SECONDS": 0}

    storage = make_storage(config | s3_settings | {"STORAGE_URL": "s3://photos/one/two/"})

    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == ("photos", "one/two/")
    assert storage.object_key("ab/abc.png") == "one/two/ab/abc.png"
