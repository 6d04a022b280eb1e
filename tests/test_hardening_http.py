"""Hardening at the HTTP level: filters too long to run, browser headers, forged hosts, CSRF,
bodies that gunicorn cannot read.

Each test sends the attack as its input: a thousand tag names in a filter, a forged `Host`,
the form posts, deletes and JSON calls another site's page makes a browser send with the
Basic credentials it cached on the docs page, and malformed or cut chunked bodies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import flask_swagger_ui
import pytest
from flask.testing import FlaskClient
from helpers import image_bytes
from live_server import LiveServer, serve

from imagestore.schemas import TAG_NAMES_MAX

THOUSAND = ",".join(f"tag{n}" for n in range(1000))


# Filters and lists of tag names


@pytest.mark.parametrize("field", ["tags", "any_tags", "exclude_tags"])
def test_a_thousand_tag_names_in_a_filter_is_a_400(client, alice, field):
    """`?tags=` with 1,000 names: SQLite refuses an expression that deep (a 500 before)."""
    response = client.get("/api/images/", query_string={field: THOUSAND}, auth=alice)

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.json["errors"]["query"][field] == [f"Give at most {TAG_NAMES_MAX} tag names."]


def test_the_most_tag_names_a_filter_takes_are_answered(client, alice):
    """Exactly the cap, with every name unknown: an empty page, not an error."""
    names = ",".join(f"tag{n}" for n in range(TAG_NAMES_MAX))

    response = client.get("/api/images/", query_string={"tags": names}, auth=alice)

    assert response.status_code == 200
    assert response.json["count"] == 0


def test_an_upload_with_a_thousand_tags_is_a_400_and_stores_nothing(client, alice, upload):
    """An upload naming 1,000 tags."""
    response = upload(alice, tags=[THOUSAND])

    assert response.status_code == 400
    assert client.get("/api/images/", auth=alice).json["count"] == 0


# Headers


API_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("path", "status", "who"),
    [
        ("/api/", 200, "alice"),
        ("/api/images/", 200, "alice"),
        ("/api/images/", 401, None),
        ("/api/images/999/", 404, "alice"),
        ("/api/tags/?page=x", 400, "alice"),
        ("/healthz", 200, None),
    ],
)
def test_api_answers_carry_the_browser_safety_headers(client, alice, path, status, who):
    """Every JSON answer, success or problem: no sniffing, no caching, no referrer."""
    response = client.get(path, auth=alice if who else None)

    assert response.status_code == status
    for name, value in API_HEADERS.items():
        assert response.headers[name] == value


def test_a_download_is_sandboxed_and_keeps_its_cache_header(client, alice, upload):
    """A downloaded file opened in a browser runs nothing: `Content-Security-Policy: sandbox`."""
    image = upload(alice).json

    response = client.get(f"/api/images/{image['id']}/file", auth=alice)

    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"].startswith("private, max-age=")


def test_the_docs_page_allows_only_its_own_assets_and_no_framing(client):
    """The docs page: its own scripts (the inline one by hash), no other host, no frame."""
    response = client.get("/api/docs/")

    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    [inline] = re.findall(rb"<script>(.*?)</script>", response.data, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline).digest()).decode()
    assert policy["frame-ancestors"] == "'none'"
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == f"'self' 'sha256-{digest}'"
    assert policy["connect-src"] == "'self'"
    assert "http" not in response.headers["Content-Security-Policy"]


SWAGGER_UI_FILES = sorted(
    path.name for path in (Path(flask_swagger_ui.__file__).parent / "dist").iterdir()
)


@pytest.mark.parametrize("name", SWAGGER_UI_FILES)
def test_every_file_of_the_docs_page_is_served(client, name):
    """Its OAuth2 redirect page, an HTML file sent from disk, was a 500: the policy was worked
    out from a body that is not in memory."""
    response = client.get(f"/api/docs/{name}")

    assert response.status_code == 200
    if response.mimetype == "text/html":
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy
        assert "frame-ancestors 'none'" in policy


# Hosts


def test_a_forged_host_is_refused_when_trusted_hosts_are_set(make_app, alice):
    """A request naming another host than the API's, whose links would point there."""
    client = make_app(TRUSTED_HOSTS=["images.example.com"]).test_client()

    forged = client.get("/api/", headers={"Host": "evil.example"}, auth=alice)
    trusted = client.get("/api/", headers={"Host": "images.example.com"}, auth=alice)

    assert forged.status_code == 400
    assert forged.content_type == "application/problem+json"
    assert "//evil.example" not in forged.get_data(as_text=True)
    assert trusted.status_code == 200
    assert trusted.json["images"] == "http://images.example.com/api/images/"


@pytest.mark.parametrize(
    "host",
    ["[::1", "images example com", "images.example.com:99999999", "evil@images.example.com", "a/b"],
)
def test_a_host_header_that_is_no_host_is_a_400_and_tracked(client, alice, admin, host):
    """A Host header no link can be built on: answered with links to `http:///` before."""
    response = client.get("/api/images/", headers={"Host": host}, auth=alice)

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.json["detail"] == f"The Host header {host!r} is not a host name or address."
    rows = client.get("/api/trackings/", query_string={"status_code": 400}, auth=admin).json
    assert [(row["endpoint"], row["username"]) for row in rows["results"]] == [
        ("/api/images/", "alice")
    ]


