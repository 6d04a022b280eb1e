"""What the command prints: a rich progress bar on a terminal, plain lines otherwise, JSON lines
with `--json`; each ends with a summary."""

from __future__ import annotations

import json
import sys
import threading
from typing import TextIO

from .models import FileResult, Summary
from .transport import Retry

DONE_WORDS = {"uploaded": "sent", "downloaded": "received"}
# Seconds a line written on stdout may wait to be sent.
FLUSH_EVERY = 0.1


def size_text(count: float) -> str:
    """Write a byte count for people: 512 B, 4.2 KB, 17.0 MB, 1.3 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def summary_text(summary: Summary) -> str:
    """Say what a run did in one line."""
    counts = ", ".join(f"{summary.count(outcome)} {outcome}" for outcome in summary.counted)
    moved = summary.bytes_sent
    rate = f", {size_text(moved / summary.seconds)}/s" if summary.seconds > 0 and moved else ""
    verb = next((DONE_WORDS[o] for o in summary.counted if o in DONE_WORDS), "")
    sent = f" ({size_text(moved)} {verb}{rate})" if verb and moved else ""
    ending = " (interrupted)" if summary.interrupted else ""
    return f"{counts} in {summary.seconds:.1f} s{sent}{ending}"


def result_text(result: FileResult) -> str:
    """Describe one file's result on one line."""
    if result.outcome == "failed":
        return f"{result.path}: {result.detail}"
    if result.detail:  # skipped as a copy of another file of the run
        return f"{result.path} ({result.detail})"
    if result.image_id is not None:
        return f"{result.path} (image {result.image_id})"
    return str(result.path)


class Reporter:
    """Plain lines: one per file on stdout, retries and failures again on stderr.

    Lines on stdout are sent within `FLUSH_EVERY` seconds by a thread of the reporter's, started
    with the first line, and at the end: the thousand files a second run skips at once are one
    write, not a thousand.
    """

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.out, self.err = out, err
        self.lock = threading.Lock()
        self.unflushed = False
        self.closed = threading.Event()
        self.flusher: threading.Thread | None = None

    def write(self, line: str) -> None:
        """Write a line on stdout; it is flushed within `FLUSH_EVERY` seconds."""
        with self.lock:
            self.out.write(line + "\n")
            self.unflushed = True
            if self.flusher is None:
                self.flusher = threading.Thread(target=self.flush_now_and_then, daemon=True)
                self.flusher.start()

    def flush(self) -> None:
        with self.lock:
            if self.unflushed:
                self.out.flush()
                self.unflushed = False

    def flush_now_and_then(self) -> None:
        while not self.closed.wait(FLUSH_EVERY):
            self.flush()

    def start(self, files: int, size: int) -> None:
        """Hear how many files and bytes the run has."""

    def result(self, result: FileResult) -> None:
        self.write(f"{result.outcome:<10} {result_text(result)}")

    def retry(self, retry: Retry) -> None:
        with self.lock:
            print(
                f"retry      {retry.method} {retry.url}: {retry.reason}; attempt {retry.attempt}"
                f" in {retry.wait:.1f} s",
                file=self.err,
                flush=True,
            )

    def finish(self, summary: Summary) -> None:
        self.write(summary_text(summary))
        self.flush()
        with self.lock:
            for failed in summary.failed:
                print(f"failed: {result_text(failed)}", file=self.err, flush=True)

    def close(self) -> None:
        """Stop drawing and flushing, as the run ends (early or not); flush what is left."""
        self.closed.set()
        self.flush()


class JsonReporter(Reporter):
    """JSON lines on stdout: one object per file, per retry, then the summary."""

    def result(self, result: FileResult) -> None:
        self.write(json.dumps(result.to_json()))

    def retry(self, retry: Retry) -> None:
        self.write(
            json.dumps(
                {
                    "event": "retry",
                    "method": retry.method,
                    "url": retry.url,
                    "reason": retry.reason,
                    "attempt": retry.attempt,
                    "wait": round(retry.wait, 3),
                }
            )
        )

    def finish(self, summary: Summary) -> None:
        self.write(json.dumps(summary.to_json()))
        self.flush()


class ProgressReporter(Reporter):
    """A rich progress bar: files done of all, bytes, rate and time left; failures above it."""

    def __init__(self, action: str) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=False)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.action = action
        self.files_total: int | None = None
        self.files_done = 0
        self.task = self.progress.add_task(action, total=None, files="")
        self.progress.start()

    def files_text(self) -> str:
        total = "?" if self.files_total is None else f"{self.files_total:,}"
        return f"{self.files_done:,}/{total} files"

    def start(self, files: int, size: int) -> None:
        self.files_total = files
        self.progress.update(self.task, total=size, files=self.files_text())

    def result(self, result: FileResult) -> None:
        with self.lock:
            self.files_done += 1
            self.progress.update(self.task, advance=result.size, files=self.files_text())
            if result.outcome == "failed":
                self.console.print(f"[red]failed[/red] {result_text(result)}", highlight=False)

    def retry(self, retry: Retry) -> None:
        self.console.print(
            f"[yellow]retry[/yellow] {retry.method} {retry.url}: {retry.reason};"
            f" attempt {retry.attempt} in {retry.wait:.1f} s",
            highlight=False,
        )

    def finish(self, summary: Summary) -> None:
        self.progress.stop()
        self.console.print(summary_text(summary), highlight=False)
        for failed in summary.failed:
            print(f"failed: {result_text(failed)}", file=self.err, flush=True)

    def close(self) -> None:
        self.progress.stop()
        super().close()


def reporter(as_json: bool, action: str) -> Reporter:
    """Pick the output: JSON lines, a progress bar on a terminal, or plain lines."""
    if as_json:
        return JsonReporter()
    if sys.stdout.isatty():
        return ProgressReporter(action)
    return Reporter()
