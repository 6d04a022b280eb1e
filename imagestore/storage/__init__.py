"""Where image files live: a folder on local disk by default, behind a small interface.

Files are content-addressed: the key of a file is derived from its SHA-256, so identical
uploads share one file. A file is first staged (copied in chunks to a temporary file while
its checksum is computed), checked, then placed under its key in one atomic step.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, BinaryIO
from urllib.parse import quote, urlsplit

from flask import Flask, Response, current_app
from werkzeug.http import dump_options_header

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
STAGING_FOLDER = ".staging"
# Content types of stored objects by suffix; `mimetypes` misses .webp where the system has no
# /etc/mime.types (python:*-slim images).
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".bmp": "image/bmp",
}


@dataclass(frozen=True)
class Staged:
    """A file copied to a temporary place, with its size and checksum."""

    path: str
    size: int
    sha256: str

    def discard(self) -> None:
        """Remove the temporary file, if it is still there."""
        remove_quietly(self.path)


@dataclass(frozen=True)
class StoredObject:
    """A file in the store: its key, size and when it was last written."""

    key: str
    size: int
    modified: float


class Storage:
    """The operations the service needs from a file store."""

    staging_folder: str
    staging_prefix = "upload-"

    def stage(self, stream: IO[bytes]) -> Staged:
        """Copy a stream in chunks to a new temporary file, hashing it on the way."""
        os.makedirs(self.staging_folder, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        descriptor, path = tempfile.mkstemp(dir=self.staging_folder, prefix=self.staging_prefix)
        try:
            with os.fdopen(descriptor, "wb") as target:
                while chunk := stream.read(CHUNK_SIZE):
                    digest.update(chunk)
                    target.write(chunk)
                    size += len(chunk)
                target.flush()
                os.fsync(target.fileno())
        except BaseException:
            remove_quietly(path)
            raise
        return Staged(path=path, size=size, sha256=digest.hexdigest())

    def place(self, staged: Staged, key: str) -> None:
        """Store a staged file under its key, durably; the staged file is used up."""
        raise NotImplementedError

    def open(self, key: str) -> BinaryIO:
        """Open a stored file for reading."""
        raise NotImplementedError

    def send(
        self, key: str, *, mimetype: str, etag: str, filename: str, last_modified: datetime
    ) -> Response:
        """Answer a download of the file, with conditional and range requests."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove a file; a missing file is not an error."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """Tell whether a file is stored under this key."""
        raise NotImplementedError

    def objects(self) -> Iterator[StoredObject]:
        """List every stored file, staged ones included (their keys start with `.staging/`)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise OSError when the store cannot be used."""
        raise NotImplementedError


def remove_quietly(path: str) -> None:
    """Remove a file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def content_key(sha256: str, suffix: str) -> str:
    """Return the key of a file with this checksum: `ab/abcdef...<suffix>`."""
    return f"{sha256[:2]}/{sha256}{suffix}"


def thumbnail_key(sha256: str, size: int) -> str:
    """Return the key of a thumbnail, beside its original: `ab/abcdef....256.webp`."""
    return f"{sha256[:2]}/{sha256}.{size}.webp"


def age(stored: StoredObject) -> float:
    """Return how many seconds ago a stored file was last written."""
    return time.time() - stored.modified


def inline_disposition(filename: str) -> str:
    """Return the `Content-Disposition: inline` value that send_file gives a local file."""
    try:
        filename.encode("ascii")
    except UnicodeEncodeError:
        simple = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
        quoted = quote(filename, safe="!#$&+-.^_`|~")  # RFC 5987 attr-char
        return dump_options_header("inline", {"filename": simple, "filename*": f"UTF-8''{quoted}"})
    return dump_options_header("inline", {"filename": filename})


def make_storage(config: dict) -> Storage:
    """Build the storage backend that `STORAGE_URL` names (a local folder when empty)."""
    from .local import LocalStorage
    from .s3 import S3Storage

    url = urlsplit(config["STORAGE_URL"] or "")
    if url.scheme in ("", "file") and url.netloc in ("", "localhost"):
        return LocalStorage(url.path or config["MEDIA_FOLDER"])
    if url.scheme == "s3" and url.netloc:
        return S3Storage(
            url.netloc,
            url.path,
            endpoint_url=config["S3_ENDPOINT_URL"],
            region=config["S3_REGION"],
            access_key=config["S3_ACCESS_KEY_ID"],
            secret_key=config["S3_SECRET_ACCESS_KEY"],
            presign_seconds=int(config["S3_PRESIGNED_DOWNLOAD_SECONDS"]),
            timeout=config["S3_TIMEOUT_SECONDS"],
        )
    raise ValueError(
        f"STORAGE_URL must be file:///folder or s3://bucket/prefix, not {url.geturl()!r}"
    )


def init_storage(app: Flask) -> None:
    """Attach the configured storage backend to the app."""
    app.extensions["imagestore.storage"] = make_storage(app.config)


def get_storage() -> Storage:
    """Return the storage backend of the current app."""
    return current_app.extensions["imagestore.storage"]
