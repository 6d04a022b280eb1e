"""Uploads: which files a folder gives, each read once while it is hashed, and sent in parallel.

The pipeline: the calling thread reads each file once, computing its SHA-256 and keeping its
bytes in memory (up to 16 MB a file, 256 MB in all); every 1,000 files, 64 MB, or as soon as a
worker is idle, it asks the service which of those digests it has (`POST /api/images/exists/`)
and hands the others to `jobs` worker threads, which upload one file per request with
`on_duplicate=reject`. A file larger than 16 MB is hashed, then read again only if it must be
sent; the service's SHA-256 of what it received is checked against the first reading.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from .models import FileResult, Summary
from .transport import ApiError, AuthError, Unreachable, problem_detail

if TYPE_CHECKING:
    from .api import Client

# The files a folder gives: images by their name. A file named on the command line is sent
# whatever its name; the service decides what it is from its bytes.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".mpo"}
)
READ_CHUNK = 1024 * 1024
IN_MEMORY_MAX = 16 * 1024 * 1024
MEMORY_BUDGET = 256 * 1024 * 1024
BATCH_FILES = 1000
BATCH_BYTES = 64 * 1024 * 1024
# A batch is sent to `exists` early when a worker waits and the batch is this old (seconds):
# uploads start at once, and a run with nothing to send asks once every so often, not per file.
BATCH_AGE = 0.2


@dataclass(frozen=True)
class Source:
    """A file to upload, with the tags it gets."""

    path: Path
    tags: tuple[str, ...]
    size: int


@dataclass
class Hashed:
    """A file read once: its digest, size, and its bytes unless it is large."""

    source: Source
    sha256: str
    size: int
    content: bytes | None
    reserved: int


def excluded(relative: Path, patterns: tuple[str, ...]) -> bool:
    """Tell whether a path (relative to the folder given) matches an --exclude glob: the glob
    is matched against each folder and file name on the way, and against the path so far."""
    parts = relative.parts
    candidates = [*parts, *("/".join(parts[: end + 1]) for end in range(1, len(parts)))]
    return any(fnmatch.fnmatchcase(name, glob) for glob in patterns for name in candidates)


def folder_tags(relative_parent: Path) -> tuple[tuple[str, ...], str | None]:
    """Return the tags the folders between the given folder and a file make, or a reason
    why one of them cannot be a tag name."""
    names = tuple(part.strip() for part in relative_parent.parts)
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
    `exclude` glob matches. With `tags_from_folders`, each folder below the folder given, from
    the top down to the file's own, adds its name as a tag: `upload photos/` sends
    `photos/2026/beach/a.jpg` with the tags `2026` and `beach` (not `photos`).
    """
    sources: list[Source] = []
    problems: list[FileResult] = []
    seen: set[Path] = set()

    def add(path: Path, extra: tuple[str, ...]) -> None:
        resolved = path.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        try:
            size = path.stat().st_size
        except OSError as error:
            problems.append(FileResult(path, "failed", error=error.strerror or str(error)))
            return
        sources.append(Source(path, tuple(dict.fromkeys([*tags, *extra])), size))

    for given in paths:
        if given.is_file():
            add(given, ())
            continue
        if not given.is_dir():
            problems.append(FileResult(given, "failed", error="no such file or folder"))
            continue
        for folder, folders, files in os.walk(given):
            here = Path(folder)
            relative_folder = here.relative_to(given)
            folders[:] = sorted(
                name
                for name in folders
                if not name.startswith(".") and not excluded(relative_folder / name, exclude)
            )
            extra: tuple[str, ...] = ()
            if tags_from_folders:
                extra, reason = folder_tags(relative_folder)
            for name in sorted(files):
                relative = relative_folder / name
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if excluded(relative, exclude):
                    continue
                if tags_from_folders and reason:
                    problems.append(FileResult(here / name, "failed", error=reason))
                    continue
                add(here / name, extra)
    return sources, problems


