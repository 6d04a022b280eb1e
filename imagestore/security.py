"""Browser-facing defences: response headers, and no cross-site requests that change data.

The API's clients are scripts, which send neither `Origin` nor `Sec-Fetch-Site`. A browser sends
them, and it also sends the Basic credentials it cached on the docs page with any form another
site makes it post: such a cross-site request is refused before it reaches a view.
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, request
from werkzeug.exceptions import Forbidden
from werkzeug.wrappers import Response

from .errors import problem_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Values of Sec-Fetch-Site that another site's page sends (same-site: another host of the domain).
FOREIGN_SITES = frozenset({"cross-site", "same-site"})
DOCS_ENDPOINT = "swagger_ui.show"
DOWNLOAD_POLICY = "sandbox"
# The one <style> element that Swagger UI's script inserts, by its hash (tests/test_browser.py
# fails on any style or script the policy refuses, as a new Swagger UI may bring).
SWAGGER_UI_STYLE = "'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='"
# The docs page loads its own scripts, styles and images and calls its own API; nothing else,
# and it may not be framed. Its inline script is allowed by its hash, computed from the page.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'{scripts}; style-src 'self' " + SWAGGER_UI_STYLE + ";"
    " img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'"
)
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def refuse_cross_site_changes() -> Response | None:
    """Answer 403 to a request that changes data and that a page of another site sent."""
    if request.method in SAFE_METHODS:
        return None
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site in FOREIGN_SITES or (origin is not None and origin != own_origin()):
        return problem_response(
            Forbidden(
                "Requests that change data are refused from other sites' pages"
                f" (Origin {origin or 'not given'}, Sec-Fetch-Site {site or 'not given'})."
                " Send them from a script, or from this API's own docs page."
            )
        )
    return None


def own_origin() -> str:
    """Return the origin of the API as this request reached it: scheme, host and port."""
    return f"{request.scheme}://{request.host}"


def add_security_headers(response: Response) -> Response:
    """Tell browsers not to sniff, cache or pass on the API's answers, nor frame the docs."""
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    if response.is_json and "Cache-Control" not in headers:
        headers["Cache-Control"] = "no-store"
    if request.endpoint == DOCS_ENDPOINT and response.mimetype == "text/html":
        # The page is rendered; an HTML file of Swagger UI's (its OAuth2 redirect page, whose
        # script is a file too) is sent from disk, and has no inline script to allow.
        page = b"" if response.direct_passthrough else response.get_data()
        headers["Content-Security-Policy"] = docs_policy(page)
    return response


def docs_policy(page: bytes) -> str:
    """Return the docs page's Content-Security-Policy, allowing its inline scripts by hash."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in INLINE_SCRIPT.findall(page)
    )
    return DOCS_POLICY.format(scripts=hashes)


def init_security(app: Flask) -> None:
    """Refuse cross-site changes and add the security headers to every response."""
    app.before_request(refuse_cross_site_changes)
    app.after_request(add_security_headers)
