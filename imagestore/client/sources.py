"""Which files an upload sends: the files named, and the image files of the folders named,
with the tags each gets."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .cache import stamp
from .models import FileResult

# The files a folder gives: images by their name. A file named on the command line is sent
# whatever its name; the service decides what it is from its bytes.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".mpo"}
)


class Source(NamedTuple):
    """A file to upload, with the tags it gets (a tuple: a folder gives thousands of them)."""

    path: Path
    tags: tuple[str, ...]
    size: int
    stamp: str  # what stat said of it (cache.stamp)
    key: str  # its absolute path, which the checksum cache knows it by


def excluded(parts: tuple[str, ...], name: str, patterns: tuple[str, ...]) -> bool:
    """Tell whether a path (the folders below the folder given, then its name) matches an
    --exclude glob: the glob is matched against each folder and file name on the way, and
    against the path so far."""
    if not patterns:
        return False
    parts = (*parts, name)
    candidates = [*parts, *("/".join(parts[: end + 1]) for end in range(1, len(parts)))]
    return any(fnmatch.fnmatchcase(name, glob) for glob in patterns for name in candidates)


def folder_tags(parts: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """Return the tags the folders between the given folder and a file make, or a reason
    why one of them cannot be a tag name."""
    names = tuple(part.strip() for part in parts)
    for name in names:
        if "," in name:
            return (), f"the folder name {name!r} cannot be a tag: it has a comma"
        if len(name) > 50:
            return (), f"the folder name {name!r} cannot be a tag: over 50 characters"
    return names, None


def find_sources(
    paths: list[Path], tags: tuple[str, ...], tags_from_folders: bool, exclude: tuple[str, ...]
) -> tuple[list[Source], list[FileResult]]:
    """Return the files to upload, in order, and a failure for each path that gives none.

    A file given is sent as is. A folder gives its image files (by suffix, any case), at any
    depth, sorted, but for hidden files and folders (a name starting with `.`) and those an
    `exclude` glob matches; symbolic links to folders are not followed. With
    `tags_from_folders`, each folder below the folder given, from the top down to the file's
    own, adds its name as a tag: `upload photos/` sends `photos/2026/beach/a.jpg` with the tags
    `2026` and `beach` (not `photos`). A file reached twice is sent once.
    """
    finder = SourceFinder(tags, tags_from_folders, exclude)
    for given in paths:
        try:
            stat = given.stat()
        except OSError:
            finder.problems.append(FileResult(given, "failed", detail="no such file or folder"))
            continue
        if given.is_dir():
            finder.walk(given, (), os.path.abspath(given))
        else:
            finder.add(given, stat, finder.tags, os.path.abspath(given))
    return finder.sources, finder.problems


@dataclass
class SourceFinder:
    """The files found so far for `find_sources`, and the paths that gave none."""

    tags: tuple[str, ...]
    tags_from_folders: bool
    exclude: tuple[str, ...]
    sources: list[Source] = field(default_factory=list)
    problems: list[FileResult] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)

    def add(self, path: Path, stat: os.stat_result, tags: tuple[str, ...], key: str) -> None:
        """Add a file with these tags, once."""
        if (stat.st_dev, stat.st_ino) in self.seen:
            return
        self.seen.add((stat.st_dev, stat.st_ino))
        self.sources.append(Source(path, tags, stat.st_size, stamp(stat), key))

    def failed(self, path: Path, error: OSError) -> None:
        self.problems.append(FileResult(path, "failed", detail=error.strerror or str(error)))

    def walk(self, folder: Path, parts: tuple[str, ...], key: str) -> None:
        """Add the image files below a folder, `parts` being its path below the folder given
        and `key` its absolute path."""
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            self.failed(folder, error)
            return
        extra, reason = folder_tags(parts) if self.tags_from_folders else ((), None)
        tags = tuple(dict.fromkeys([*self.tags, *extra]))
        prefix = os.path.join(key, "")
        for entry in entries:
            name = entry.name
            if name.startswith(".") or excluded(parts, name, self.exclude):
                continue
            path = folder / name
            try:
                if entry.is_dir(follow_symlinks=False):
                    self.walk(path, (*parts, name), prefix + name)
                elif name[name.rfind(".") :].lower() not in IMAGE_SUFFIXES:
                    continue
                elif reason:
                    self.problems.append(FileResult(path, "failed", detail=reason))
                elif entry.is_file():
                    self.add(path, entry.stat(), tags, prefix + name)
            except OSError as error:
                self.failed(path, error)
