"""Two gunicorn hosts on one PostgreSQL database and one S3 bucket, set up as an operator would.

Each host has its own instance folder and is configured only through IMAGESTORE_* variables;
the database is migrated and the users are made with the `flask` CLI. Whatever one host does,
the other sees.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import DIRECT, PROJECT, bucket_keys, free_port, missing_service, venv_program
from live_server import stop
from PIL import Image as PILImage
from seaweed import S3Server
from sqlalchemy.engine import make_url

from imagestore.tracking.writer import LINGER_SECONDS

SERVER_URL = (
    os.environ.get("IMAGESTORE_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
)
SECRET_KEY = "one secret key for every host of the deployment"
USER = ("alice", "alice's long password")
ADMIN = ("root", "root's long password")


# Two gunicorn hosts on a PostgreSQL server and a SeaweedFS bucket.
pytestmark = [pytest.mark.slow, pytest.mark.service]


# Requests go straight to loopback, whatever proxy the environment names.
@dataclass
class Answer:
    """What a host answered: status, headers and body."""

    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Host:
    """One gunicorn serving imagestore, and the environment its operator gave it."""

    name: str
    url: str
    env: dict[str, str]
    process: subprocess.Popen
    log: Path

    def call(
        self,
        method: str,
        path: str,
        auth: tuple[str, str] = USER,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Answer:
        """Send one request to this host and return its answer, errors included."""
        credentials = base64.b64encode(":".join(auth).encode()).decode()
        headers = {
            "Authorization": f"Basic {credentials}",
            "User-Agent": f"multihost-test via host {self.name}",
        }
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(
            f"{self.url}{path}", data=body, headers=headers, method=method
        )
        try:
            with DIRECT.open(request, timeout=30) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.headers, error.read())

    def send_json(self, method: str, path: str, data: Any) -> Answer:
        return self.call(
            method, path, body=json.dumps(data).encode(), content_type="application/json"
        )

    def upload(self, content: bytes, tags: list[str]) -> Answer:
        """Upload one image with tags as a multipart form."""
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="tags"\r\n\r\n{tag}\r\n'.encode()
            for tag in tags
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="shared.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + content
            + b"\r\n"
        )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.call(
            "POST",
            "/api/images/",
            body=body,
            content_type=f"multipart/form-data; boundary={boundary}",
        )

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the host's log, for failure messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def flask_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `flask --app imagestore ...` as an operator would, with a host's environment."""
    return subprocess.run(
        [venv_program("flask"), "--app", "imagestore", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_ok(env: dict[str, str], *args: str) -> str:
    """Run a flask command that must succeed; return its output."""
    result = flask_command(env, *args)
    assert result.returncode == 0, f"flask {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """Create a database of the test's own on the PostgreSQL server; drop it afterwards."""
    server = make_url(SERVER_URL)
    maintenance = server.set(drivername="postgresql", database="postgres")
    try:
        connection = psycopg.connect(
            maintenance.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as error:
        where = server.render_as_string(hide_password=True)
        missing_service(f"PostgreSQL cannot be reached at {where}: {error}".strip())
    name = f"imagestore_multihost_{uuid.uuid4().hex[:12]}"
    with connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(
            maintenance.render_as_string(hide_password=False), autocommit=True
        ) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def shared_bucket(s3_server: S3Server) -> str:
    """Create the bucket that both hosts store files in."""
    name = f"multihost-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


def host_environment(
    instance: Path, database_url: str, s3_server: S3Server, bucket: str
) -> dict[str, str]:
    """Return the environment an operator gives one host: only IMAGESTORE_* settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IMAGESTORE_", "AWS_"))
    }
    return env | {
        "IMAGESTORE_INSTANCE_PATH": str(instance),
        "IMAGESTORE_DATABASE_URL": database_url,
        "IMAGESTORE_SECRET_KEY": SECRET_KEY,
        "IMAGESTORE_STORAGE_URL": f"s3://{bucket}/media",
        "IMAGESTORE_S3_ENDPOINT_URL": s3_server.endpoint,
        "IMAGESTORE_S3_REGION": s3_server.region,
        "IMAGESTORE_S3_ACCESS_KEY_ID": s3_server.access_key,
        "IMAGESTORE_S3_SECRET_ACCESS_KEY": s3_server.secret_key,
    }


def wait_until_ready(host: Host, seconds: float = 60) -> None:
    """Wait until the host's readiness probe finds the database and the bucket."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise AssertionError(f"host {host.name} exited:\n{host.log_tail()}")
        try:
            with DIRECT.open(f"{host.url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"host {host.name} was not ready within {seconds} s:\n{host.log_tail()}")


@pytest.fixture(scope="module")
def hosts(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    s3_server: S3Server,
    shared_bucket: str,
) -> Iterator[tuple[Host, Host]]:
    """Migrate and add users through host A's CLI, then serve hosts A and B with gunicorn."""
    folder = tmp_path_factory.mktemp("multihost")
    envs = {
        name: host_environment(folder / f"instance-{name}", database_url, s3_server, shared_bucket)
        for name in ("A", "B")
    }
    run_ok(envs["A"], "db", "upgrade")
    run_ok(envs["A"], "users", "create", USER[0], "--password", USER[1])
    run_ok(envs["B"], "users", "create", ADMIN[0], "--admin", "--password", ADMIN[1])
    started: list[Host] = []
    try:
        for name, env in envs.items():
            port = free_port()
            log = folder / f"gunicorn-{name}.log"
            with open(log, "wb") as output:
                process = subprocess.Popen(
                    [
                        venv_program("gunicorn"),
                        "--no-control-socket",
                        "--workers",
                        "1",
                        "--bind",
                        f"127.0.0.1:{port}",
                        "wsgi:app",
                    ],
                    cwd=PROJECT,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append(Host(name, f"http://127.0.0.1:{port}", env, process, log))
        for host in started:
            wait_until_ready(host)
        yield started[0], started[1]
    finally:
        for host in started:
            stop(host.process)  # its own process group: gunicorn's master and its worker


def unique_png() -> bytes:
    """Return a small PNG that no other test uploads."""
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", (16, 16), os.urandom(16 * 16 * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def make_tag(host: Host, name: str) -> None:
    answer = host.send_json("POST", "/api/tags/", {"name": name})
    assert answer.status == 201, answer.body


def test_image_uploaded_through_one_host_is_listed_and_downloaded_through_the_other(
    hosts: tuple[Host, Host],
) -> None:
    a, b = hosts
    content = unique_png()
    sha256 = hashlib.sha256(content).hexdigest()
    make_tag(a, f"beach-{sha256[:8]}")
    uploaded = a.upload(content, [f"beach-{sha256[:8]}"])
    assert uploaded.status == 201, f"{uploaded.body!r}\n{a.log_tail()}"
    image = uploaded.json

    listed = b.call("GET", f"/api/images/?sha256={sha256}")
    downloaded = b.call("GET", f"/api/images/{image['id']}/file")

    assert listed.status == 200
    assert [found["id"] for found in listed.json["results"]] == [image["id"]]
    assert listed.json["results"][0]["tags"] == [f"beach-{sha256[:8]}"]
    assert downloaded.status == 200, f"{downloaded.body!r}\n{b.log_tail()}"
    assert downloaded.body == content
    assert downloaded.headers["ETag"] == f'"{sha256}"'


def test_thumbnail_made_by_one_host_is_served_by_the_other(hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    image = a.upload(unique_png(), []).json

    made = b.call("GET", f"/api/images/{image['id']}/file?size=128")
    served = a.call("GET", f"/api/images/{image['id']}/file?size=128")

    assert (made.status, served.status) == (200, 200)
    assert made.headers["Content-Type"] == "image/webp"
    assert served.body == made.body


def test_image_uploaded_through_one_host_is_retagged_through_the_other(
    hosts: tuple[Host, Host],
) -> None:
    a, b = hosts
    image = a.upload(unique_png(), []).json
    name = f"sunset-{uuid.uuid4().hex[:8]}"
    make_tag(b, name)

    retagged = b.send_json("PUT", f"/api/images/{image['id']}/", {"tags": [name]})

    assert retagged.status == 200, retagged.body
    assert a.call("GET", f"/api/images/{image['id']}/").json["tags"] == [name]


def test_image_uploaded_through_one_host_is_deleted_through_the_other(
    hosts: tuple[Host, Host], s3_server: S3Server, shared_bucket: str
) -> None:
    a, b = hosts
    content = unique_png()
    sha256 = hashlib.sha256(content).hexdigest()
    image = a.upload(content, []).json
    assert a.call("GET", f"/api/images/{image['id']}/file?size=256").status == 200
    stored = [key for key in bucket_keys(s3_server, shared_bucket) if sha256 in key]
    assert len(stored) == 2  # the original and its thumbnail

    deleted = b.call("DELETE", f"/api/images/{image['id']}/")

    assert deleted.status == 204
    assert a.call("GET", f"/api/images/{image['id']}/").status == 404
    assert a.call("GET", f"/api/images/{image['id']}/file").status == 404
    assert not [key for key in bucket_keys(s3_server, shared_bucket) if sha256 in key]


def test_tracking_rows_of_both_hosts_land_in_one_table(hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    assert a.call("GET", "/api/tags/").status == 200
    assert b.call("GET", "/api/tags/").status == 200

    # A host's own rows are written before it reads the log; another host's may still be queued
    # in its worker for a moment, so B reads first (storing its row), then A (storing A's).
    assert b.call("GET", "/api/trackings/", auth=ADMIN).status == 200
    through_a = a.call("GET", "/api/trackings/?endpoint=/api/tags/&page_size=100", auth=ADMIN)
    through_b = b.call("GET", "/api/trackings/?endpoint=/api/tags/&page_size=100", auth=ADMIN)

    assert through_a.status == through_b.status == 200
    assert through_a.json == through_b.json
    agents = {row["user_agent"] for row in through_a.json["results"]}
    assert {"multihost-test via host A", "multihost-test via host B"} <= agents


def test_storage_check_from_either_host_finds_nothing_wrong(hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    image = a.upload(unique_png(), []).json
    assert b.call("GET", f"/api/images/{image['id']}/file?size=512").status == 200

    checks = {host.name: flask_command(host.env, "storage", "check") for host in hosts}

    for name, result in checks.items():
        assert result.returncode == 0, f"host {name}:\n{result.stdout}{result.stderr}"
        assert "storage check: no problems" in result.stdout


def test_hosts_keep_nothing_on_local_disk(hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    image = a.upload(unique_png(), []).json
    assert b.call("GET", f"/api/images/{image['id']}/file?size=128").status == 200

    time.sleep(2 * LINGER_SECONDS)  # every tracking row they queued is written by now

    for host in hosts:
        # The spool keeps a worker's tracking rows only until they are committed.
        instance = host.env["IMAGESTORE_INSTANCE_PATH"]
        assert os.listdir(instance) == ["tracking-spool"], host.name
        assert os.listdir(os.path.join(instance, "tracking-spool")) == [], host.name
