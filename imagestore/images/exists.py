"""Which file contents are stored already: the check a client makes before it uploads.

A script that hashes its files asks for up to 1,000 digests at once and uploads only the
others, so a run that is started again after an interruption sends nothing twice.
"""

from typing import Any

from ..auth import auth
from ..db import reads_only
from ..models import Image
from ..openapi import doc
from ..schemas import use_args
from . import bp
from .schemas import ContentFound, ContentQuery


@bp.post("/exists/")
@doc(ContentFound)
@auth.login_required
@reads_only
@use_args(ContentQuery(), location="json_or_form")
def find_contents(json_or_form_args: dict[str, Any]) -> dict[str, Any]:
    """Tell which of these SHA-256 digests some image's bytes have (a query sent as a body).

    Every user reads every image, so the answer covers every uploader's images: it is what an
    upload with `on_duplicate=reject` would refuse as a 409.
    """
    wanted = list(dict.fromkeys(json_or_form_args["sha256"]))
    found = Image.first_with_contents(wanted)
    exists = [digest for digest in wanted if digest in found]
    return {"exists": exists, "images": {digest: found[digest] for digest in exists}}
