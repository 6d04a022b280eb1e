"""Serve imagestore the way `make run` does: nginx on HOST:PORT, gunicorn behind it on a socket.

`python -m imagestore.serve` renders nginx's configuration from the template in this package
into a runtime folder inside the instance folder, starts gunicorn (gunicorn.conf.py) bound to a
unix socket there, then nginx in front of it. nginx reads each request whole before a sync
worker sees it, so slow or idle clients cannot tie the workers up. SIGTERM or SIGINT stops both
gracefully; when either stops on its own, the other is stopped and the exit status is 1.

Environment: HOST (default 127.0.0.1) and PORT (default 8000) for nginx; NGINX, the nginx
program (default: `nginx` on PATH or in /usr/sbin); the app's IMAGESTORE_* settings, of which
MAX_UPLOAD_MB bounds request bodies and PROXY_HOPS counts the proxies in front of nginx.
"""

from __future__ import annotations

import ctypes
import grp
import json
import os
import pwd
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from werkzeug.exceptions import (
    BadGateway,
    BadRequest,
    GatewayTimeout,
    HTTPException,
    HTTPVersionNotSupported,
    InternalServerError,
    MethodNotAllowed,
    NotFound,
    NotImplemented,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
    RequestTimeout,
    RequestURITooLarge,
    ServiceUnavailable,
)

from . import create_app
from .errors import error_body

PROJECT = Path(__file__).resolve().parent.parent
GUNICORN_CONFIG = PROJECT / "gunicorn.conf.py"
# The longest path the kernel accepts for a unix socket (sun_path, with its final NUL).
MAX_SOCKET_PATH = 107
PR_SET_PDEATHSIG = 1


def main() -> int:
    """Start gunicorn and nginx, wait until either stops or a signal asks; return the status."""
    stop_requested: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, frame: stop_requested.append(received))

    nginx = find_nginx()
    if nginx is None:
        return fail("nginx is not installed: `make nginx` installs Debian's package")
    host = (os.environ.get("HOST") or "127.0.0.1").strip("[]")
    port = int(os.environ.get("PORT") or "8000")
    app = create_app()  # the settings, read the way the app reads them
    runtime = Path(app.instance_path) / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)  # the socket inside is for this user only
    sock = runtime / "gunicorn.sock"
    if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
        return fail(f"the instance folder's path is too long for a unix socket: {sock}")
    if answers(sock):
        return fail(f"another server already runs from this instance folder ({sock})")
    gunicorn_settings = runpy.run_path(str(GUNICORN_CONFIG))
    grace = gunicorn_settings["graceful_timeout"]
    hops = app.config["PROXY_HOPS"]
    config = runtime / "nginx.conf"
    config.write_text(
        render_config(
            runtime=runtime,
            socket_path=sock,
            listen=listen_address(host, port),
            max_upload_mb=app.config["MAX_UPLOAD_MB"],
            max_body_bytes=app.config["MAX_CONTENT_LENGTH"],
            behind_proxies=hops > 0,
            upstream_timeout=gunicorn_settings["timeout"] + 10,
            graceful_timeout=grace,
        )
    )

    # The app believes nginx's X-Forwarded-For entry, and those of the proxies in front of it.
    gunicorn_command = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG)]
    gunicorn_command += ["--bind", f"unix:{sock}", "--pid", str(runtime / "gunicorn.pid")]
    processes = {
        "gunicorn": start(
            [*gunicorn_command, "wsgi:app"],
            env=os.environ | {"IMAGESTORE_PROXY_HOPS": str(hops + 1)},
        )
    }
    if wait_until(sock, processes, stop_requested, 120):
        nginx_command = [nginx, "-e", "stderr", "-p", str(runtime), "-c", str(config)]
        processes["nginx"] = start([*nginx_command, "-g", "daemon off;"])
        if wait_until((loopback_for(host), port), processes, stop_requested, 30):
            print(f"imagestore: serving on http://{listen_address(host, port)}", file=sys.stderr)
            while not stop_requested and all(p.poll() is None for p in processes.values()):
                time.sleep(0.2)

    stop_all(processes, grace + 5)
    return 0 if stop_requested else 1


def stop_all(processes: dict[str, subprocess.Popen], timeout: float) -> None:
    """Say which process exited on its own, then stop nginx (if started) and gunicorn."""
    for name, process in processes.items():
        if process.poll() is not None:
            print(f"imagestore: {name} exited with status {process.returncode}", file=sys.stderr)
    # nginx first: it finishes the requests in flight, which gunicorn is still there to answer.
    if "nginx" in processes:
        stop(processes["nginx"], signal.SIGQUIT, timeout)
    stop(processes["gunicorn"], signal.SIGTERM, timeout)


