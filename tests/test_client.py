"""The `imagestore` command and `imagestore.client`, run against gunicorn on a free port.

Every test runs the installed console script as a subprocess (or the Python API in this
process) and checks what the service holds afterwards through HTTP. The server is shared by
the module; each test makes images of its own (random pixels) and tags of its own.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import PROJECT, free_port
from live_server import LiveServer, serve
from PIL import Image as PILImage

from imagestore.client import (
    ApiError,
    Client,
    FileResult,
    Image,
    MissingTags,
    Tag,
    UnexpectedAnswer,
)
from imagestore.client import upload as upload_module
from imagestore.client.output import JsonReporter
from imagestore.client.sources import Source

# Every test runs the command against gunicorn.
pytestmark = pytest.mark.slow

IMAGESTORE = Path(sys.executable).parent / "imagestore"


# The server, credentials and files


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(tmp_path_factory.mktemp("client")) as server:
        yield server


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    """A bearer token of alice."""
    response = httpx.post(f"{server.url}/api/tokens/", data={"name": "tests"}, auth=server.user)
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty home folder, so that no ~/.netrc of the machine is read."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture(autouse=True)
def checksum_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The checksum cache of the test's own (commands and the Python API), not the machine's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "imagestore" / "checksums.sqlite3"


def unique_tag() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def write_image(path: Path, fmt: str = "PNG") -> bytes:
    """Write a small image of random pixels (bytes no other test has); return its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.frombytes("RGB", (8, 8), os.urandom(192)).save(path, fmt)
    return path.read_bytes()


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def imagestore(
    server: LiveServer,
    *args: str | Path,
    token: str | None = None,
    home: Path,
    env: dict[str, str] | None = None,
    url: str | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run the console script with IMAGESTORE_URL (and IMAGESTORE_TOKEN) set, in a session of
    its own: with no terminal, a password prompt reads the `input` given."""
    return subprocess.run(
        [str(IMAGESTORE), *map(str, args)],
        env=command_env(server.url if url is None else url, token, home) | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        **kwargs,
    )


def command_env(url: str, token: str | None, home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("IMAGESTORE_") and key != "NETRC"
    }
    env |= {"IMAGESTORE_URL": url, "HOME": str(home)}
    if token:
        env["IMAGESTORE_TOKEN"] = token
    return env


def events(output: str) -> list[dict[str, Any]]:
    """Parse `--json` output: every line is one JSON object."""
    return [json.loads(line) for line in output.splitlines()]


def summary_of(output: str) -> dict[str, Any]:
    [summary] = [event for event in events(output) if event["event"] == "summary"]
    return summary


def images_with(server: LiveServer, **params: str) -> list[dict[str, Any]]:
    """Return every image the list gives for these filters, walking its cursor pages."""
    found, url = [], f"{server.url}/api/images/"
    query: dict[str, str] | None = {"cursor": "", "page_size": "100", **params}
    while url:
        page = httpx.get(url, params=query, auth=server.user).json()
        found += page["results"]
        url, query = page["next"], None
    return found


def stored_copies(server: LiveServer, content: bytes) -> list[dict[str, Any]]:
    return images_with(server, sha256=sha(content))


# Upload


def test_upload_tags_each_file_with_its_folders(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    root, batch = tmp_path / "photos", unique_tag()
    deep = write_image(root / "2026" / "beach" / "a.png")
    middle = write_image(root / "2026" / "b.JPG", "JPEG")
    top = write_image(root / "c.png")
    write_image(root / ".cache" / "hidden.png")
    write_image(root / "2026" / ".hidden.png")
    for name in ("notes.txt", "README", "png", "c.png.txt"):
        (root / name).write_text("not an image")

    result = imagestore(
        server,
        "upload",
        root,
        "--tags-from-folders",
        "--create-missing-tags",
        "--tag",
        batch,
        "--json",
        token=token,
        home=home,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    sent = [event for event in events(result.stdout) if event["event"] == "uploaded"]
    assert sorted(Path(event["path"]).name for event in sent) == ["a.png", "b.JPG", "c.png"]
    assert summary_of(result.stdout) | {"seconds": 0} == {
        "event": "summary",
        "uploaded": 3,
        "skipped": 0,
        "failed": 0,
        "bytes": len(deep) + len(middle) + len(top),
        "seconds": 0,
        "interrupted": False,
    }
    assert [sorted(image["tags"]) for image in stored_copies(server, deep)] == [
        sorted([batch, "2026", "beach"])
    ]
    assert [sorted(image["tags"]) for image in stored_copies(server, middle)] == [
        sorted([batch, "2026"])
    ]
    assert [image["tags"] for image in stored_copies(server, top)] == [[batch]]
    assert len(images_with(server, tags=batch)) == 3


def test_a_second_run_uploads_nothing(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    contents = [write_image(tmp_path / "pics" / f"{n}.png") for n in range(5)]
    first = imagestore(server, "upload", tmp_path / "pics", "--json", token=token, home=home)
    assert summary_of(first.stdout)["uploaded"] == 5, first.stderr

    again = imagestore(server, "upload", tmp_path / "pics", "--json", token=token, home=home)

    assert again.returncode == 0, again.stderr
    summary = summary_of(again.stdout)
    assert (summary["uploaded"], summary["skipped"], summary["failed"]) == (0, 5, 0)
    skipped = {event["path"]: event["id"] for event in events(again.stdout) if "id" in event}
    for number, content in enumerate(contents):
        [image] = stored_copies(server, content)
        assert skipped[str(tmp_path / "pics" / f"{number}.png")] == image["id"]


def test_identical_files_of_a_run_are_sent_once(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    content = write_image(tmp_path / "a" / "one.png")
    (tmp_path / "a" / "two.png").write_bytes(content)

    result = imagestore(server, "upload", tmp_path / "a", "--json", token=token, home=home)

    summary = summary_of(result.stdout)
    assert (summary["uploaded"], summary["skipped"]) == (1, 1)
    assert len(stored_copies(server, content)) == 1


def test_exclude_skips_matching_files_and_folders(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    root = tmp_path / "pics"
    kept = write_image(root / "keep" / "a.png")
    raw = write_image(root / "keep" / "raw" / "b.png")
    gif = write_image(root / "c.gif", "GIF")
    draft = write_image(root / "drafts" / "d.png")

    result = imagestore(
        server,
        "upload",
        root,
        "--exclude",
        "raw",
        "--exclude",
        "*.gif",
        "--exclude",
        "drafts/*",
        "--json",
        token=token,
        home=home,
    )

    assert summary_of(result.stdout)["uploaded"] == 1, result.stdout
    assert len(stored_copies(server, kept)) == 1
    for content in (raw, gif, draft):
        assert stored_copies(server, content) == []


def test_dry_run_sends_nothing(server: LiveServer, token: str, home: Path, tmp_path: Path) -> None:
    stored = write_image(tmp_path / "pics" / "old.png")
    imagestore(server, "upload", tmp_path / "pics" / "old.png", token=token, home=home)
    new = write_image(tmp_path / "pics" / "new.png")

    result = imagestore(
        server, "upload", tmp_path / "pics", "--dry-run", "--json", token=token, home=home
    )

    assert result.returncode == 0, result.stderr
    outcome = {Path(e["path"]).name: e["event"] for e in events(result.stdout) if "path" in e}
    assert outcome == {"new.png": "new", "old.png": "skipped"}
    assert stored_copies(server, new) == []
    assert len(stored_copies(server, stored)) == 1


def test_a_dry_run_creates_no_tag(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    write_image(tmp_path / "pics" / "a.png")
    tag = unique_tag()

    result = imagestore(
        server,
        "upload",
        tmp_path / "pics",
        "--tag",
        tag,
        "--create-missing-tags",
        "--dry-run",
        token=token,
        home=home,
    )

    assert result.returncode == 0, result.stderr
    assert httpx.get(f"{server.url}/api/tags/{tag}/", auth=server.user).status_code == 404


def test_a_missing_tag_stops_the_upload_before_anything_is_sent(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    content = write_image(tmp_path / "pics" / "a.png")
    missing = unique_tag()

    result = imagestore(
        server, "upload", tmp_path / "pics", "--tag", missing, token=token, home=home
    )

    assert result.returncode == 2
    assert missing in result.stderr
    assert "--create-missing-tags" in result.stderr
    assert stored_copies(server, content) == []


def test_a_bad_file_fails_alone_and_is_named(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    good = [write_image(tmp_path / "pics" / f"{n}.png") for n in range(2)]
    (tmp_path / "pics" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")

    result = imagestore(server, "upload", tmp_path / "pics", token=token, home=home)

    assert result.returncode == 1
    broken = tmp_path / "pics" / "broken.jpg"
    assert f"failed     {broken}: 400: broken.jpg:" in result.stdout
    assert f"failed: {broken}: 400" in result.stderr
    assert "2 uploaded, 0 skipped, 1 failed" in result.stdout
    for content in good:
        assert len(stored_copies(server, content)) == 1


def test_plain_lines_name_each_file_and_its_image(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    content = write_image(tmp_path / "a.png")

    result = imagestore(server, "upload", tmp_path / "a.png", token=token, home=home)

    [image] = stored_copies(server, content)
    lines = result.stdout.splitlines()
    assert lines[0] == f"uploaded   {tmp_path / 'a.png'} (image {image['id']})"
    assert lines[1].startswith("1 uploaded, 0 skipped, 0 failed in ")


def test_a_json_line_is_sent_while_the_run_goes_on() -> None:
    """Lines are not flushed one by one, but none waits for the end of the run."""
    read_end, write_end = os.pipe()
    with open(write_end, "w") as out:
        report = JsonReporter(out=out)
        report.result(FileResult(Path("a.png"), "skipped", "ab" * 32, 3, 7))
        ready, _, _ = select.select([read_end], [], [], 5)
        sent = os.read(read_end, 65536) if ready else b""
        report.close()
    os.close(read_end)

    assert json.loads(sent) == {
        "event": "skipped",
        "path": "a.png",
        "id": 7,
        "sha256": "ab" * 32,
        "size": 3,
    }


def test_a_terminal_gets_a_progress_bar(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    for number in range(3):
        write_image(tmp_path / "pics" / f"{number}.png")
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(IMAGESTORE), "upload", str(tmp_path / "pics")],
        env=command_env(server.url, token, home) | {"COLUMNS": "160"},
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # the command ended and closed its terminal
            chunk = b""
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=60) == 0

    text = output.decode(errors="replace")
    assert "3/3 files" in text
    assert "━" in text  # the bar
    assert "3 uploaded, 0 skipped, 0 failed" in text


def test_an_interrupted_upload_resumes_with_no_duplicate(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    root = tmp_path / "many"
    contents = [write_image(root / f"{n:03}.png") for n in range(300)]
    command = [str(IMAGESTORE), "upload", str(root), "-j", "1", "--json"]
    env = command_env(server.url, token, home)

    def run_until(uploads: int, sig: signal.Signals) -> subprocess.CompletedProcess[str]:
        """Start the upload and stop it with `sig` once it reports `uploads` more uploads."""
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        lines, seen = [], 0
        for line in process.stdout:
            lines.append(line)
            seen += json.loads(line)["event"] == "uploaded"
            if seen >= uploads:
                process.send_signal(sig)
                break
        rest, _ = process.communicate(timeout=60)
        return subprocess.CompletedProcess(command, process.returncode, "".join(lines) + rest)

    interrupted = run_until(10, signal.SIGINT)
    killed = run_until(10, signal.SIGKILL)
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert interrupted.returncode == 130
    assert summary_of(interrupted.stdout)["interrupted"] is True
    assert killed.returncode == -signal.SIGKILL
    assert final.returncode == 0, final.stderr
    summary = summary_of(final.stdout)
    assert summary["failed"] == 0
    assert summary["interrupted"] is False
    assert summary["skipped"] >= 20
    assert summary["uploaded"] + summary["skipped"] == 300
    copies = {}
    for image in images_with(server, created_by="alice"):
        copies[image["sha256"]] = copies.get(image["sha256"], 0) + 1
    assert [copies.get(sha(content)) for content in contents] == [1] * 300


# The checksum cache


def test_a_second_run_reads_only_the_files_that_changed(
    server: LiveServer, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(3):
        write_image(tmp_path / "pics" / f"{number}.png")
    read: list[str] = []
    original = upload_module.read_once

    def counted(source: Source) -> tuple[str, int, bytes | None]:
        read.append(source.path.name)
        return original(source)

    monkeypatch.setattr(upload_module, "read_once", counted)
    with Client(server.url, token=token) as client:
        client.upload([tmp_path / "pics"])
        first, read[:] = list(read), []
        changed = write_image(tmp_path / "pics" / "1.png")
        summary = client.upload([tmp_path / "pics"])

    assert sorted(first) == ["0.png", "1.png", "2.png"]
    assert read == ["1.png"]
    assert (summary.count("uploaded"), summary.count("skipped")) == (1, 2)
    assert len(stored_copies(server, changed)) == 1


def test_the_cache_knows_a_file_by_its_absolute_path(
    server: LiveServer, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(tmp_path / "pics" / "day" / "a.png")
    read: list[Path] = []
    original = upload_module.read_once

    def counted(source: Source) -> tuple[str, int, bytes | None]:
        read.append(source.path)
        return original(source)

    monkeypatch.setattr(upload_module, "read_once", counted)
    monkeypatch.chdir(tmp_path)
    with Client(server.url, token=token) as client:
        client.upload(["pics"])
        monkeypatch.chdir(tmp_path / "pics" / "day")
        again = client.upload([tmp_path / "pics", "a.png", "../day/./a.png"])

    assert read == [Path("pics/day/a.png")]
    assert [result.outcome for result in again.results] == ["skipped"]


def test_a_wrong_cached_checksum_makes_no_duplicate(
    server: LiveServer, token: str, home: Path, tmp_path: Path, checksum_cache: Path
) -> None:
    content = write_image(tmp_path / "pics" / "a.png")
    imagestore(server, "upload", tmp_path / "pics", token=token, home=home)
    with sqlite3.connect(checksum_cache) as cache:
        cache.execute("UPDATE files SET sha256 = ?", (sha(b"something else"),))

    result = imagestore(server, "upload", tmp_path / "pics", "--json", token=token, home=home)

    assert result.returncode == 0, result.stderr
    assert summary_of(result.stdout)["skipped"] == 1
    assert len(stored_copies(server, content)) == 1


def test_no_cache_reads_every_file(
    server: LiveServer, token: str, home: Path, tmp_path: Path, checksum_cache: Path
) -> None:
    write_image(tmp_path / "pics" / "a.png")

    result = imagestore(
        server, "upload", tmp_path / "pics", "--no-cache", "--json", token=token, home=home
    )

    assert summary_of(result.stdout)["uploaded"] == 1
    assert not checksum_cache.exists()


# Credentials


def test_a_bad_token_is_exit_code_2(server: LiveServer, home: Path, tmp_path: Path) -> None:
    content = write_image(tmp_path / "a.png")

    result = imagestore(server, "upload", tmp_path / "a.png", token="ims_wrong", home=home)

    assert result.returncode == 2
    assert "refused the credentials" in result.stderr
    assert stored_copies(server, content) == []


def test_no_credentials_is_exit_code_2(server: LiveServer, home: Path) -> None:
    result = imagestore(server, "ls", home=home)

    assert result.returncode == 2
    assert "IMAGESTORE_TOKEN" in result.stderr


def test_no_url_is_exit_code_2(server: LiveServer, token: str, home: Path) -> None:
    result = imagestore(server, "ls", token=token, home=home, url="")

    assert result.returncode == 2
    assert "IMAGESTORE_URL" in result.stderr


def test_a_usage_error_is_exit_code_2(server: LiveServer, token: str, home: Path) -> None:
    result = imagestore(server, "rm", "twelve", token=token, home=home)

    assert result.returncode == 2
    assert "not image ids" in result.stderr


def test_whoami_with_a_token(server: LiveServer, token: str, home: Path) -> None:
    result = imagestore(server, "whoami", "--json", token=token, home=home)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "url": server.url,
        "username": "alice",
        "auth": "token",
        "admin": False,
    }


def test_whoami_asks_the_password_of_a_user(server: LiveServer, home: Path) -> None:
    result = imagestore(server, "whoami", "--user", "root", home=home, input=server.admin[1] + "\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"root (admin, basic) at {server.url}\n"


def test_a_wrong_password_is_exit_code_2(server: LiveServer, home: Path) -> None:
    result = imagestore(server, "whoami", "--user", "alice", home=home, input="wrong\n")

    assert result.returncode == 2
    assert "refused the credentials" in result.stderr


def test_credentials_come_from_netrc(server: LiveServer, home: Path) -> None:
    netrc = home / ".netrc"
    netrc.write_text(f'machine 127.0.0.1 login alice password "{server.user[1]}"\n')
    netrc.chmod(0o600)

    result = imagestore(server, "whoami", home=home)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"alice (user, netrc) at {server.url}\n"


def test_a_netrc_others_may_read_is_refused(server: LiveServer, home: Path) -> None:
    netrc = home / ".netrc"
    netrc.write_text(f'machine 127.0.0.1 login alice password "{server.user[1]}"\n')
    netrc.chmod(0o644)

    result = imagestore(server, "whoami", home=home)

    assert result.returncode == 2
    assert "~/.netrc" in result.stderr
    assert "too permissive" in result.stderr


# Retries, through a proxy that answers errors before passing requests on


class LoopbackServer(http.server.ThreadingHTTPServer):
    """An HTTP server of the test's own, on a free loopback port."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        """Stay quiet."""


class FlakyProxy(LoopbackServer):
    """A proxy on a free port: answers the first `failures` uploads with `status` (and
    `Retry-After` when given), and passes every other request on to the server. With
    `hide_stored`, it answers `exists` with none, as if the files were stored after it."""

    def __init__(
        self,
        upstream: str,
        status: int,
        failures: int,
        retry_after: str = "",
        hide_stored: bool = False,
    ) -> None:
        super().__init__(ProxyHandler)
        self.upstream = upstream.removeprefix("http://")
        self.status, self.failures, self.retry_after = status, failures, retry_after
        self.hide_stored = hide_stored
        self.uploads = 0
        self.lock = threading.Lock()


class ProxyHandler(QuietHandler):
    server: FlakyProxy

    def relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        proxy = self.server
        if proxy.hide_stored and self.path.startswith("/api/images/exists"):
            self.answer(200, "application/json", {"exists": [], "images": {}})
            return
        if self.command == "POST" and self.path.startswith("/api/images/?"):
            with proxy.lock:
                proxy.uploads += 1
                fail = proxy.uploads <= proxy.failures
            if fail:
                problem = {"status": proxy.status, "detail": "injected"}
                self.answer(proxy.status, "application/problem+json", problem)
                return
        connection = http.client.HTTPConnection(proxy.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        connection.request(self.command, self.path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        connection.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer(self, status: int, content_type: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if status != 200 and self.server.retry_after:
            self.send_header("Retry-After", self.server.retry_after)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = relay


@pytest.fixture
def flaky(server: LiveServer, request: pytest.FixtureRequest) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(server.url, *request.param)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


@pytest.mark.parametrize("flaky", [(503, 2, "")], indirect=True)
def test_uploads_are_retried_after_a_503(
    server: LiveServer, flaky: FlakyProxy, token: str, home: Path, tmp_path: Path
) -> None:
    content = write_image(tmp_path / "a.png")

    result = imagestore(
        server, "upload", tmp_path / "a.png", "--json", token=token, home=home, url=flaky.url
    )

    assert result.returncode == 0, result.stdout + result.stderr
    retries = [event for event in events(result.stdout) if event["event"] == "retry"]
    assert [(r["reason"], r["attempt"]) for r in retries] == [
        ("503 injected", 2),
        ("503 injected", 3),
    ]
    assert flaky.uploads == 3
    assert summary_of(result.stdout)["uploaded"] == 1
    assert len(stored_copies(server, content)) == 1


@pytest.mark.parametrize("flaky", [(429, 1, "1")], indirect=True)
def test_a_429_is_retried_after_its_retry_after(
    server: LiveServer, flaky: FlakyProxy, token: str, home: Path, tmp_path: Path
) -> None:
    write_image(tmp_path / "a.png")
    started = time.monotonic()

    result = imagestore(
        server, "upload", tmp_path / "a.png", "--json", token=token, home=home, url=flaky.url
    )

    assert result.returncode == 0, result.stdout + result.stderr
    [retry] = [event for event in events(result.stdout) if event["event"] == "retry"]
    assert retry["wait"] >= 1.0
    assert time.monotonic() - started >= 1.0
    assert flaky.uploads == 2


@pytest.mark.parametrize("flaky", [(503, 100, "")], indirect=True)
def test_retries_stop_after_the_attempts_allowed(
    server: LiveServer, flaky: FlakyProxy, token: str, home: Path, tmp_path: Path
) -> None:
    write_image(tmp_path / "a.png")

    result = imagestore(
        server,
        "upload",
        tmp_path / "a.png",
        "--retries",
        "3",
        "--json",
        token=token,
        home=home,
        url=flaky.url,
    )

    assert result.returncode == 1
    assert flaky.uploads == 3
    [failed] = [event for event in events(result.stdout) if event["event"] == "failed"]
    assert failed["error"] == "503: injected"


@pytest.mark.parametrize("flaky", [(400, 1, "")], indirect=True)
def test_a_4xx_is_never_retried(
    server: LiveServer, flaky: FlakyProxy, token: str, home: Path, tmp_path: Path
) -> None:
    write_image(tmp_path / "a.png")

    result = imagestore(
        server, "upload", tmp_path / "a.png", "--json", token=token, home=home, url=flaky.url
    )

    assert result.returncode == 1
    assert flaky.uploads == 1
    assert not [event for event in events(result.stdout) if event["event"] == "retry"]


def test_an_unreachable_service_fails_each_file(
    server: LiveServer, token: str, home: Path, tmp_path: Path
) -> None:
    write_image(tmp_path / "pics" / "a.png")
    write_image(tmp_path / "pics" / "b.png")
    closed = f"http://127.0.0.1:{free_port()}"

    result = imagestore(
        server, "upload", tmp_path / "pics", "--retries", "2", token=token, home=home, url=closed
    )

    assert result.returncode == 1
    for name in ("a.png", "b.png"):
        assert f"failed: {tmp_path / 'pics' / name}: POST /api/images/: ConnectError" in (
            result.stderr
        )


class OtherService(LoopbackServer):
    """A web server that is not imagestore: every request gets the same answer (200, or a
    redirect to `location`)."""

    def __init__(self, content_type: str, body: bytes, location: str = "") -> None:
        super().__init__(OtherServiceHandler)
        self.content_type, self.body, self.location = content_type, body, location


class OtherServiceHandler(QuietHandler):
    server: OtherService

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(301 if self.server.location else 200)
        if self.server.location:
            self.send_header("Location", self.server.location + self.path)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    do_GET = do_POST = answer


@pytest.fixture
def other_service(request: pytest.FixtureRequest) -> Iterator[OtherService]:
    other = OtherService(*request.param)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    yield other
    other.shutdown()
    other.server_close()


@pytest.mark.parametrize(
    ("other_service", "expected"),
    [
        (("text/html", b"<html>Sign in</html>"), "in text/html, not JSON: is http://127.0.0.1:"),
        (("application/json", b'{"status": "ok"}'), "is not as the imagestore API gives it"),
        (("application/json", b"[1, 2]"), "is not as the imagestore API gives it"),
        (
            ("text/html", b"", "https://images.example.com"),
            "301: Moved Permanently, to https://images.example.com/api/",
        ),
    ],
    indirect=["other_service"],
    ids=["html-page", "other-json", "json-list", "redirect-to-https"],
)
@pytest.mark.parametrize("command", [["ls"], ["whoami"], ["tags"], ["upload", "pics"]])
def test_a_url_that_is_not_the_service_is_one_clear_line(
    server: LiveServer,
    other_service: OtherService,
    expected: str,
    command: list[str],
    home: Path,
    tmp_path: Path,
) -> None:
    """IMAGESTORE_URL naming another web server (a sign-in page of a proxy, another JSON API):
    a Python traceback before. A redirect (a proxy sending http to https) names its target."""
    write_image(tmp_path / "pics" / "a.png")

    result = imagestore(server, *command, token="t", home=home, url=other_service.url, cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    # A run that could not ask which files are stored sends them, and names each failure.
    assert line.startswith(("imagestore: ", "failed: pics/a.png: "))
    assert expected in line


@pytest.mark.parametrize("other_service", [("text/html", b"<html>Sign in</html>")], indirect=True)
def test_tag_calls_to_another_service_raise_unexpected_answer(other_service: OtherService) -> None:
    """`tag` and `create_tag` read their answers as every other call does (a JSONDecodeError
    before)."""
    with Client(other_service.url, token="ims_x") as client:
        for call in (client.tag, client.create_tag):
            with pytest.raises(UnexpectedAnswer, match="in text/html, not JSON"):
                call("beach")


@pytest.mark.parametrize("flaky", [(503, 0)], indirect=True)
def test_files_of_a_folder_go_several_to_a_request(
    server: LiveServer, flaky: FlakyProxy, token: str, home: Path, tmp_path: Path
) -> None:
    for number in range(12):
        write_image(tmp_path / "pics" / f"{number:02}.png")
    write_image(tmp_path / "pics" / "sub" / "a.png")

    result = imagestore(
        server,
        "upload",
        tmp_path / "pics",
        "--tags-from-folders",
        "--create-missing-tags",
        "--json",
        token=token,
        home=home,
        url=flaky.url,
    )

    assert summary_of(result.stdout)["uploaded"] == 13, result.stdout + result.stderr
    assert flaky.uploads == 3  # 10 and 2 files of pics/, 1 of pics/sub/ (another tag)


@pytest.mark.parametrize("flaky", [(503, 0, "", True)], indirect=True)
def test_a_file_stored_after_the_check_is_skipped_not_failed(
    server: LiveServer, flaky: FlakyProxy, token: str, home: Path, tmp_path: Path
) -> None:
    stored = write_image(tmp_path / "pics" / "a.png")
    imagestore(server, "upload", tmp_path / "pics" / "a.png", token=token, home=home)
    new = write_image(tmp_path / "pics" / "b.png")

    result = imagestore(
        server, "upload", tmp_path / "pics", "--json", token=token, home=home, url=flaky.url
    )

    assert result.returncode == 0, result.stdout + result.stderr
    outcome = {Path(e["path"]).name: e["event"] for e in events(result.stdout) if "path" in e}
    assert outcome == {"a.png": "skipped", "b.png": "uploaded"}
    assert flaky.uploads == 3  # both, refused for a.png; then each on its own
    assert len(stored_copies(server, stored)) == 1
    assert len(stored_copies(server, new)) == 1


# Listing, downloading, tagging, deleting


@pytest.fixture
def tagged(server: LiveServer, token: str, home: Path, tmp_path: Path) -> tuple[str, list[bytes]]:
    """Upload three images with a tag of their own; return the tag and their bytes."""
    tag = unique_tag()
    contents = [write_image(tmp_path / "up" / f"{n}.png") for n in range(3)]
    result = imagestore(
        server,
        "upload",
        tmp_path / "up",
        "--tag",
        tag,
        "--create-missing-tags",
        token=token,
        home=home,
    )
    assert result.returncode == 0, result.stderr
    return tag, contents


def test_ls_lists_the_images_a_filter_selects(
    server: LiveServer, token: str, home: Path, tagged: tuple[str, list[bytes]]
) -> None:
    tag, contents = tagged

    result = imagestore(server, "ls", "--tag", tag, "--json", token=token, home=home)

    assert result.returncode == 0, result.stderr
    listed = events(result.stdout)
    assert sorted(image["sha256"] for image in listed) == sorted(map(sha, contents))
    assert [image["id"] for image in listed] == sorted((i["id"] for i in listed), reverse=True)
    assert all(image["tags"] == [tag] for image in listed)


def test_ls_stops_at_the_limit(
    server: LiveServer, token: str, home: Path, tagged: tuple[str, list[bytes]]
) -> None:
    result = imagestore(server, "ls", "--tag", tagged[0], "--limit", "2", token=token, home=home)

    assert len(result.stdout.splitlines()) == 2


def test_ls_of_an_unknown_excluded_tag_is_exit_code_1(
    server: LiveServer, token: str, home: Path
) -> None:
    result = imagestore(server, "ls", "--exclude-tag", unique_tag(), token=token, home=home)

    assert result.returncode == 1
    assert "answered 400: query.exclude_tags: Unknown tags" in result.stderr


def test_download_verifies_and_skips_what_is_there(
    server: LiveServer, token: str, home: Path, tmp_path: Path, tagged: tuple[str, list[bytes]]
) -> None:
    tag, contents = tagged
    dest = tmp_path / "copies"

    first = imagestore(server, "download", "--tag", tag, dest, "--json", token=token, home=home)

    assert first.returncode == 0, first.stderr
    summary = summary_of(first.stdout)
    assert (summary["downloaded"], summary["skipped"], summary["failed"]) == (3, 0, 0)
    files = sorted(dest.iterdir())
    assert sorted(sha(path.read_bytes()) for path in files) == sorted(map(sha, contents))
    by_id = {image["id"]: image for image in images_with(server, tags=tag)}
    for path in files:
        image_id, _, name = path.name.partition("-")
        assert name == by_id[int(image_id)]["filename"]

    files[0].write_bytes(b"damaged")
    again = imagestore(server, "download", "--tag", tag, dest, "--json", token=token, home=home)

    summary = summary_of(again.stdout)
    assert (summary["downloaded"], summary["skipped"], summary["failed"]) == (1, 2, 0)
    assert sorted(sha(path.read_bytes()) for path in dest.iterdir()) == sorted(map(sha, contents))


def test_tag_add_and_rm(
    server: LiveServer, token: str, home: Path, tagged: tuple[str, list[bytes]]
) -> None:
    tag, _ = tagged
    ids = sorted(image["id"] for image in images_with(server, tags=tag))
    extra = unique_tag()
    listed = f"{ids[0]},{ids[1]}-{ids[2]}"

    added = imagestore(
        server, "tag", "add", listed, extra, "--create-missing-tags", token=token, home=home
    )
    removed = imagestore(server, "tag", "rm", str(ids[0]), tag, token=token, home=home)

    assert added.returncode == 0, added.stderr
    assert removed.returncode == 0, removed.stderr
    tags = {image["id"]: sorted(image["tags"]) for image in images_with(server, tags=extra)}
    both = sorted([tag, extra])
    assert tags == {ids[0]: [extra], ids[1]: both, ids[2]: both}


def test_tag_add_of_a_missing_tag_fails(
    server: LiveServer, token: str, home: Path, tagged: tuple[str, list[bytes]]
) -> None:
    [image, *_] = images_with(server, tags=tagged[0])

    result = imagestore(
        server, "tag", "add", str(image["id"]), unique_tag(), token=token, home=home
    )

    assert result.returncode == 1
    assert "Unknown tags" in result.stderr


def test_tags_lists_names_and_counts(
    server: LiveServer, token: str, home: Path, tagged: tuple[str, list[bytes]]
) -> None:
    result = imagestore(server, "tags", "--name", tagged[0], "--json", token=token, home=home)

    assert [(tag["name"], tag["image_count"]) for tag in events(result.stdout)] == [(tagged[0], 3)]


def test_rm_deletes_images(
    server: LiveServer, token: str, home: Path, tagged: tuple[str, list[bytes]]
) -> None:
    ids = [image["id"] for image in images_with(server, tags=tagged[0])]

    result = imagestore(server, "rm", *map(str, ids), token=token, home=home)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "deleted 3 images\n"
    assert images_with(server, tags=tagged[0]) == []


# The Python API


def test_client_walks_every_page_of_a_filter(
    server: LiveServer, token: str, tmp_path: Path
) -> None:
    tag = unique_tag()
    contents = [write_image(tmp_path / f"{n}.png") for n in range(5)]
    with Client(server.url, token=token) as client:
        summary = client.upload([tmp_path], [tag], create_missing_tags=True, jobs=2)

        found = list(client.images(tags=[tag], page_size=2))
        oldest_first = list(client.images(tags=tag, ordering="id", page_size=2))
        by_size = list(client.images(tags=tag, ordering="-size", page_size=2))

    assert summary.count("uploaded") == 5
    assert not summary.failed
    assert all(isinstance(image, Image) for image in found)
    assert sorted(image.sha256 for image in found) == sorted(map(sha, contents))
    assert [image.id for image in found] == sorted((i.id for i in found), reverse=True)
    assert [image.id for image in oldest_first] == sorted(image.id for image in found)
    assert [image.size for image in by_size] == sorted((i.size for i in found), reverse=True)


def test_client_reads_one_image_tags_and_downloads(
    server: LiveServer, token: str, tmp_path: Path
) -> None:
    tag = unique_tag()
    content = write_image(tmp_path / "in" / "photo.png")
    with Client(server.url + "/api/", token=token) as client:
        client.upload([tmp_path / "in" / "photo.png"], [tag], create_missing_tags=True)
        [listed] = client.images(tags=[tag])

        image = client.image(listed.id)
        tags = client.tags(tag)
        saved = client.download(image, tmp_path)
        stored = client.exists([sha(content), sha(b"nothing")])

    assert image == listed
    assert (image.filename, image.sha256, image.tags, image.created_by) == (
        "photo.png",
        sha(content),
        [tag],
        "alice",
    )
    assert image.created_at is not None
    assert image.created_at.tzinfo is not None
    assert [(t.name, t.image_count) for t in tags] == [(tag, 1)]
    assert isinstance(tags[0], Tag)
    assert saved == tmp_path / f"{image.id}-photo.png"
    assert saved.read_bytes() == content
    assert stored == {sha(content): image.id}


def test_client_takes_one_path_and_one_tag_alone(
    server: LiveServer, token: str, tmp_path: Path
) -> None:
    tag = unique_tag()
    content = write_image(tmp_path / "a.png")
    with Client(server.url, token=token) as client:
        summary = client.upload(str(tmp_path / "a.png"), tag, create_missing_tags=True)

    assert summary.count("uploaded") == 1
    assert [image["tags"] for image in stored_copies(server, content)] == [[tag]]


def test_client_raises_api_errors(server: LiveServer, token: str, tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    with Client(server.url, token=token) as client:
        with pytest.raises(ApiError) as missing_image:
            client.image(2**31 - 1)
        with pytest.raises(MissingTags) as missing_tag:
            client.upload([tmp_path / "a.png"], ["no-such-tag-" + uuid.uuid4().hex[:6]])
        with pytest.raises(TypeError):
            client.images(tag="typo")

    assert missing_image.value.status == 404
    assert missing_tag.value.names[0].startswith("no-such-tag-")


class PagesServer(LoopbackServer):
    """Serves two pages of one image each, noting the path and credentials of each request."""

    def __init__(self) -> None:
        super().__init__(PagesHandler)
        self.seen: list[tuple[str, str | None]] = []


class PagesHandler(QuietHandler):
    """Two pages of one image each; the first page's `next` names another host."""

    server: PagesServer

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        first = "cursor=1" not in self.path
        image = {
            "id": 2 if first else 1,
            "filename": "a.png",
            "sha256": "0" * 64,
            "size": 1,
            "width": 1,
            "height": 1,
            "content_type": "image/png",
            "format": "PNG",
            "tags": [],
            "created_by": "alice",
            "created_at": "2026-11-27T10:00:00.000000Z",
            "image": "http://elsewhere.invalid/api/images/1/file",
        }
        page = {
            "count": None,
            "previous": None,
            "next": "http://elsewhere.invalid:9/api/images/?cursor=1" if first else None,
            "results": [image],
        }
        data = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_page_links_are_followed_on_the_service_only() -> None:
    """A `next` link naming another host is asked of the service: credentials go nowhere else."""
    service = PagesServer()
    threading.Thread(target=service.serve_forever, daemon=True).start()
    try:
        with Client(service.url, token="ims_x") as client:
            ids = [image.id for image in client.images()]
    finally:
        service.shutdown()
        service.server_close()

    assert ids == [2, 1]
    assert [auth for _, auth in service.seen] == ["Bearer ims_x", "Bearer ims_x"]
    assert service.seen[1][0] == "/api/images/?cursor=1"


def test_the_client_loads_no_server_module() -> None:
    """Scripts import the client alone: no Flask, no database layer, no server code."""
    check = (
        "import sys, imagestore.client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('flask', 'werkzeug', 'sqlalchemy', 'marshmallow', 'PIL', 'boto3')"
        " or (m.startswith('imagestore.') and not m.startswith('imagestore.client'))))"
    )

    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, cwd=PROJECT, check=True
    )

    assert result.stdout == "[]\n"
