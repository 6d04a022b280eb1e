"""Where image files live: a folder on local disk by default, behind a small interface."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from typing import BinaryIO

from flask import Flask, Response, current_app, send_file

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    """What storing a file produced: its key, its size in bytes and its SHA-256."""

    key: str
    size: int
    sha256: str


class Storage:
    """The operations the service needs from a file store."""

    def save(self, stream: BinaryIO, suffix: str) -> StoredFile:
        """Store a stream under a new generated key; nothing is left behind when it fails."""
        raise NotImplementedError

    def send(self, key: str, mimetype: str, etag: str, filename: str) -> Response:
        """Answer a download of the file, with conditional and range requests."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove a file; a missing file is not an error."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """Tell whether a file is stored under this key."""
        raise NotImplementedError


class LocalStorage(Storage):
    """Files in a local folder, two levels of fan-out: `ab/abcdef....jpg`."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)

    def path(self, key: str) -> str:
        """Return the absolute path of a key."""
        return os.path.join(self.root, key)

    def save(self, stream: BinaryIO, suffix: str) -> StoredFile:
        name = uuid.uuid4().hex
        key = f"{name[:2]}/{name}{suffix}"
        final = self.path(key)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        # Written under a temporary name, made durable, then renamed into place in one step.
        temporary = os.path.join(self.root, f".tmp-{name}")
        digest = hashlib.sha256()
        size = 0
        try:
            with open(temporary, "xb") as target:
                while chunk := stream.read(CHUNK_SIZE):
                    digest.update(chunk)
                    target.write(chunk)
                    size += len(chunk)
                target.flush()
                os.fsync(target.fileno())
            os.replace(temporary, final)
        except BaseException:
            remove_quietly(temporary)
            raise
        return StoredFile(key=key, size=size, sha256=digest.hexdigest())

    def send(self, key: str, mimetype: str, etag: str, filename: str) -> Response:
        response = send_file(
            self.path(key),
            mimetype=mimetype,
            conditional=True,
            etag=etag,
            download_name=filename,
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def delete(self, key: str) -> None:
        remove_quietly(self.path(key))

    def exists(self, key: str) -> bool:
        return os.path.isfile(self.path(key))


def remove_quietly(path: str) -> None:
    """Remove a file if it is there."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def init_storage(app: Flask) -> None:
    """Attach the configured storage backend to the app."""
    app.extensions["imagestore.storage"] = LocalStorage(app.config["MEDIA_FOLDER"])


def get_storage() -> Storage:
    """Return the storage backend of the current app."""
    return current_app.extensions["imagestore.storage"]
