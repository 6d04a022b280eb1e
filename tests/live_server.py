"""The app served by gunicorn on a free loopback port, on a database of its own, for the
tests that need a real HTTP server (a browser, a fuzzer)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import (
    PASSWORD,
    POSTGRES_URL,
    PROJECT,
    admin_connection,
    migrate_database,
    settings,
    venv_program,
)
from sqlalchemy.engine import make_url

from imagestore import create_app
from imagestore.auth import hash_password
from imagestore.db import db
from imagestore.models import User


@dataclass(frozen=True)
class LiveServer:
    url: str
    user: tuple[str, str]
    admin: tuple[str, str]
    log: Path
    pid: int  # gunicorn's master process
    env: dict[str, str]  # the app's settings, for `flask` commands on the same data

    def workers(self) -> list[int]:
        """Return the pids of gunicorn's workers: the children of its master (none once it
        has ended)."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return sorted(int(pid) for pid in children.split())

    def log_tail(self, lines: int = 40) -> str:
        """Return the end of the server's log without access lines, for failure messages."""
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join([line for line in text if "imagestore.access" not in line][-lines:])


def wait_until_serving(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    """Wait until the server answers its OpenAPI document."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/openapi.json", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@contextmanager
def own_database(tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a new migrated database: SQLite, or PostgreSQL when the suite uses it."""
    if POSTGRES_URL is None:
        url = f"sqlite:///{tmp_path / 'live.sqlite'}"
        migrate_database(url, tmp_path)
        yield url
        return
    name = f"imagestore_live_{uuid.uuid4().hex[:12]}"
    with admin_connection(POSTGRES_URL) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        migrate_database(url, tmp_path)
        yield url
    finally:
        with admin_connection(POSTGRES_URL) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_users(database_url: str, tmp_path: Path) -> None:
    """Create the regular user `alice` and the administrator `root`."""
    app = create_app(settings(database_url, tmp_path))
    with app.app_context():
        for username, is_admin in (("alice", False), ("root", True)):
            user = User(username=username, password_hash=hash_password(PASSWORD))
            user.is_admin = is_admin
            db.session.add(user)
        db.session.commit()
        db.engine.dispose()


def environment(
    database_url: str, tmp_path: Path, overrides: dict[str, Any] | None = None
) -> dict[str, str]:
    """Return the environment that gives gunicorn's app the test settings (with overrides)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGESTORE_")}
    env["IMAGESTORE_INSTANCE_PATH"] = str(tmp_path / "instance")
    for name, value in (settings(database_url, tmp_path) | (overrides or {})).items():
        if name != "TESTING":
            env[f"IMAGESTORE_{name}"] = value if isinstance(value, str) else json.dumps(value)
    return env


@contextmanager
def serve(
    tmp_path: Path, overrides: dict[str, Any] | None = None, users: bool = True
) -> Iterator[LiveServer]:
    """Run gunicorn on 127.0.0.1 with a fresh database holding a user and an admin (or no user
    at all), with some settings changed."""
    with own_database(tmp_path) as database_url:
        if users:
            add_users(database_url, tmp_path)
        # gunicorn inherits a socket bound here: a port merely found free could be taken by
        # another test's server before gunicorn binds it, and that server would answer instead.
        listener = socket.create_server(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        log = tmp_path / "gunicorn.log"
        command = [
            venv_program("gunicorn"),
            "--no-control-socket",
            "--bind",
            f"fd://{listener.fileno()}",
            "--workers",
            "3",
            "--worker-class",
            "sync",
            # Long URLs reach the app, which answers them itself (gunicorn's 414 is an HTML page).
            "--limit-request-line",
            "0",
            "wsgi:app",
        ]
        env = environment(database_url, tmp_path, overrides)
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command,
                cwd=PROJECT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(listener.fileno(),),
            )
        listener.close()
        try:
            wait_until_serving(url, process)
            yield LiveServer(url, ("alice", PASSWORD), ("root", PASSWORD), log, process.pid, env)
        finally:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop the gunicorn we started (its own process group), forcibly if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
