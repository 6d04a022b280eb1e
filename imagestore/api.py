"""Blueprint "api": the API root, which links to every collection and to the API's docs."""

from flask import Blueprint

from .auth import auth
from .openapi import doc
from .schemas import RootSchema
from .urls import external_url

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/")
@doc(RootSchema)
@auth.login_required
def index() -> dict[str, str]:
    """Return the URL of every collection."""
    return {
        "images": external_url("images.list_images"),
        "tags": external_url("tags.list_tags"),
        "trackings": external_url("tracking.list_trackings"),
        "tokens": external_url("tokens.list_tokens"),
        "docs": external_url("swagger_ui.show"),
        "openapi": external_url("openapi.get_openapi"),
    }