@pytest.mark.parametrize(
    "host", ["images.example.com", "images.example.com:8443", "127.0.0.1:8000", "[::1]:8000"]
)
def test_the_links_of_an_answer_name_the_host_it_was_asked_of(client, alice, host):
    response = client.get("/api/", headers={"Host": host}, auth=alice)

    assert response.status_code == 200
    assert response.json["images"] == f"http://{host}/api/images/"


# Cross-site requests


def tag_names(client: FlaskClient, auth: tuple[str, str]) -> list[str]:
    """Return the names of every tag."""
    return [tag["name"] for tag in client.get("/api/tags/", auth=auth).json["results"]]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://other.localhost"},
    ],
)
def test_a_form_posted_by_another_site_is_refused(client, alice, headers):
    """Another site's page posts a form; the browser adds the Basic credentials it cached."""
    response = client.post("/api/tags/", data={"name": "csrf"}, headers=headers, auth=alice)

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert "other sites" in response.json["detail"]
    assert tag_names(client, alice) == []


def test_a_delete_sent_by_another_site_is_refused(client, alice, upload):
    """Another site's script sends a DELETE (a preflight would stop it; this must too)."""
    image_id = upload(alice).json["id"]

    response = client.delete(
        f"/api/images/{image_id}/", headers={"Sec-Fetch-Site": "cross-site"}, auth=alice
    )

    assert response.status_code == 403
    assert client.get(f"/api/images/{image_id}/", auth=alice).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://localhost"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},
        {"Sec-Fetch-Site": "none"},
    ],
)
def test_scripts_and_the_api_own_pages_may_change_data(client, alice, headers):
    """curl and `requests` send no Origin; the docs page sends its own origin."""
    response = client.post("/api/tags/", json={"name": "fine"}, headers=headers, auth=alice)

    assert response.status_code == 201
    assert tag_names(client, alice) == ["fine"]


def test_reads_from_another_site_are_answered(client, alice):
    """A cross-site GET changes nothing; the browser keeps its answer from the other site."""
    response = client.get("/api/tags/", headers={"Sec-Fetch-Site": "cross-site"}, auth=alice)

    assert response.status_code == 200


# Bodies that gunicorn cannot read: malformed or cut chunked encoding


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(tmp_path_factory.mktemp("bodies")) as server:
        yield server


def basic(auth: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def send_chunked(
    live: LiveServer, path: str, content_type: str, request_id: str, body: bytes, cut: bool = False
) -> tuple[int, dict[str, Any]]:
    """POST a chunked body as it is written; with `cut`, close the sending side after it.
    Return the status and the JSON answer."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Transfer-Encoding: chunked\r\nX-Request-ID: {request_id}\r\nConnection: close\r\n"
        f"Authorization: {basic(live.user)}\r\n\r\n"
    ).encode()
    address = urlsplit(live.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head + body)
        if cut:
            connection.shutdown(socket.SHUT_WR)
        answer = b""
        while data := connection.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def get(live: LiveServer, path: str, auth: tuple[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(live.url + path, headers={"Authorization": basic(auth)})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def tracked_status(live: LiveServer, request_id: str) -> list[int]:
    """Return the status of each tracking row of a request id, once the workers wrote them."""
    deadline = time.monotonic() + 10
    while True:
        rows = get(live, f"/api/trackings/?request_id={request_id}", live.admin)["results"]
        if rows or time.monotonic() > deadline:
            return [row["status_code"] for row in rows]
        time.sleep(0.2)


def multipart_head(boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + image_bytes()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize(
    ("path", "content_type", "body", "detail"),
    [
        ("/api/tags/", "application/json", b"zz\r\n{}\r\n0\r\n\r\n", "Invalid chunk size"),
        ("/api/tags/", "application/json", b"2\r\n{}XX0\r\n\r\n", "Invalid chunk terminator"),
        (
            "/api/images/",
            "multipart/form-data; boundary=b0undary",
            chunk(multipart_head("b0undary")) + b"qq\r\n",
            "Invalid chunk size",
        ),
    ],
    ids=["json-chunk-size", "json-chunk-terminator", "upload-chunk-size"],
)
@pytest.mark.slow
def test_a_malformed_chunked_body_is_a_400_and_tracked(live, path, content_type, body, detail):
    """A 500 before (gunicorn's parse error reached the view), with a traceback in the log."""
    request_id = f"malformed-{detail.split()[-1]}-{path.strip('/').replace('/', '-')}"

    status, answer = send_chunked(live, path, content_type, request_id, body)

    assert status == 400, answer
    assert answer["detail"].startswith(f"The request body is malformed or cut short: {detail}")
    assert tracked_status(live, request_id) == [400]
    assert get(live, "/api/images/", live.user)["count"] == 0
    assert "Traceback" not in live.log.read_text()


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/api/tags/", "application/json", b'20\r\n{"name":'),
        (
            "/api/images/",
            "multipart/form-data; boundary=b0undary",
            b"%x\r\n" % 10_000 + multipart_head("b0undary"),
        ),
    ],
    ids=["json", "upload"],
)
@pytest.mark.slow
def test_a_chunked_body_cut_short_is_a_400_that_says_so(live, path, content_type, body):
    request_id = f"cut-{path.strip('/').replace('/', '-')}"

    status, answer = send_chunked(live, path, content_type, request_id, body, cut=True)

    assert status == 400, answer
    assert answer["detail"] == (
        "The request body is cut short: the client sent less than it announced."
    )
    assert tracked_status(live, request_id) == [400]
    assert get(live, "/api/images/", live.user)["count"] == 0
