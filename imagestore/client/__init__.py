"""The Python client of imagestore, and the `imagestore` command (`cli`).

It loads none of the server's modules (no Flask): scripts install the package and import it
alone.

    from imagestore.client import Client

    client = Client("http://127.0.0.1:8000", token="ims_...")
    summary = client.upload(["photos/"], tags=["holiday"], jobs=4)
    print(summary.count("uploaded"), summary.count("skipped"), summary.failed)
"""

from .api import Client, MissingTags
from .models import FileResult, Identity, Image, Summary, Tag
from .transport import ApiError, AuthError, ImagestoreError, Retry, RetryPolicy, Unreachable

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
    "Unreachable",
]
