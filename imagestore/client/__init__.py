"""The Python client of imagestore, and the `imagestore` command (`cli`).

It loads none of the server's modules (no Flask): scripts install the package and import it
alone.

    from imagestore.client import Client

    client = Client("http://127.0.0.1:8000", token="ims_...")
    summary = client.upload(["photos/"], tags=["holiday"], jobs=4)
    print(summary.count("uploaded"), summary.count("skipped"), summary.failed)
"""

import sys

# httpx imports its own command line (click, rich, pygments) whenever they are installed, as
# they are beside Flask: a tenth of a second or more at every start of `imagestore`, for an
# `httpx.main` this package never calls. Marked absent before httpx loads, it is left out.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from .api import Client, MissingTags  # noqa: E402
from .models import FileResult, Identity, Image, Summary, Tag  # noqa: E402
from .transport import (  # noqa: E402
    ApiError,
    AuthError,
    ImagestoreError,
    Retry,
    RetryPolicy,
    UnexpectedAnswer,
    Unreachable,
)

__all__ = [
    "ApiError",
    "AuthError",
    "Client",
    "FileResult",
    "Identity",
    "Image",
    "ImagestoreError",
    "MissingTags",
    "Retry",
    "RetryPolicy",
    "Summary",
    "Tag",
    "UnexpectedAnswer",
    "Unreachable",
]
