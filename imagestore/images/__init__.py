"""Images: upload, list, filter, fetch, re-tag and delete, at /api/images/.

`views` holds the routes of one image and of the list, `bulk` those of many images at once,
`uploads` the upload protocol (`store_uploads`), `imaging` what Pillow is asked, `schemas` the
bodies and filters, and `rows` the fast path of the image JSON beside `schemas.ImageSchema`.
"""

from flask import Blueprint

bp = Blueprint("images", __name__, url_prefix="/api/images")

# The routes join `bp` as their modules are imported.
from . import bulk, exists, views  # noqa: E402

__all__ = ["bp", "bulk", "exists", "views"]
