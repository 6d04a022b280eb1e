"""`make run` on a fresh instance folder, then the README's curl commands against it."""

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from helpers import PROJECT, free_port, image_bytes

# `make run`: nginx in front of gunicorn.
pytestmark = [pytest.mark.slow, pytest.mark.service]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"`make run` exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listened on port {port} after {seconds} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Start `make run` on a new instance folder; yield its URL, admin password and log."""
    instance = tmp_path_factory.mktemp("instance")
    port = free_port()
    log_path = instance.parent / "make-run.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGESTORE_")}
    env |= {"HOST": "127.0.0.1", "PORT": str(port), "IMAGESTORE_INSTANCE_PATH": str(instance)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["make", "run"],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process)
        output = log_path.read_text()
        password = re.search(r"created admin 'admin' with password: (\S+)", output).group(1)
        yield {"url": f"http://127.0.0.1:{port}", "password": password, "instance": instance}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def curl(*args: str) -> tuple[int, dict | None]:
    """Run curl; return the HTTP status and the JSON body, if any."""
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--write-out", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body) if body.strip() else None


def test_make_run_prints_a_working_admin_password(server):
    status, body = curl("-u", f"admin:{server['password']}", f"{server['url']}/api/")

    assert status == 200
    assert body["images"] == f"{server['url']}/api/images/"


def test_make_run_keeps_data_in_the_instance_folder(server):
    assert (server["instance"] / "imagestore.sqlite").is_file()
    assert (server["instance"] / "secret_key").is_file()


def test_readme_upload_command_works_as_written(server, tmp_path):
    admin = f"admin:{server['password']}"
    photo = tmp_path / "x.jpeg"
    photo.write_bytes(image_bytes("JPEG"))
    curl(
        "-u",
        admin,
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"name": "my tag"}',
        f"{server['url']}/api/tags/",
    )

    status, body = curl(
        "-u", admin, "-F", f"image=@{photo}", "-F", "tags=my tag", f"{server['url']}/api/images/"
    )

    assert status == 201
    assert body["tags"] == ["my tag"]
    assert body["content_type"] == "image/jpeg"


def test_server_refuses_anonymous_requests(server):
    status, body = curl(f"{server['url']}/api/images/")

    assert status == 401
    assert body["status"] == 401


def test_server_answers_the_health_probes(server):
    assert curl(f"{server['url']}/healthz") == (200, {"status": "ok"})
    assert curl(f"{server['url']}/readyz")[0] == 200


def test_server_logs_json_request_lines_beside_gunicorns_own(server):
    curl("-H", "X-Request-ID: server-log-check", f"{server['url']}/api/tags/")

    lines = (server["instance"].parent / "make-run.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    [record] = [r for r in records if r.get("request_id") == "server-log-check"]
    assert (record["path"], record["status"], record["user"]) == ("/api/tags/", 401, None)
    assert any("Booting worker" in line for line in lines)  # gunicorn's error log still works
