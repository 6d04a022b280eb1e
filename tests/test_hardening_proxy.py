"""`make run`'s server under attack: nginx on a loopback port in front of gunicorn on a socket.

Each test starts what `make run` starts, `python -m imagestore.serve`, as real processes on a
free port, with a database and an instance folder of its own.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import PASSWORD, PROJECT, free_port, missing_service
from live_server import add_users, environment, own_database
from PIL import Image as PILImage

from imagestore.serve import find_nginx

ALICE = ("alice", PASSWORD)
ROOT = ("root", PASSWORD)
PROBLEM_KEYS = {"type", "title", "status", "detail"}
# Connections of each kind of hostile client held open at once.
HOSTILE_CONNECTIONS = 300


# nginx in front of gunicorn, started several times.
pytestmark = [pytest.mark.slow, pytest.mark.service]


@dataclass(frozen=True)
class Launched:
    """A running `python -m imagestore.serve`: its process, port, instance folder and log."""

    process: subprocess.Popen
    port: int
    instance: Path
    log: Path

    @property
    def runtime(self) -> Path:
        return self.instance / "run"

    def pid_of(self, server: str) -> int:
        """Return the pid of the gunicorn or nginx master, from its pid file."""
        return int((self.runtime / f"{server}.pid").read_text())


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def require_nginx() -> None:
    """Skip, or fail in CI, where nginx is not installed."""
    if find_nginx() is None:
        missing_service("nginx is not installed: `make nginx` installs Debian's package")


@contextmanager
def launch(tmp_path: Path, **settings: str) -> Iterator[Launched]:
    """Run the launcher on a free loopback port, on a new database holding alice and root."""
    require_nginx()
    with own_database(tmp_path) as database_url:
        add_users(database_url, tmp_path)
        port = free_port()
        env = environment(database_url, tmp_path) | {"HOST": "127.0.0.1", "PORT": str(port)}
        env |= {f"IMAGESTORE_{name}": value for name, value in settings.items()}
        log = tmp_path / "serve.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "imagestore.serve"],
                cwd=PROJECT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        launched = Launched(process, port, Path(env["IMAGESTORE_INSTANCE_PATH"]), log)
        try:
            wait_until_serving(launched)
            yield launched
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def wait_until_serving(launched: Launched, seconds: float = 60) -> None:
    """Wait for the launcher's "serving on" line; fail with its log if it exits first."""
    deadline = time.monotonic() + seconds
    while "imagestore: serving on" not in launched.log.read_text(errors="replace"):
        if launched.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the launcher did not start:\n{launched.log.read_text()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    with launch(tmp_path_factory.mktemp("proxy")) as launched:
        yield launched


def request(
    port: int,
    method: str,
    path: str,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10,
) -> Answer:
    """Send one request on a new connection; a timeout is an answer with status 0."""
    headers = dict(headers or {})
    if auth:
        credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {credentials}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
    except TimeoutError:
        return Answer(0, http.client.HTTPMessage(), b"", time.monotonic() - started)
    finally:
        connection.close()
    return Answer(response.status, response.headers, content, time.monotonic() - started)


def send_raw(port: int, data: bytes) -> Answer:
    """Send raw bytes as a request and read the answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        response = http.client.HTTPResponse(connection)
        response.begin()
        content = response.read()
    return Answer(response.status, response.headers, content, time.monotonic() - started)


def assert_nginx_problem(answer: Answer, status: int) -> dict[str, Any]:
    """Assert that nginx answered with a problem+json body shaped like the app's; return it."""
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert "X-Request-ID" not in answer.headers  # the app sets it on all its answers
    problem = answer.json()
    assert set(problem) == PROBLEM_KEYS
    assert (problem["type"], problem["status"]) == ("about:blank", status)
    assert problem["title"]
    assert problem["detail"]
    return problem


def tracking_rows(port: int, request_id: str) -> list[dict[str, Any]]:
    """Return the tracking rows of a request id, read through the API as an admin."""
    answer = request(port, "GET", f"/api/trackings/?request_id={request_id}", auth=ROOT)
    assert answer.status == 200, answer.body
    return answer.json()["results"]


def descendants(pid: int) -> set[int]:
    """Return the pids of every process below `pid`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def alive(pid: int) -> bool:
    """Tell whether a process exists (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening_tcp_inodes() -> set[str]:
    """Return the socket inodes of every listening TCP socket (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    """Return the inodes of the sockets a process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


@contextmanager
def hostile_clients(port: int, count: int) -> Iterator[None]:
    """Hold `count` idle connections, `count` sending a request head one byte a second, and
    `count` sending a body one byte a second after a complete head, while the block runs."""
    slow_head = b"GET /api/images/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 3600
    slow_body = (
        b"POST /api/images/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
    )
    with ExitStack() as stack:

        def connections() -> list[socket.socket]:
            return [
                stack.enter_context(socket.create_connection(("127.0.0.1", port)))
                for _ in range(count)
            ]

        connections()  # idle: they send nothing
        heads, bodies = connections(), connections()
        for connection in bodies:
            connection.sendall(slow_body)
        stop = threading.Event()

        def dribble() -> None:
            sent = 0
            while not stop.is_set():
                for connection in heads:
                    send_unless_closed(connection, slow_head[sent : sent + 1])
                for connection in bodies:
                    send_unless_closed(connection, b"x")
                sent += 1
                stop.wait(1)

        thread = threading.Thread(target=dribble, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def send_unless_closed(connection: socket.socket, data: bytes) -> None:
    """Send, ignoring a connection the server has closed."""
    with contextlib.suppress(OSError):
        connection.send(data)


def test_idle_and_slow_clients_do_not_delay_a_normal_request(server):
    """Attack: 300 idle connections, 300 sending a request head byte by byte, and 300 sending
    a body byte by byte; each would hold a sync worker for up to 120 s without nginx."""
    assert request(server.port, "GET", "/api/images/", auth=ALICE).status == 200

    with hostile_clients(server.port, HOSTILE_CONNECTIONS):
        answers = []
        for _ in range(4):
            time.sleep(1)
            answers.append(request(server.port, "GET", "/api/images/", auth=ALICE, timeout=5))

    assert [answer.status for answer in answers] == [200] * 4
    assert max(answer.seconds for answer in answers) < 1


def test_an_8_kb_url_reaches_the_app(server):
    """Attack: a URL of 8 KB, which gunicorn's default request-line limit refuses with HTML."""
    path = "/api/images/?name=" + "a" * (8192 - len("/api/images/?name="))

    answer = request(server.port, "GET", path, auth=ALICE, headers={"X-Request-ID": "long-url"})

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert [row["status_code"] for row in tracking_rows(server.port, "long-url")] == [200]


def test_a_20_kb_url_gets_414_problem_json_and_no_tracking_row(server):
    """Attack: a 20 KB URL, beyond what nginx reads; it never reaches the app."""
    answer = request(
        server.port, "GET", "/api/?" + "a" * 20480, headers={"X-Request-ID": "too-long-url"}
    )

    assert_nginx_problem(answer, 414)
    assert tracking_rows(server.port, "too-long-url") == []


def test_an_oversized_header_gets_431_problem_json(server):
    """Attack: a 20 KB header line (nginx's own status for it, 494, is sent as 431)."""
    answer = request(
        server.port,
        "GET",
        "/api/",
        headers={"X-Request-ID": "big-header", "X-Padding": "a" * 20480},
    )

    assert_nginx_problem(answer, 431)
    assert tracking_rows(server.port, "big-header") == []


def test_a_body_over_the_upload_limit_gets_413_problem_json(server):
    """Attack: a request announcing a body of MAX_UPLOAD_MB (20) + 1 byte; nginx refuses it
    before reading any of it, in the words of the app's own 413."""
    answer = send_raw(
        server.port,
        b"POST /api/images/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: big-body\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 20971521\r\n\r\n",
    )

    problem = assert_nginx_problem(answer, 413)
    assert problem["detail"] == "The request is larger than the upload limit of 20 MB."
    assert tracking_rows(server.port, "big-body") == []


@pytest.mark.parametrize(
    "head",
    [
        b"GARBAGE\r\n\r\n",
        "GET /api/\u00e9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        b"get /api/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: example.com\r\n\r\n",
        b"GET /api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: a\x01b\r\n\r\n",
        b"POST /api/tags/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    ],
    ids=[
        "no-request-line",
        "raw-utf8-url",
        "lowercase-method",
        "two-hosts",
        "control-character",
        "malformed-chunked-body",
    ],
)
def test_a_malformed_request_gets_400_problem_json(server, head):
    """Attack: request lines, heads and a chunked body that nginx or gunicorn refuse (gunicorn with
    HTML)."""
    assert_nginx_problem(send_raw(server.port, head), 400)


@pytest.mark.parametrize(
    "host", [b"[::1", b"a b", b"127.0.0.1:99999999", b"evil@127.0.0.1", b"a/b"]
)
def test_a_host_header_that_is_no_host_gets_400_problem_json(server, host):
    """Attack: a Host that no link of the answer can be built on, refused by nginx or the app."""
    answer = send_raw(server.port, b"GET /api/images/ HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")

    assert answer.status == 400, answer.body
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert b"http:///" not in answer.body


def test_an_upload_larger_than_nginx_body_buffer_reaches_the_app(server):
    """Attack surface: a 200 KB image, which nginx keeps in a file of the runtime folder."""
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(buffer, "PNG")
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="n.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + buffer.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    assert len(body) > 150_000

    answer = request(
        server.port,
        "POST",
        "/api/images/",
        auth=ALICE,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        body=body,
    )

    assert answer.status == 201, answer.body
    assert answer.json()["size"] == len(buffer.getvalue())


def test_gunicorn_listens_only_on_its_unix_socket(server):
    """Attack: reach gunicorn directly, past nginx: it holds no listening TCP socket."""
    gunicorn = server.pid_of("gunicorn")
    listening = listening_tcp_inodes()

    for pid in {gunicorn} | descendants(gunicorn):
        assert not socket_inodes(pid) & listening, f"gunicorn process {pid} listens on TCP"
    assert socket_inodes(server.pid_of("nginx")) & listening
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(str(server.runtime / "gunicorn.sock"))
        connection.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert connection.makefile("rb").readline().split()[1] == b"200"
    assert server.runtime.stat().st_mode & 0o077 == 0  # no other user reaches the socket


def test_a_forged_forwarded_for_is_not_recorded(server):
    """Attack: a client-sent X-Forwarded-For, -Proto and -Ssl, to pose as another address and
    scheme (gunicorn refused a forged X-Forwarded-Ssl with an HTML 400)."""
    forged = {
        "X-Forwarded-For": "198.51.100.66",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Ssl": "on",
        "X-Request-ID": "forged-forwarded-for",
    }

    answer = request(server.port, "GET", "/api/", auth=ALICE, headers=forged)

    assert answer.status == 200
    assert answer.json()["images"] == f"http://127.0.0.1:{server.port}/api/images/"
    [row] = tracking_rows(server.port, "forged-forwarded-for")
    assert row["remote_addr"] == "127.0.0.1"


def test_behind_a_load_balancer_nginx_appends_the_address_it_saw(tmp_path):
    """Attack: a forged first X-Forwarded-For entry in front of the load balancer's own. With
    PROXY_HOPS=1, nginx appends to the header and the balancer's entry is believed."""
    headers = {
        "X-Forwarded-For": "198.51.100.66, 203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Request-ID": "behind-balancer",
    }
    with launch(tmp_path, PROXY_HOPS="1") as launched:
        answer = request(launched.port, "GET", "/api/", auth=ALICE, headers=headers)
        [row] = tracking_rows(launched.port, "behind-balancer")

    assert answer.json()["images"] == f"https://127.0.0.1:{launched.port}/api/images/"
    assert row["remote_addr"] == "203.0.113.7"


def test_sigterm_stops_nginx_and_gunicorn(tmp_path):
    """Attack surface: a stop that would leave a server on the port or a worker behind."""
    with launch(tmp_path) as launched:
        servers = descendants(launched.process.pid)
        assert len(servers) >= 4  # the two masters, their workers

        launched.process.send_signal(signal.SIGTERM)
        status = launched.process.wait(timeout=60)

    assert status == 0
    assert [pid for pid in servers if alive(pid)] == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", launched.port), timeout=2)


def test_when_gunicorn_dies_nginx_answers_502_and_the_launcher_stops(tmp_path):
    """Attack surface: gunicorn killed under nginx; nginx answers 502 problem+json, then the
    launcher stops nginx and exits with an error."""
    with launch(tmp_path) as launched:
        nginx = launched.pid_of("nginx")
        launched.process.send_signal(signal.SIGSTOP)  # it would stop nginx at once
        try:
            os.killpg(launched.pid_of("gunicorn"), signal.SIGKILL)
            answer = request(launched.port, "GET", "/api/")
        finally:
            launched.process.send_signal(signal.SIGCONT)
        status = launched.process.wait(timeout=60)

    assert_nginx_problem(answer, 502)
    assert status == 1
    assert not alive(nginx)
    assert "gunicorn exited" in launched.log.read_text()


def test_a_second_launcher_on_the_same_instance_folder_refuses_to_start(server):
    """Attack surface: a second `make run` on the same instance folder, whose gunicorn would
    replace the first one's socket under its nginx."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGESTORE_")}
    env |= {"IMAGESTORE_INSTANCE_PATH": str(server.instance), "PORT": str(free_port())}

    result = subprocess.run(
        [sys.executable, "-m", "imagestore.serve"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "another server already runs from this instance folder" in result.stderr
    assert request(server.port, "GET", "/healthz").status == 200


def test_a_missing_nginx_is_one_clear_line(tmp_path):
    """Attack surface: a host without nginx; the launcher says how to install it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGESTORE_")}
    env |= {"NGINX": str(tmp_path / "no-nginx"), "IMAGESTORE_INSTANCE_PATH": str(tmp_path)}

    result = subprocess.run(
        [sys.executable, "-m", "imagestore.serve"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "imagestore: nginx is not installed: `make nginx` installs Debian's package"
    ]
