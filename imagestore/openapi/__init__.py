"""The OpenAPI document of the API, built from the schemas the views use, and its Swagger UI.

A view is documented by one decorator, placed under its route decorator:

    @bp.get("/")
    @doc(ImageSchema, page=True)
    @auth.login_required
    @use_args(ImageFilters(), location="query")
    def list_images(query_args): ...

Path parameters come from the route, query parameters and request bodies from the view's
`use_args` schemas (the parser notes them), the summary from the docstring. `doc` adds what the
code cannot tell: the success status and body, and the errors beyond the usual ones.
`tests/test_openapi.py` fails for any route under /api/ that has no `doc`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app
from flask_swagger_ui import get_swaggerui_blueprint

from ..urls import external_url
from .described import JSON, SECURITY_SCHEMES, doc
from .document import build_document

__all__ = ["SECURITY_SCHEMES", "UNDOCUMENTED_ENDPOINTS", "build_document", "doc", "init_openapi"]

DOCUMENT_URL = "/api/openapi.json"
DOCS_URL = "/api/docs"
# Endpoints under /api/ that are not part of the API: the Swagger UI page and its files.
UNDOCUMENTED_ENDPOINTS = ("swagger_ui.show",)

bp = Blueprint("openapi", __name__, url_prefix="/api")


@bp.get("/openapi.json")
@doc(media_type=JSON, public=True)
def get_openapi() -> dict[str, Any]:
    """Return this OpenAPI document."""
    document = current_app.extensions.get("imagestore.openapi")
    if document is None:
        document = current_app.extensions["imagestore.openapi"] = build_document(current_app)
    return document


def home() -> dict[str, str]:
    """Point a visitor of `/` to the API, its docs page and its OpenAPI document."""
    return {
        "api": external_url("api.index"),
        "docs": external_url("swagger_ui.show"),
        "openapi": external_url("openapi.get_openapi"),
    }


def init_openapi(app: Flask) -> None:
    """Serve the OpenAPI document and a Swagger UI of it, from files of an installed package;
    `/` points to them."""
    app.register_blueprint(bp)
    app.add_url_rule("/", "home", home)
    docs = get_swaggerui_blueprint(
        DOCS_URL,
        DOCUMENT_URL,
        config={
            "app_name": "imagestore API",
            "validatorUrl": None,  # no call to the online validator: nothing leaves this host
            "displayRequestDuration": True,
            "tryItOutEnabled": False,
        },
    )
    app.register_blueprint(docs)
