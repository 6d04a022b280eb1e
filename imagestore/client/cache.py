"""The checksums of files hashed before, so that a second run of an upload reads no file again.

One SQLite file (`$XDG_CACHE_HOME/imagestore/checksums.sqlite3`, by default
`~/.cache/imagestore/`) maps a file's absolute path to its SHA-256 and to what `stat` said of
it then: size, modification and change times (nanoseconds), inode and device. A digest is
used only while all of these are the same, as rsync trusts size and time; the change time
cannot be set back by any tool, so a file rewritten in place is read again. The cache only
spares reading: what the service has is always asked, and an upload whose bytes the service
hashes differently from the cache is reported. Any error with the file turns the cache off for
the run.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

# SQLite takes at most 999 parameters in a statement on old builds.
LOOKUP_CHUNK = 500


def default_path() -> Path:
    """Return where the cache lives: under $XDG_CACHE_HOME, else ~/.cache."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "imagestore" / "checksums.sqlite3"


def stamp(stat: os.stat_result) -> str:
    """Describe a file's state: what must not change for its cached digest to hold."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}:{stat.st_dev}"


class ChecksumCache:
    """Digests of files by absolute path and state; silent and off after any error."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.connection: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            self.connection.execute(
                "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, stamp TEXT NOT NULL,"
                " sha256 TEXT NOT NULL) WITHOUT ROWID"
            )
        except (OSError, sqlite3.Error):
            self.close()

    def lookup(self, files: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Return the cached digest of each (absolute path, stamp) whose stamp is the one
        stored, by path."""
        wanted = dict(files)
        found: dict[str, str] = {}
        keys = list(wanted)
        try:
            for start in range(0, len(keys) if self.connection else 0, LOOKUP_CHUNK):
                chunk = keys[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self.connection.execute(  # type: ignore[union-attr]
                    f"SELECT path, stamp, sha256 FROM files WHERE path IN ({marks})", chunk
                )
                for key, state, sha256 in rows:
                    if state == wanted[key]:
                        found[key] = sha256
        except sqlite3.Error:
            self.close()
            return {}
        return found

    def store(self, files: list[tuple[str, str, str]]) -> None:
        """Remember the digests of files just read: (absolute path, stamp, sha256) each."""
        if self.connection is None or not files:
            return
        try:
            with self.connection:
                self.connection.execute("BEGIN")
                self.connection.executemany(
                    "INSERT OR REPLACE INTO files (path, stamp, sha256) VALUES (?, ?, ?)", files
                )
        except sqlite3.Error:
            self.close()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None
