"""Uploads: each file read once while it is hashed, and sent in parallel.

The pipeline: the calling thread reads each file once, computing its SHA-256 and keeping its
bytes in memory (up to 16 MB a file, 256 MB in all); every 1,000 files, 64 MB, or as soon as a
worker is idle, it asks the service which of those digests it has (`POST /api/images/exists/`)
and hands the others to `jobs` worker threads, which upload them with `on_duplicate=reject`,
up to 10 files of the same tags (8 MB) in a request. A file larger than 16 MB is hashed, then
read again only if it must be sent; the service's SHA-256 of what it received is checked
against the first reading. A file whose digest the checksum cache holds (`cache.py`) is read
only if it must be sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from .cache import ChecksumCache
from .models import FileResult, Summary
from .sources import Source
from .transport import ApiError, AuthError, ImagestoreError, Unreachable, problem_detail

if TYPE_CHECKING:
    from .api import Client

READ_CHUNK = 1024 * 1024
IN_MEMORY_MAX = 16 * 1024 * 1024
MEMORY_BUDGET = 256 * 1024 * 1024
BATCH_FILES = 1000
BATCH_BYTES = 64 * 1024 * 1024
# A batch is sent to `exists` early when a worker waits and the batch is this old (seconds):
# uploads start at once, and a run with nothing to send asks once every so often, not per file.
BATCH_AGE = 0.2
# Small files go several to a request (those of one folder share its tags): the service's cost
# of a request (credentials, transaction, tracking row) is then paid once for them.
FILES_PER_REQUEST = 10
BYTES_PER_REQUEST = 8 * 1024 * 1024


@dataclass
class Hashed:
    """A file read once: its digest, size, and its bytes unless it is large."""

    source: Source
    sha256: str
    size: int
    content: bytes | None
    reserved: int
    done: bool = False


class Budget:
    """Bytes of file content held in memory at once: reading waits while uploads catch up."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self.changed = threading.Condition()

    def fits(self, amount: int) -> bool:
        if not amount:
            return True
        with self.changed:
            return self.used == 0 or self.used + amount <= self.limit

    def take(self, amount: int) -> None:
        if not amount:
            return
        with self.changed:
            while self.used and self.used + amount > self.limit:
                self.changed.wait(0.5)
            self.used += amount

    def give_back(self, amount: int) -> None:
        if not amount:
            return
        with self.changed:
            self.used -= amount
            self.changed.notify_all()


def read_once(source: Source) -> tuple[str, int, bytes | None]:
    """Read a file once: its SHA-256, its size, and its bytes when they fit in memory."""
    with open(source.path, "rb", buffering=0) as file:
        if source.size <= IN_MEMORY_MAX:
            content = file.readall()  # one read, sized by the file's length
            return hashlib.sha256(content).hexdigest(), len(content), content
        digest, size = hashlib.sha256(), 0
        buffer = bytearray(READ_CHUNK)
        view = memoryview(buffer)
        while count := file.readinto(buffer):
            digest.update(view[:count])
            size += count
        return digest.hexdigest(), size, None


