"""PROXY_HOPS: which X-Forwarded-* headers are believed for the client address and scheme."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import settings

from imagestore import create_app
from imagestore.db import db

FORGED = {"X-Forwarded-For": "198.51.100.66", "X-Forwarded-Proto": "https"}
# What a client sends through one proxy: its own forged entry, then the one the proxy added.
THROUGH_ONE_PROXY = {"X-Forwarded-For": "198.51.100.66, 203.0.113.7", "X-Forwarded-Proto": "https"}


@pytest.fixture
def make_client(database_url: str, tmp_path: Any) -> Iterator[Any]:
    """Return a builder of test clients of apps that trust this many proxy hops."""
    apps: list[Flask] = []

    def make_client(hops: int) -> FlaskClient:
        app = create_app(settings(database_url, tmp_path) | {"PROXY_HOPS": hops})
        apps.append(app)
        return app.test_client()

    yield make_client
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def tracked_address(client: FlaskClient, admin: tuple[str, str]) -> str:
    """Return the client address of the newest tracking row of /api/."""
    page = client.get("/api/trackings/?endpoint=/api/", auth=admin).json
    return page["results"][0]["remote_addr"]


def test_default_trusts_no_proxy(client, alice, admin):
    client.get("/api/", auth=alice, headers=FORGED)

    assert tracked_address(client, admin) == "127.0.0.1"


def test_default_ignores_a_forged_scheme_in_links(client, alice):
    response = client.get("/api/", auth=alice, headers=FORGED)

    assert response.json["images"].startswith("http://localhost/")


def test_zero_hops_ignores_forwarded_for_in_the_access_log(make_client, alice, capsys):
    client = make_client(0)
    capsys.readouterr()

    client.get("/api/", auth=alice, headers=FORGED)

    assert '"remote_addr": "127.0.0.1"' in capsys.readouterr().err


def test_one_hop_takes_the_address_the_proxy_added(make_client, alice, admin):
    client = make_client(1)

    client.get("/api/", auth=alice, headers=THROUGH_ONE_PROXY)

    assert tracked_address(client, admin) == "203.0.113.7"


def test_one_hop_takes_the_scheme_from_the_proxy(make_client, alice):
    client = make_client(1)

    response = client.get("/api/", auth=alice, headers=THROUGH_ONE_PROXY)

    assert response.json["images"].startswith("https://localhost/")


def test_two_hops_take_the_address_before_the_last_proxy(make_client, alice, admin):
    client = make_client(2)
    headers = {"X-Forwarded-For": "198.51.100.66, 203.0.113.7, 10.0.0.5"}

    client.get("/api/", auth=alice, headers=headers)

    assert tracked_address(client, admin) == "203.0.113.7"


def test_one_hop_without_forwarded_for_keeps_the_peer_address(make_client, alice, admin):
    client = make_client(1)

    client.get("/api/", auth=alice)

    assert tracked_address(client, admin) == "127.0.0.1"


def test_one_hop_ignores_a_forwarded_host(make_client, alice):
    client = make_client(1)

    response = client.get("/api/", auth=alice, headers={"X-Forwarded-Host": "evil.example"})

    assert "evil.example" not in response.json["images"]


@pytest.mark.parametrize("hops", [-1, "two", 1.5, True])
def test_invalid_proxy_hops_stop_the_app_from_starting(database_url, tmp_path, hops):
    with pytest.raises(ValueError, match="PROXY_HOPS"):
        create_app(settings(database_url, tmp_path) | {"PROXY_HOPS": hops})
