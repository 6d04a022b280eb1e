"""Swagger UI in a real browser: Debian's chromium driven by Playwright, against gunicorn.

The browser is the system's `chromium` (`.ci/run` installs it), never one Playwright downloads.
Every request to another host is refused and recorded: the page must need none. Screenshots go
to `test-artifacts/`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import PROJECT, image_bytes
from live_server import LiveServer, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = PROJECT / "test-artifacts"
# Headless, and no background calls to Google's services (STACK-NOTES).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000

# A live gunicorn and a chromium.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.service,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason="Debian's chromium is not installed (`apt-get install chromium`; .ci/run does it)",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(tmp_path_factory.mktemp("browser")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


class Docs:
    """The Swagger UI page of one test, with the requests it tried to send elsewhere."""

    def __init__(self, browser: Any, server: LiveServer) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.elsewhere: list[str] = []
        self.errors: list[str] = []
        self.refused: list[str] = []  # what the page's Content-Security-Policy blocked
        self.page.route("**/*", self.only_the_app)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self.note_refusal)
        self.page.goto(f"{server.url}/api/docs/")
        self.page.wait_for_selector(".opblock")

    def only_the_app(self, route: Any) -> None:
        """Let requests to the app through; refuse and note any other."""
        if route.request.url.startswith(f"{self.server.url}/"):
            route.continue_()
        else:
            self.elsewhere.append(route.request.url)
            route.abort()

    def note_refusal(self, message: Any) -> None:
        """Note a console message that reports a Content-Security-Policy violation."""
        if "Content Security Policy" in message.text:
            self.refused.append(message.text)

    def authorize(self, username: str, password: str) -> None:
        """Enter Basic credentials in the Authorize dialog."""
        self.page.click(".auth-wrapper button.authorize")
        basic = self.page.locator(".auth-container").filter(has_text="basicAuth")
        basic.locator("input[type=text]").fill(username)
        basic.locator("input[type=password]").fill(password)
        basic.locator("button.auth.authorize").click()
        self.page.click("button.btn-done")

    def try_out(self, operation_id: str) -> Any:
        """Open an operation and press "Try it out"; return its block."""
        block = self.page.locator(f"[id$='-{operation_id}']")
        block.locator(".opblock-summary").click()
        block.locator("button.try-out__btn").click()
        return block

    def execute(self, block: Any) -> str:
        """Press Execute and return the status code the page shows."""
        block.locator("button.execute").click()
        status = block.locator(".live-responses-table tbody .response-col_status")
        status.wait_for()
        return status.inner_text().strip()

    def screenshot(self, block: Any, name: str) -> None:
        """Save an operation's block, with its live response, as a test artifact."""
        ARTIFACTS.mkdir(exist_ok=True)
        block.screenshot(path=str(ARTIFACTS / name))


@pytest.fixture
def docs(browser: Any, server: LiveServer) -> Iterator[Docs]:
    docs = Docs(browser, server)
    yield docs
    docs.context.close()


def api(server: LiveServer, path: str, body: dict | None = None) -> Any:
    """Call the API as the test user; return the parsed JSON answer."""
    token = base64.b64encode(":".join(server.user).encode()).decode()
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def test_docs_load_nothing_from_another_host(docs: Docs) -> None:
    title = docs.page.locator(".info .title").inner_text()

    assert title.startswith("imagestore")
    assert docs.elsewhere == []
    assert docs.errors == []
    assert docs.refused == []


def test_authorized_list_of_images_answers_200(docs: Docs) -> None:
    docs.authorize(*docs.server.user)
    block = docs.try_out("list_images")

    status = docs.execute(block)

    docs.screenshot(block, "swagger-ui-list-images.png")
    assert status == "200"
    body = block.locator(".live-responses-table tbody .response-col_description").inner_text()
    assert '"count"' in body
    assert docs.elsewhere == []


def test_upload_through_the_form_answers_201(docs: Docs, tmp_path: Any) -> None:
    api(docs.server, "/api/tags/", {"name": "from the browser"})
    docs.authorize(*docs.server.user)
    block = docs.try_out("create_image")
    tags = block.locator("[data-property-name=tags] input[type=text]")
    tags.fill("from the browser")
    # Swagger UI takes a typed value 350 ms later, or when the field is left: a re-render before
    # then (the operation's resolved schema arriving late) would send its example, "string".
    tags.press("Tab")
    photo = tmp_path / "browser.png"
    photo.write_bytes(image_bytes())
    block.locator("[data-property-name=image] input[type=file]").set_input_files(str(photo))

    with docs.page.expect_response(lambda answer: answer.request.method == "POST") as upload:
        status = docs.execute(block)

    docs.screenshot(block, "swagger-ui-upload.png")
    sent = re.findall(rb'; name="([^"]+)"', upload.value.request.post_data_buffer or b"")
    assert status == "201", f"the form sent the fields {sent}; the answer: {upload.value.text()}"
    [image] = api(docs.server, "/api/images/?tags=from the browser".replace(" ", "%20"))["results"]
    assert image["filename"] == "browser.png"
    assert docs.elsewhere == []
    assert docs.errors == []
    assert docs.refused == []