class Budget:
    """Bytes of file content held in memory at once: reading waits while uploads catch up."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self.changed = threading.Condition()

    def fits(self, amount: int) -> bool:
        with self.changed:
            return self.used == 0 or self.used + amount <= self.limit

    def take(self, amount: int) -> None:
        with self.changed:
            while self.used and self.used + amount > self.limit:
                self.changed.wait(0.5)
            self.used += amount

    def give_back(self, amount: int) -> None:
        with self.changed:
            self.used -= amount
            self.changed.notify_all()


def read_once(source: Source) -> tuple[str, int, bytes | None]:
    """Read a file once: its SHA-256, its size, and its bytes when they fit in memory."""
    digest = hashlib.sha256()
    kept: list[bytes] | None = [] if source.size <= IN_MEMORY_MAX else None
    size = 0
    with open(source.path, "rb") as file:
        while chunk := file.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if kept is not None:
                kept.append(chunk)
    return digest.hexdigest(), size, b"".join(kept) if kept is not None else None


class Uploader:
    """One upload run: reads and hashes files, asks which exist, uploads the rest."""

    def __init__(
        self,
        client: Client,
        create_missing_tags: bool,
        jobs: int,
        dry_run: bool,
        on_result: Callable[[FileResult], None] | None,
    ) -> None:
        self.client = client
        self.jobs = max(1, jobs)
        self.dry_run = dry_run
        self.on_result = on_result
        self.params = {"on_duplicate": "reject"}
        if create_missing_tags:
            self.params["create_missing_tags"] = "true"
        self.summary = Summary(
            counted=("new", "skipped", "failed") if dry_run else ("uploaded", "skipped", "failed")
        )
        self.lock = threading.Lock()
        self.queue: queue.Queue[Hashed | None] = queue.Queue()
        self.budget = Budget(MEMORY_BUDGET)
        self.fatal: AuthError | None = None

    def record(self, result: FileResult) -> None:
        """Count a file's result and pass it on."""
        with self.lock:
            self.summary.results.append(result)
        if self.on_result is not None:
            self.on_result(result)

    def run(self, sources: list[Source]) -> Summary:
        """Upload every source; return the summary (`interrupted` after Ctrl-C). Raise
        AuthError when the credentials stop working."""
        started = time.monotonic()
        workers = [] if self.dry_run else [self.start_worker() for _ in range(self.jobs)]
        try:
            self.feed(sources)
            for _ in workers:
                self.queue.put(None)
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)
        except KeyboardInterrupt:
            # The workers are daemon threads: they end with the process, mid-request or not.
            self.summary.interrupted = True
        self.summary.seconds = time.monotonic() - started
        if self.fatal is not None:
            raise self.fatal
        return self.summary

    def start_worker(self) -> threading.Thread:
        worker = threading.Thread(target=self.work, daemon=True)
        worker.start()
        return worker

    def feed(self, sources: list[Source]) -> None:
        """Read every file once and hand batches of digests to `flush`."""
        batch: list[Hashed] = []
        batch_bytes, batch_started = 0, 0.0
        seen: dict[str, Path] = {}
        for source in sources:
            if self.fatal is not None:
                return
            reserve = min(source.size, IN_MEMORY_MAX)
            if batch and not self.budget.fits(reserve):
                self.flush(batch)
                batch, batch_bytes = [], 0
            self.budget.take(reserve)
            try:
                sha256, size, content = read_once(source)
            except OSError as error:
                self.budget.give_back(reserve)
                self.record(FileResult(source.path, "failed", error=error.strerror or str(error)))
                continue
            if sha256 in seen:
                self.budget.give_back(reserve)
                self.record(
                    FileResult(
                        source.path,
                        "skipped",
                        sha256,
                        size,
                        error=f"same bytes as {seen[sha256]}",
                    )
                )
                continue
            seen[sha256] = source.path
            if not batch:
                batch_started = time.monotonic()
            batch.append(Hashed(source, sha256, size, content, reserve))
            batch_bytes += size
            idle = self.queue.unfinished_tasks < self.jobs
            if (
                len(batch) >= BATCH_FILES
                or batch_bytes >= BATCH_BYTES
                or (idle and time.monotonic() - batch_started >= BATCH_AGE)
            ):
                self.flush(batch)
                batch, batch_bytes = [], 0
        if batch:
            self.flush(batch)

    def flush(self, batch: list[Hashed]) -> None:
        """Ask which of a batch's digests are stored; skip those, queue (or list) the rest."""
        try:
            stored = self.client.exists(hashed.sha256 for hashed in batch)
        except AuthError as error:
            self.fatal = error
            stored = {}
        except (ApiError, Unreachable):
            # Not knowing, send them all: an upload of stored bytes comes back as a 409.
            stored = {}
        for hashed in batch:
            if self.fatal is not None:
                self.budget.give_back(hashed.reserved)
            elif hashed.sha256 in stored:
                self.finish(hashed, "skipped", stored[hashed.sha256])
            elif self.dry_run:
                self.finish(hashed, "new")
            else:
                self.queue.put(hashed)

    def finish(
        self, hashed: Hashed, outcome: Any, image_id: int | None = None, error: str | None = None
    ) -> None:
        self.budget.give_back(hashed.reserved)
        hashed.content = None
        self.record(
            FileResult(hashed.source.path, outcome, hashed.sha256, hashed.size, image_id, error)
        )

    def work(self) -> None:
        """A worker: upload queued files until the end mark."""
        while (hashed := self.queue.get()) is not None:
            try:
                if self.fatal is not None:
                    self.budget.give_back(hashed.reserved)
                    continue
                self.send(hashed)
            except AuthError as error:
                self.fatal = error
                self.budget.give_back(hashed.reserved)
            except Exception as error:  # an answer no service of ours gives: report, go on
                self.finish(hashed, "failed", error=f"{type(error).__name__}: {error}")
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def send(self, hashed: Hashed) -> None:
        """Upload one file: 201 uploaded, 409 skipped (its bytes are stored), else failed."""
        path = hashed.source.path

        def post() -> httpx.Response:
            with open(path, "rb") if hashed.content is None else nullcontext() as file:
                content = hashed.content if hashed.content is not None else file
                return self.client.transport.http.post(
                    "/api/images/",
                    params=self.params,
                    data={"tags": list(hashed.source.tags)},
                    files={"image": (path.name, content, "application/octet-stream")},
                )

        try:
            response = self.client.transport.attempt("POST", "/api/images/", post)
        except (Unreachable, OSError) as error:
            self.finish(hashed, "failed", error=str(error))
            return
        detail, body = problem_detail(response) if not response.is_success else ("", None)
        if response.status_code == 201:
            answer = response.json()
            if answer["sha256"] != hashed.sha256:
                self.finish(
                    hashed, "failed", answer["id"], "the file changed while it was being read"
                )
            else:
                self.finish(hashed, "uploaded", answer["id"])
        elif response.status_code == 409 and isinstance(body, dict) and "existing_id" in body:
            self.finish(hashed, "skipped", body["existing_id"])
        elif response.status_code == 401:
            raise AuthError(401, detail, body)
        else:
            self.finish(hashed, "failed", error=f"{response.status_code}: {detail}")


class nullcontext:
    """A `with` block that opens nothing (the file's bytes are in memory)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


Item = TypeVar("Item")


def run_in_threads(
    task: Callable[[Item], FileResult],
    items: Iterable[Item],
    jobs: int,
    summary: Summary,
    on_result: Callable[[FileResult], None] | None,
) -> Summary:
    """Run `task` on every item with `jobs` threads, recording each result; a 401 stops the run
    (AuthError); Ctrl-C returns the summary so far, marked `interrupted`."""
    started = time.monotonic()
    work: queue.Queue[Any] = queue.Queue(maxsize=jobs * 4)
    lock = threading.Lock()
    fatal: list[Exception] = []

    def worker() -> None:
        while (item := work.get()) is not None:
            if fatal:
                continue
            try:
                result = task(item)
            except Exception as error:  # a 401, or a bug: stop the run and say so
                fatal.append(error)
                continue
            with lock:
                summary.results.append(result)
            if on_result is not None:
                on_result(result)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, jobs))]
    for thread in threads:
        thread.start()
    try:
        for item in items:
            if fatal:
                break
            work.put(item)
        for _ in threads:
            work.put(None)
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.monotonic() - started
    if fatal:
        raise fatal[0]
    return summary
