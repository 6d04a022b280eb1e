"""Files in a folder on local disk: the default storage."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from flask import Response, current_app, send_file

from . import (
    STAGING_FOLDER,
    Staged,
    Storage,
    StoredObject,
    remove_quietly,
)


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