class Uploader:
    """One upload run: reads and hashes files, asks which exist, uploads the rest."""

    def __init__(
        self,
        client: Client,
        create_missing_tags: bool,
        jobs: int,
        dry_run: bool,
        on_result: Callable[[FileResult], None] | None,
        before_sending: Callable[[], None] | None = None,
        cache: ChecksumCache | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.cached: dict[str, str] = {}  # by absolute path
        # Digests read in this run, for the cache: (absolute path, stamp, sha256).
        self.fresh: list[tuple[str, str, str]] = []
        self.before_sending = before_sending
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
        self.queue: queue.Queue[list[Hashed] | None] = queue.Queue()
        self.workers: list[threading.Thread] = []  # started with the first request to send
        self.budget = Budget(MEMORY_BUDGET)
        # An error that ends the run: refused credentials, or tags that do not exist.
        self.fatal: ImagestoreError | None = None

    def record(self, result: FileResult) -> None:
        """Count a file's result and pass it on."""
        with self.lock:
            self.summary.results.append(result)
        if self.on_result is not None:
            self.on_result(result)

    def run(self, sources: list[Source]) -> Summary:
        """Upload every source; return the summary (`interrupted` after Ctrl-C). Raise
        AuthError when the credentials stop working, MissingTags for tags that do not exist."""
        started = time.monotonic()
        try:
            if self.cache is not None:
                self.cached = self.cache.lookup((s.key, s.stamp) for s in sources)
            self.feed(sources)
            for _ in self.workers:
                self.queue.put(None)
            for worker in self.workers:
                while worker.is_alive():
                    worker.join(0.2)
        except KeyboardInterrupt:
            # The workers are daemon threads: they end with the process, mid-request or not.
            self.summary.interrupted = True
        finally:
            if self.cache is not None:
                self.cache.store(self.fresh)
                self.cache.close()
        self.summary.seconds = time.monotonic() - started
        if self.fatal is not None:
            raise self.fatal
        return self.summary

    def start_worker(self) -> threading.Thread:
        worker = threading.Thread(target=self.work, daemon=True)
        worker.start()
        return worker

    def feed(self, sources: list[Source]) -> None:
        """Read every file once, in order, and hand batches to `flush`."""
        self.batch: list[Hashed] = []
        self.batch_bytes, self.batch_started = 0, 0.0
        self.seen: dict[str, Path] = {}
        for source in sources:
            if self.fatal is not None:
                return
            reserve = 0 if source.key in self.cached else min(source.size, IN_MEMORY_MAX)
            if self.batch and not self.budget.fits(reserve):
                self.flush_batch()
            self.budget.take(reserve)
            self.take(source, reserve)
        if self.batch and self.fatal is None:
            self.flush_batch()

    def take(self, source: Source, reserve: int) -> None:
        """Read a file (unless the cache knows its digest) and add it to the batch, or skip a
        copy, or fail it; flush the batch when it is full, or when a worker waits for files."""
        if source.key in self.cached:
            sha256, size, content = self.cached[source.key], source.size, None
        else:
            try:
                sha256, size, content = read_once(source)
            except OSError as error:
                self.budget.give_back(reserve)
                failure = FileResult(source.path, "failed", detail=error.strerror or str(error))
                self.record(failure)
                return
            self.fresh.append((source.key, source.stamp, sha256))
        if sha256 in self.seen:
            self.budget.give_back(reserve)
            copy = f"same bytes as {self.seen[sha256]}"
            self.record(FileResult(source.path, "skipped", sha256, size, detail=copy))
            return
        self.seen[sha256] = source.path
        if not self.batch:
            self.batch_started = time.monotonic()
        self.batch.append(Hashed(source, sha256, size, content, reserve))
        self.batch_bytes += reserve  # bytes held in memory
        idle = self.queue.unfinished_tasks < self.jobs
        if (
            len(self.batch) >= BATCH_FILES
            or self.batch_bytes >= BATCH_BYTES
            or (idle and time.monotonic() - self.batch_started >= BATCH_AGE)
        ):
            self.flush_batch()

    def flush_batch(self) -> None:
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        self.flush(batch)
        if self.cache is not None:
            self.cache.store(self.fresh)
            self.fresh = []

    def flush(self, batch: list[Hashed]) -> None:
        """Ask which of a batch's digests are stored; skip those, queue (or list) the rest."""
        stored = self.stored_digests(batch)
        if self.before_sending is not None and any(h.sha256 not in stored for h in batch):
            self.prepare_sending(self.before_sending)
        self.queue_requests(batch, stored)

    def stored_digests(self, batch: list[Hashed]) -> dict[str, int]:
        """Return the batch's digests the service has, each with its image's id."""
        try:
            return self.client.exists(hashed.sha256 for hashed in batch)
        except AuthError as error:
            self.fatal = error
        except (ApiError, Unreachable):
            pass  # Not knowing, send them all: an upload of stored bytes comes back as a 409.
        return {}

    def prepare_sending(self, before_sending: Callable[[], None]) -> None:
        """Run `before_sending` once, when the first file is to be sent: a run that sends
        nothing does not."""
        try:
            before_sending()
        except ImagestoreError as error:
            self.fatal = error
        self.before_sending = None

    def queue_requests(self, batch: list[Hashed], stored: dict[str, int]) -> None:
        """Skip the stored files of a batch, and queue the others in upload requests."""
        request: list[Hashed] = []
        for hashed in batch:
            if self.fatal is not None:
                self.budget.give_back(hashed.reserved)
            elif hashed.sha256 in stored:
                self.finish(hashed, "skipped", stored[hashed.sha256])
            elif self.dry_run:
                self.finish(hashed, "new")
            else:
                if hashed.content is None and hashed.size <= IN_MEMORY_MAX:
                    self.load(hashed)
                if request and not self.joins(request, hashed):
                    self.send_later(request)
                    request = []
                request.append(hashed)
        if request:
            self.send_later(request)

    def send_later(self, request: list[Hashed]) -> None:
        """Queue an upload request for the workers, which start with the first: a run that
        sends nothing starts no thread."""
        if not self.workers:
            self.workers = [self.start_worker() for _ in range(self.jobs)]
        self.queue.put(request)

    def load(self, hashed: Hashed) -> None:
        """Read a file to be sent whose digest came from the cache. Its digest is taken from
        this reading: should the file have changed unseen, the upload is still refused (409)
        when the service has its new bytes."""
        self.budget.take(hashed.size)
        hashed.reserved = hashed.size
        try:
            hashed.sha256, hashed.size, hashed.content = read_once(hashed.source)
        except OSError:
            return  # sent from the file, which reports what is wrong with it

    def joins(self, request: list[Hashed], hashed: Hashed) -> bool:
        """Tell whether a file may go in the same upload request as these: the same tags, all
        in memory, within the files and bytes one request takes."""
        return (
            len(request) < FILES_PER_REQUEST
            and hashed.content is not None
            and request[0].content is not None
            and hashed.source.tags == request[0].source.tags
            and sum(h.size for h in request) + hashed.size <= BYTES_PER_REQUEST
        )

    def finish(
        self, hashed: Hashed, outcome: Any, image_id: int | None = None, detail: str | None = None
    ) -> None:
        self.budget.give_back(hashed.reserved)
        hashed.content, hashed.reserved, hashed.done = None, 0, True
        self.record(
            FileResult(hashed.source.path, outcome, hashed.sha256, hashed.size, image_id, detail)
        )

    def work(self) -> None:
        """A worker: upload queued requests until the end mark."""
        while (request := self.queue.get()) is not None:
            try:
                if self.fatal is None:
                    self.send(request)
            except AuthError as error:
                self.fatal = error
            except Exception as error:  # an answer no service of ours gives: report, go on
                for hashed in request:
                    if not hashed.done:
                        self.finish(hashed, "failed", detail=f"{type(error).__name__}: {error}")
            finally:
                for hashed in request:  # not sent, as the run stops
                    self.budget.give_back(hashed.reserved)
                    hashed.reserved = 0
                self.queue.task_done()
        self.queue.task_done()

    def send(self, request: list[Hashed]) -> None:
        """Upload files in one request: 201 uploaded, 409 skipped (the bytes are stored), else
        failed. Several files are stored all or nothing: when they are refused, each is sent
        again on its own, so that one bad or stored file does not keep the others out."""
        tags = list(request[0].source.tags)

        def post() -> httpx.Response:
            with contextlib.ExitStack() as opened:
                files = [
                    (
                        "image",
                        (
                            hashed.source.path.name,
                            hashed.content
                            if hashed.content is not None
                            else opened.enter_context(open(hashed.source.path, "rb")),
                            "application/octet-stream",
                        ),
                    )
                    for hashed in request
                ]
                return self.client.transport.http.post(
                    "/api/images/", params=self.params, data={"tags": tags}, files=files
                )

        try:
            response = self.client.transport.attempt("POST", "/api/images/", post)
        except (Unreachable, OSError) as error:
            for hashed in request:
                self.finish(hashed, "failed", detail=str(error))
            return
        if response.status_code == 201:
            self.stored(request, response.json())
        else:
            self.refused(request, response)

    def stored(self, request: list[Hashed], answer: Any) -> None:
        """Record the images a 201 names (one image, or the list of several)."""
        for hashed, image in zip(request, answer if len(request) > 1 else [answer], strict=True):
            if image["sha256"] != hashed.sha256:
                changed = "the file changed while it was being read"
                self.finish(hashed, "failed", image["id"], changed)
            else:
                self.finish(hashed, "uploaded", image["id"])

    def refused(self, request: list[Hashed], response: httpx.Response) -> None:
        """Record an upload the service refused: stored bytes are skipped; several files are
        sent again one by one; a 401 stops the run."""
        detail, body = problem_detail(response)
        if response.status_code == 401:
            raise AuthError(401, detail, body)
        if len(request) > 1 and response.status_code in (400, 409, 413):
            for hashed in request:
                self.send([hashed])
        elif response.status_code == 409 and isinstance(body, dict) and "existing_id" in body:
            self.finish(request[0], "skipped", body["existing_id"])
        else:
            for hashed in request:
                self.finish(hashed, "failed", detail=f"{response.status_code}: {detail}")


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
    pool = TaskPool(task, jobs, summary, on_result)
    try:
        pool.run(items)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.monotonic() - started
    if pool.fatal:
        raise pool.fatal[0]
    return summary


class TaskPool(Generic[Item]):
    """Threads that run a task on the items they are given, for `run_in_threads`."""

    def __init__(
        self,
        task: Callable[[Item], FileResult],
        jobs: int,
        summary: Summary,
        on_result: Callable[[FileResult], None] | None,
    ) -> None:
        self.task, self.summary, self.on_result = task, summary, on_result
        self.work: queue.Queue[Any] = queue.Queue(maxsize=jobs * 4)
        self.lock = threading.Lock()
        self.fatal: list[Exception] = []
        self.threads = [
            threading.Thread(target=self.worker, daemon=True) for _ in range(max(1, jobs))
        ]
        for thread in self.threads:
            thread.start()

    def worker(self) -> None:
        while (item := self.work.get()) is not None:
            if self.fatal:
                continue
            try:
                result = self.task(item)
            except Exception as error:  # a 401, or a bug: stop the run and say so
                self.fatal.append(error)
                continue
            with self.lock:
                self.summary.results.append(result)
            if self.on_result is not None:
                self.on_result(result)

    def run(self, items: Iterable[Item]) -> None:
        """Hand out the items until one fails the run, then wait for the threads to end."""
        for item in items:
            if self.fatal:
                break
            self.work.put(item)
        for _ in self.threads:
            self.work.put(None)
        for thread in self.threads:
            while thread.is_alive():
                thread.join(0.2)  # a join with a timeout lets Ctrl-C through
