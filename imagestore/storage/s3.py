"""Objects in an S3-compatible bucket: storage for several hosts."""

from __future__ import annotations

import mimetypes
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import BinaryIO

from flask import Response, request

from . import (
    CHUNK_SIZE,
    CONTENT_TYPES,
    Staged,
    Storage,
    StoredObject,
    inline_disposition,
)


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
            # werkzeug gives a 206 a closed range; without an end the object is read to its end.
            last = "" if wanted.stop is None else wanted.stop - 1
            fetch["Range"] = f"bytes={wanted.start}-{last}"
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