def find_nginx() -> str | None:
    """Return the nginx program: $NGINX, else `nginx` on PATH or in the system folders."""
    nginx = os.environ.get("NGINX") or shutil.which(
        "nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    )
    return nginx if nginx and os.access(nginx, os.X_OK) else None


def fail(message: str) -> int:
    """Print a one-line error and return the exit status 1."""
    print(f"imagestore: {message}", file=sys.stderr)
    return 1


def problems(max_upload_mb: float) -> list[dict[str, Any]]:
    """Return nginx's own error answers: its status, the one sent, and the problem+json body."""
    upload_limit = f"The request is larger than the upload limit of {max_upload_mb} MB."
    errors: list[tuple[int, HTTPException]] = [
        (400, BadRequest("The request is malformed: its request line, URL or headers.")),
        (404, NotFound("The requested URL was not found.")),
        (405, MethodNotAllowed(description="The method is not allowed.")),
        (408, RequestTimeout("The request was not received in time.")),
        (413, RequestEntityTooLarge(upload_limit)),
        (414, RequestURITooLarge("The URL is too long: a request line may take 16 KB.")),
        # nginx's 494 "request header too large" is sent as the standard 431.
        (494, RequestHeaderFieldsTooLarge("A request header is larger than 16 KB.")),
        (500, InternalServerError("The proxy failed; try again later.")),
        (501, NotImplemented("The request's transfer coding is not supported.")),
        (502, BadGateway("The application server is not answering; try again later.")),
        (503, ServiceUnavailable("The service is unavailable; try again later.")),
        (504, GatewayTimeout("The application server took too long to answer.")),
        (505, HTTPVersionNotSupported("Only HTTP/1.0 and HTTP/1.1 are supported.")),
    ]
    return [
        {"nginx_status": nginx_status, "status": error.code, "body": json.dumps(error_body(error))}
        for nginx_status, error in errors
    ]


def render_config(
    runtime: Path,
    socket_path: Path,
    listen: str,
    max_upload_mb: float,
    max_body_bytes: int,
    behind_proxies: bool,
    upstream_timeout: int,
    graceful_timeout: int,
) -> str:
    """Return nginx's configuration, from the template shipped in this package."""
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True
    )
    environment.filters["nginx_quote"] = nginx_quote
    template = environment.from_string(
        resources.files(__package__).joinpath("nginx.conf.j2").read_text()
    )
    # As root, nginx's workers would switch to an account that cannot reach the socket.
    user = None
    if os.geteuid() == 0:
        user = f"{pwd.getpwuid(0).pw_name} {grp.getgrgid(os.getegid()).gr_name}"
    return template.render(
        runtime=runtime,
        runtime_path=lambda name: nginx_quote(str(runtime / name)),
        socket_path=socket_path,
        listen=listen,
        user=user,
        max_body_bytes=max_body_bytes,
        problems=problems(max_upload_mb),
        # Alone, nginx states the client's address and scheme; behind proxies, it adds its own.
        forwarded_for="$proxy_add_x_forwarded_for" if behind_proxies else "$remote_addr",
        forwarded_proto="$app_forwarded_proto" if behind_proxies else "$scheme",
        upstream_timeout=upstream_timeout,
        graceful_timeout=graceful_timeout,
    )


def nginx_quote(text: str) -> str:
    """Quote a value for nginx's configuration; a `$` stays a variable, so none may appear."""
    if "$" in text:
        raise ValueError(f"nginx would read '$' as a variable in {text!r}")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def listen_address(host: str, port: int) -> str:
    """Return HOST:PORT as nginx's `listen` takes it, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def loopback_for(host: str) -> str:
    """Return the address to reach a server listening on `host` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def answers(address: Path | tuple[str, int]) -> bool:
    """Tell whether the server at a unix socket or (host, port) answers GET /healthz with 200."""
    try:
        with connect(address) as connection:
            connection.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            status_line = connection.makefile("rb").readline()
    except OSError:
        return False
    return status_line.split()[1:2] == [b"200"]


def connect(address: Path | tuple[str, int]) -> socket.socket:
    """Open a connection, with a 2 s timeout, to a unix socket or to (host, port)."""
    if isinstance(address, tuple):
        return socket.create_connection(address, timeout=2)
    connection = socket.socket(socket.AF_UNIX)
    connection.settimeout(2)
    try:
        connection.connect(str(address))
    except OSError:
        connection.close()
        raise
    return connection


def wait_until(
    address: Path | tuple[str, int],
    processes: dict[str, subprocess.Popen],
    stop_requested: list[int],
    seconds: float,
) -> bool:
    """Wait until `address` answers; False if a process exits, a signal asks, or time runs out."""
    deadline = time.monotonic() + seconds
    while not stop_requested and all(p.poll() is None for p in processes.values()):
        if answers(address):
            return True
        if time.monotonic() > deadline:
            print(f"imagestore: {address} is not answering after {seconds} s", file=sys.stderr)
            return False
        time.sleep(0.1)
    return False


def start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a server in its own session: a terminal's Ctrl-C reaches only this launcher."""
    return subprocess.Popen(
        command, cwd=PROJECT, env=env, start_new_session=True, preexec_fn=die_with_parent
    )


def die_with_parent() -> None:
    """Have the kernel send SIGTERM to this child if the launcher dies before stopping it."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(process: subprocess.Popen, signum: int, seconds: float) -> None:
    """Send `signum` to a server; kill its whole process group when it outlasts `seconds`."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


if __name__ == "__main__":
    sys.exit(main())
