"""Where image files live: a folder on local disk by default, behind a small interface.

Files are content-addressed: the key of a file is derived from its SHA-256, so identical
uploads share one file. A file is first staged (copied in chunks to a temporary file while
its checksum is computed), checked, then placed under its key in one atomic step.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO
from urllib.parse import quote, urlsplit

from flask import Flask, Response, current_app, request, send_file
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

    def stage(self, stream: BinaryIO) -> Staged:
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


class LocalStorage(Storage):
    """Files in a local folder, fanned out by the first two characters of their key."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.staging_folder = os.path.join(self.root, STAGING_FOLDER)
        os.makedirs(self.staging_folder, exist_ok=True)

    def path(self, key: str) -> str:
        """Return the absolute path of a key."""
        return os.path.join(self.root, key)

    def place(self, staged: Staged, key: str) -> None:
        final = self.path(key)
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        # Identical content has the same key, so replacing an existing file changes nothing.
        os.replace(staged.path, final)
        sync_folder(folder)

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def send(
        self, key: str, *, mimetype: str, etag: str, filename: str, last_modified: datetime
    ) -> Response:
        return send_file(
            self.path(key),
            mimetype=mimetype,
            conditional=True,
            etag=etag,
            download_name=filename,
            last_modified=last_modified,
            max_age=current_app.config["FILE_CACHE_SECONDS"],
        )

    def delete(self, key: str) -> None:
        remove_quietly(self.path(key))

    def exists(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def objects(self) -> Iterator[StoredObject]:
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    status = os.stat(path)
                except FileNotFoundError:
                    continue  # removed while listing
                key = os.path.relpath(path, self.root).replace(os.sep, "/")
                yield StoredObject(key=key, size=status.st_size, modified=status.st_mtime)

    def check(self) -> None:
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"media folder {self.root} is not writable")


def sync_folder(folder: str) -> None:
    """Make a rename in a folder durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_quietly(path: str) -> None:
    """Remove a file if it is there."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def content_key(sha256: str, suffix: str) -> str:
    """Return the key of a file with this checksum: `ab/abcdef...<suffix>`."""
    return f"{sha256[:2]}/{sha256}{suffix}"


def thumbnail_key(sha256: str, size: int) -> str:
    """Return the key of a thumbnail, beside its original: `ab/abcdef....256.webp`."""
    return f"{sha256[:2]}/{sha256}.{size}.webp"


def age(stored: StoredObject) -> float:
    """Return how many seconds ago a stored file was last written."""
    return time.time() - stored.modified


class StorageUnavailable(OSError):
    """The object store could not be reached or refused the request."""


class S3Storage(Storage):
    """Objects in an S3-compatible bucket under a prefix; staging happens in a local temp folder.

    Credentials, region and endpoint come from the standard AWS settings (`AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`) unless given here.
    """

    # Staged files are private (mode 0600) in the system's temp folder, whose sticky bit keeps
    # other users from swapping them between checksum and upload ($TMPDIR moves it).
    staging_prefix = "imagestore-upload-"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        presign_seconds: int = 0,
        timeout: float = 10,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.presign_seconds = presign_seconds
        self.staging_folder = tempfile.gettempdir()
        config = Config(
            # Presigned URLs too: botocore would sign them with the retired SigV2 otherwise.
            signature_version="s3v4",
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=config,
        )
        # Parts of 8 MB, a few at a time: a worker's memory stays flat whatever the file size.
        self.transfer = TransferConfig(max_concurrency=4)

    def object_key(self, key: str) -> str:
        """Return the bucket key of a storage key: the key under the prefix."""
        return f"{self.prefix}{key}"

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn the store's errors into OSError: FileNotFoundError, or StorageUnavailable."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"{action}: no such object") from error
            raise StorageUnavailable(f"{action}: the object store answered {code}") from error
        except (BotoCoreError, Boto3Error) as error:
            # upload_file wraps the store's refusals in S3UploadFailedError (a Boto3Error).
            raise StorageUnavailable(f"{action}: {error}") from error

    def place(self, staged: Staged, key: str) -> None:
        suffix = os.path.splitext(key)[1].lower()
        content_type = (
            CONTENT_TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"
        )
        with self.errors("store"):
            # Multipart above 8 MB, read from the staged file: never held whole in memory.
            self.client.upload_file(
                staged.path,
                self.bucket,
                self.object_key(key),
                ExtraArgs={"ContentType": content_type},
                Config=self.transfer,
            )
        staged.discard()

    def open(self, key: str) -> BinaryIO:
        with self.errors("read"):
            return self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"]

    def size(self, key: str) -> int:
        """Return the size in bytes of a stored object."""
        with self.errors("read"):
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        return head["ContentLength"]

    def send(
        self, key: str, *, mimetype: str, etag: str, filename: str, last_modified: datetime
    ) -> Response:
        if self.presign_seconds:
            return self.redirect(key, mimetype, filename)
        response = Response(mimetype=mimetype)
        response.set_etag(etag)
        response.last_modified = last_modified
        response.headers["Content-Disposition"] = inline_disposition(filename)
        # werkzeug decides 304, 412, 206 and 416 exactly as send_file does for a local file;
        # the object's size is asked for only when a range needs it.
        size = self.size(key) if "Range" in request.headers else None
        response.make_conditional(request, accept_ranges=True, complete_length=size)
        if response.status_code in (304, 412):
            return response
        fetch = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if response.status_code == 206:
            wanted = response.content_range
            fetch["Range"] = f"bytes={wanted.start}-{wanted.stop - 1}"
        elif request.method == "HEAD":
            response.content_length = self.size(key) if size is None else size
        if request.method == "HEAD":
            response.response = []
            return response
        with self.errors("read"):
            found = self.client.get_object(**fetch)
        body = found["Body"]
        response.response = body.iter_chunks(CHUNK_SIZE)
        response.call_on_close(body.close)
        response.content_length = found["ContentLength"]
        return response

    def redirect(self, key: str, mimetype: str, filename: str) -> Response:
        """Answer with a short-lived presigned URL: the bytes never pass through the service."""
        params = {
            "Bucket": self.bucket,
            "Key": self.object_key(key),
            "ResponseContentType": mimetype,
            "ResponseContentDisposition": inline_disposition(filename),
        }
        with self.errors("presign"):
            url = self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=self.presign_seconds
            )
        # No body: werkzeug's redirect() writes an HTML page, and the API answers no HTML.
        response = Response(status=302, headers={"Location": url})
        del response.headers["Content-Type"]
        # A cached redirect must not outlive the URL it points to.
        response.headers["Cache-Control"] = f"private, max-age={self.presign_seconds}"
        return response

    def delete(self, key: str) -> None:
        with self.errors("delete"):
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def objects(self) -> Iterator[StoredObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        with self.errors("list"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    yield StoredObject(
                        key=item["Key"][len(self.prefix) :],
                        size=item["Size"],
                        modified=item["LastModified"].timestamp(),
                    )

    def check(self) -> None:
        with self.errors("reach the bucket"):
            self.client.head_bucket(Bucket=self.bucket)


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
