"""Blueprint "api": the API root, which links to every collection."""

from flask import Blueprint, url_for

from .auth import auth

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/")
@auth.login_required
def index() -> dict[str, str]:
    """Return the URL of every collection."""
    return {
        "images": url_for("images.list_images", _external=True),
        "tags": url_for("tags.list_tags", _external=True),
        "trackings": url_for("tracking.list_trackings", _external=True),
    }
