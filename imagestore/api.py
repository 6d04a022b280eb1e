"""Blueprint "api": the API root, which links to every collection and to the API's docs, and
/api/me/, who the credentials are for."""

from typing import Any

from flask import Blueprint, request

from .auth import auth, auth_method
from .openapi import doc
from .schemas import MeSchema, RootSchema
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
        "me": external_url("api.me"),
        "docs": external_url("swagger_ui.show"),
        "openapi": external_url("openapi.get_openapi"),
    }


@bp.get("/me/")
@doc(MeSchema)
@auth.login_required
def me() -> dict[str, Any]:
    """Return who the credentials are for: the user, whether an admin, and how they were given."""
    user = auth.current_user()
    return {
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
        "auth_method": auth_method(request),
    }
