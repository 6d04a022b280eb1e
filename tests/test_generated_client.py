"""A client generated from the live OpenAPI document with openapi-python-client, as a user would
make one: it must build without a warning, and its typed calls must authenticate, upload, list
and download files and thumbnails byte for byte."""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.util
import io
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from helpers import image_bytes, missing_service
from live_server import LiveServer, serve
from PIL import Image as PILImage

PACKAGE = "imagestore_client"
# The generator's own hooks run ruff over what it wrote: not needed to import the client.
CONFIG = "post_hooks: []\n"
# Generating takes about a second here; a run longer than this fails.
GENERATION_LIMIT_SECONDS = 60
# What the generator prints when it drops a response or an operation it cannot type.
WARNINGS = ("warning", "unsupported", "omitted", "skipping", "could not")


# A live gunicorn, and a client generated and installed from its document.
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Generated:
    server: LiveServer
    output: str  # what the generator printed
    package: ModuleType

    def module(self, name: str) -> Any:
        """Import a module of the generated package: `api.images.get_image_file`..."""
        return importlib.import_module(f"{PACKAGE}.{name}")

    def basic_client(self, credentials: tuple[str, str]) -> Any:
        """Return a client that sends HTTP Basic credentials."""
        secret = base64.b64encode(":".join(credentials).encode()).decode()
        return self.package.AuthenticatedClient(
            base_url=self.server.url, token=secret, prefix="Basic"
        )

    def bearer_client(self, token: str) -> Any:
        """Return a client that sends a bearer token."""
        return self.package.AuthenticatedClient(base_url=self.server.url, token=token)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """Serve the app, generate a client from its document, and import that client."""
    if importlib.util.find_spec("openapi_python_client") is None:
        missing_service(
            "openapi-python-client is not installed: the test extra (`make test`) provides it"
        )
    folder = tmp_path_factory.mktemp("generated")
    config = folder / "config.yaml"
    config.write_text(CONFIG)
    with serve(folder) as server:
        command = [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--url",
            f"{server.url}/api/openapi.json",
            "--meta",
            "none",
            "--config",
            str(config),
            "--output-path",
            str(folder / PACKAGE),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=GENERATION_LIMIT_SECONDS
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output  # warnings are the first test's to report
        sys.path.insert(0, str(folder))
        try:
            yield Generated(server, output, importlib.import_module(PACKAGE))
        finally:
            sys.path.remove(str(folder))
            for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE]:
                del sys.modules[name]


def sha256(data: bytes) -> str:
    """Return the hex SHA-256 of some bytes, as the service names a file's content."""
    return hashlib.sha256(data).hexdigest()


def upload(generated: Generated, client: Any, content: bytes, tags: list[str]) -> Any:
    """Upload one PNG through the generated client; return the parsed image."""
    types = generated.module("types")
    models = generated.module("models")
    body = models.CreateImageBody(
        image=[
            types.File(payload=io.BytesIO(content), file_name="photo.png", mime_type="image/png")
        ],
        tags=tags,
    )
    created = generated.module("api.images.create_image").sync_detailed(
        client=client, body=body, create_missing_tags=True
    )
    assert created.status_code == 201, created.content
    assert isinstance(created.parsed, models.Image)
    return created.parsed


def test_the_generator_drops_nothing(generated: Generated) -> None:
    """Attack (on clients): a document whose download the generator cannot type, and drops."""
    printed = generated.output.lower()
    with urllib.request.urlopen(f"{generated.server.url}/api/openapi.json") as response:
        document = json.load(response)
    operations = [
        f"api.{described['tags'][0]}.{described['operationId']}"
        for methods in document["paths"].values()
        for described in methods.values()
    ]

    assert not [word for word in WARNINGS if word in printed], generated.output
    # Each operation is a module that imports (some generator releases write broken ones).
    for name in operations:
        assert callable(generated.module(name).sync_detailed), name


def test_a_bearer_client_made_with_basic_uploads_lists_and_downloads(
    generated: Generated,
) -> None:
    """Attack (on clients): a generated client that can log in and upload but never read a file
    back, or reads other bytes than it sent."""
    models = generated.module("models")
    content = image_bytes("PNG", (300, 200), "teal")
    with generated.basic_client(generated.server.user) as basic:
        token = generated.module("api.tokens.create_token").sync(
            client=basic, body=models.TokenInput(name="generated client")
        )
        assert isinstance(token, models.NewToken), token
        with generated.bearer_client(token.token) as bearer:
            image = upload(generated, bearer, content, ["generated"])
            page = generated.module("api.images.list_images").sync(
                client=bearer, tags=["generated"]
            )
        download = generated.module("api.images.get_image_file").sync_detailed(
            client=basic, image_id=image.id
        )

    assert isinstance(page, models.ImagePage)
    assert [(row.id, row.sha256) for row in page.results] == [(image.id, sha256(content))]
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "image/png"
    assert isinstance(download.parsed, generated.module("types").File)
    assert sha256(download.parsed.payload.read()) == sha256(content) == image.sha256


def test_a_generated_client_gets_thumbnails_ranges_and_not_modified(
    generated: Generated,
) -> None:
    """Attack (on clients): thumbnails, ranges and revalidation that a generated client cannot
    ask for, or whose answers it cannot read."""
    get_image_file = generated.module("api.images.get_image_file")
    content = image_bytes("PNG", (400, 300), "olive")
    with generated.basic_client(generated.server.user) as client:
        image = upload(generated, client, content, [])

        thumbnail = get_image_file.sync_detailed(client=client, image_id=image.id, size=128)
        part = get_image_file.sync_detailed(client=client, image_id=image.id, range_="bytes=10-99")
        etag = get_image_file.sync_detailed(client=client, image_id=image.id).headers["ETag"]
        unchanged = get_image_file.sync_detailed(
            client=client, image_id=image.id, if_none_match=etag
        )
        # The same thumbnail, fetched without the generated code.
        direct = client.get_httpx_client().get(f"/api/images/{image.id}/file?size=128")

    thumbnail_bytes = thumbnail.parsed.payload.read()
    assert thumbnail.status_code == 200
    assert thumbnail.headers["Content-Type"] == "image/webp"
    assert sha256(thumbnail_bytes) == sha256(direct.content)
    with PILImage.open(io.BytesIO(thumbnail_bytes)) as decoded:
        assert (decoded.format, decoded.size) == ("WEBP", (128, 96))
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(content)}"
    assert sha256(part.parsed.payload.read()) == sha256(content[10:100])
    assert etag == f'"{sha256(content)}"'
    assert unchanged.status_code == 304
    assert unchanged.parsed is None
