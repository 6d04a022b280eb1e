"""`Client`: the API of imagestore for Python scripts.

from imagestore.client import Client

with Client("http://127.0.0.1:8000", token="ims_...") as client:
    summary = client.upload(["photos/"], tags_from_folders=True, create_missing_tags=True)
    for image in client.images(tags=["beach"]):
        client.download(image, "copies/")
"""

from __future__ import annotations

import hashlib
import netrc
import os
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from .models import FileResult, Identity, Image, Summary, Tag
from .transport import (
    ApiError,
    ImagestoreError,
    Retry,
    RetryPolicy,
    Transport,
    Unreachable,
    api_answer,
    raise_for_answer,
)

# The filters of GET /api/images/ (see the README's "Images").
IMAGE_FILTERS = frozenset(
    {
        "tags",
        "any_tags",
        "exclude_tags",
        "untagged",
        "sha256",
        "start_date",
        "end_date",
        "created_after",
        "created_before",
        "created_by",
        "content_type",
        "min_width",
        "min_height",
        "ordering",
    }
)
# How many ids or digests one bulk or exists request takes.
CHUNK = 1000
PAGE_SIZE = 100
DOWNLOAD_CHUNK = 1024 * 1024


class MissingTags(ImagestoreError):
    """An upload names tags that do not exist, and may not create them."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(
            f"No tag is named {', '.join(map(repr, names))}: create them, or upload with"
            " create_missing_tags (--create-missing-tags)."
        )
        self.names = names


class BearerAuth(httpx.Auth):
    """`Authorization: Bearer TOKEN` on every request (httpx drops it on a redirect elsewhere)."""

    def __init__(self, token: str) -> None:
        self.header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header
        yield request


def netrc_auth(host: str) -> httpx.Auth | None:
    """Return the credentials ~/.netrc (or $NETRC) has for this host, if any. A file that is
    unreadable, malformed or readable by others (with a password in it) is an error."""
    path = os.environ.get("NETRC")  # None: ~/.netrc, which Python checks the permissions of
    try:
        found = netrc.netrc(path).authenticators(host)
    except FileNotFoundError:
        return None
    except (OSError, netrc.NetrcParseError) as error:
        raise ImagestoreError(f"Cannot use {path or '~/.netrc'}: {error}") from None
    return httpx.NetRCAuth(path) if found else None


def root_url(url: str) -> str:
    """Return the service's root from its URL, with or without `/api` and a trailing slash."""
    url = url.strip().rstrip("/")
    return url.removesuffix("/api")


def query_value(value: Any) -> str:
    """Write a filter value as the API reads it: lists comma-separated, booleans in lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(map(str, value))
    return str(value)


def image_query(filters: dict[str, Any]) -> dict[str, str]:
    """Return the query of an image list; an unknown filter is a TypeError (the API would
    ignore it, and list every image)."""
    unknown = sorted(set(filters) - IMAGE_FILTERS)
    if unknown:
        raise TypeError(f"Unknown image filters: {', '.join(unknown)}.")
    return {name: query_value(value) for name, value in filters.items() if value is not None}


def download_name(image: Image) -> str:
    """Return the file name a download gets: `<id>-<filename>`, unique in a folder."""
    name = Path(image.filename.replace("\\", "/")).name.strip() or "image"
    return f"{image.id}-{name if name not in ('.', '..') else 'image'}"


def file_sha256(path: Path) -> str | None:
    """Return the SHA-256 of a file, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(DOWNLOAD_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class Client:
    """A client of one imagestore service.

    `url` is the service's address (`IMAGESTORE_URL` when not given). Credentials, first found:
    `token` (a bearer token), `username` and `password` (HTTP Basic), `IMAGESTORE_TOKEN`, then
    an entry for the host in `~/.netrc`. Requests are retried on connection errors, 429 (after
    its `Retry-After`), 502, 503, 504 and 507, `retries` attempts in all; `on_retry` hears of
    each retry before its wait. The client is safe to share between threads.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        on_retry: Callable[[Retry], None] | None = None,
    ) -> None:
        url = url or os.environ.get("IMAGESTORE_URL")
        if not url:
            raise ImagestoreError("No service URL: pass one, or set IMAGESTORE_URL.")
        self.url = root_url(url)
        if not urlsplit(self.url).scheme.startswith("http") or not urlsplit(self.url).hostname:
            raise ImagestoreError(f"Not an http(s) URL: {url!r}.")
        auth: httpx.Auth | None
        self.auth_kind: Literal["token", "basic", "netrc"] | None
        token = token or (None if username else os.environ.get("IMAGESTORE_TOKEN"))
        if username:
            auth, self.auth_kind = httpx.BasicAuth(username, password or ""), "basic"
        elif token:
            auth, self.auth_kind = BearerAuth(token), "token"
        else:
            auth = netrc_auth(urlsplit(self.url).hostname or "")
            self.auth_kind = "netrc" if auth else None
        self.transport = Transport(
            self.url, auth, timeout, RetryPolicy(attempts=max(1, retries)), on_retry
        )

    def close(self) -> None:
        self.transport.close()

    def same_origin(self, link: str | None) -> str | None:
        """Return a page link's path and query below the service's address, to be asked of
        that address: the credentials go nowhere else, whatever host the link names."""
        if not link:
            return None
        parts = urlsplit(link)
        path = parts.path.removeprefix(urlsplit(self.url).path)
        return f"{path}?{parts.query}" if parts.query else path

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # Who

    def whoami(self) -> Identity:
        """Return who the credentials belong to, and whether they are an administrator's."""
        if self.auth_kind is None:
            raise ImagestoreError(
                "No credentials: set IMAGESTORE_TOKEN, pass a user, or add the host to ~/.netrc."
            )
        me = self.transport.call("GET", "/api/me/")
        with api_answer("The answer of /api/me/"):
            return Identity(self.url, me["username"], self.auth_kind, me["is_admin"])

    # Images

    def images(self, *, page_size: int = PAGE_SIZE, **filters: Any) -> Iterator[Image]:
        """Yield every image that matches the filters of GET /api/images/ (`tags=["a", "b"]`,
        `created_by="alice"`, `start_date=date(...)`...), page after page.

        With the default ordering, or `ordering="id"`, the walk follows cursors, so images
        added or deleted meanwhile make it show none twice; other orderings follow pages.
        """
        params = image_query(filters)
        if params.get("ordering", "-id") in ("-id", "id"):
            params["cursor"] = ""
        params["page_size"] = str(page_size)
        return (Image.from_json(item) for item in self.walk("/api/images/", params))

    def walk(self, url: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Yield the rows of a list's pages, from the first to the last `next` (followed on the
        service's own address only)."""
        link: str | None = url
        params: dict[str, str] | None = query
        while link:
            page = self.transport.call("GET", link, params=params)
            with api_answer(f"A page of {url}"):
                rows, link, params = page["results"], self.same_origin(page.get("next")), None
            yield from rows

    def image(self, image_id: int) -> Image:
        """Return one image; ApiError with status 404 when there is none."""
        return Image.from_json(self.transport.call("GET", f"/api/images/{int(image_id)}/"))

    def exists(self, digests: Iterable[str]) -> dict[str, int]:
        """Return, for each of these SHA-256 digests that is stored, the oldest image's id."""
        wanted = list(dict.fromkeys(digest.lower() for digest in digests))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), CHUNK):
            answer = self.transport.call(
                "POST", "/api/images/exists/", json={"sha256": wanted[start : start + CHUNK]}
            )
            with api_answer("The answer of /api/images/exists/"):
                found |= {digest: int(image_id) for digest, image_id in answer["images"].items()}
        return found

    def upload(
        self,
        paths: Iterable[str | os.PathLike[str]],
        tags: Iterable[str] = (),
        *,
        tags_from_folders: bool = False,
        create_missing_tags: bool = False,
        exclude: Iterable[str] = (),
        jobs: int = 4,
        dry_run: bool = False,
        cache: bool = True,
        on_start: Callable[[int, int], None] | None = None,
        on_result: Callable[[FileResult], None] | None = None,
    ) -> Summary:
        """Upload files and folders (their images, recursively), each file read once.

        Files whose bytes the service has are skipped, so running the same upload again, after
        an interruption say, sends only what is missing. See `sources.find_sources` for which
        files of a folder are sent and which tags they get. Missing tags raise MissingTags
        before any file is sent; with `create_missing_tags` they are created then (not in a
        dry run). `on_start` hears the number of
        files and their bytes, `on_result` each file's result, from worker threads. With
        `cache`, digests of files hashed by an earlier run, unchanged since, are not computed
        again (see `cache.py`).
        """
        from .cache import ChecksumCache
        from .sources import find_sources
        from .upload import Uploader

        # One path or one tag given alone, not in a list, is still one.
        paths = [paths] if isinstance(paths, str | os.PathLike) else paths
        tags = [tags] if isinstance(tags, str) else tags
        exclude = [exclude] if isinstance(exclude, str) else exclude
        sources, problems = find_sources(
            [Path(path) for path in paths], tuple(tags), tags_from_folders, tuple(exclude)
        )
        names = sorted({name for source in sources for name in source.tags})
        uploader = Uploader(
            self,
            create_missing_tags,
            jobs,
            dry_run,
            on_result,
            # A dry run checks that the tags exist, and creates none.
            None
            if dry_run and create_missing_tags
            else partial(self.prepare_tags, names, create_missing_tags),
            ChecksumCache() if cache else None,
        )
        if on_start is not None:
            on_start(len(sources) + len(problems), sum(source.size for source in sources))
        for problem in problems:
            uploader.record(problem)
        return uploader.run(sources)

    def prepare_tags(self, names: list[str], create_missing: bool) -> None:
        """Create the tags of this list that do not exist, or raise MissingTags naming them.

        Created here, one after the other, rather than by the parallel uploads that name them:
        two requests creating the same tag at once would see one of them refused (409).
        """
        missing = [name for name in names if self.tag(name) is None]
        if missing and not create_missing:
            raise MissingTags(missing)
        for name in missing:
            self.create_tag(name)

    def download(self, image: Image | int, dest: str | os.PathLike[str]) -> Path:
        """Download an image's file to `dest` (a file, or a folder: `<id>-<filename>` in it),
        checking its SHA-256; return the file's path. Nothing is left behind on failure."""
        if not isinstance(image, Image):
            image = self.image(image)
        path = Path(dest)
        if path.is_dir():
            path = path / download_name(image)
        partial = path.with_name(path.name + ".part")

        received: dict[str, str] = {}

        def send() -> httpx.Response:
            digest = hashlib.sha256()
            with self.transport.http.stream(
                "GET", f"/api/images/{image.id}/file", follow_redirects=True
            ) as response:
                if response.is_success:
                    with open(partial, "wb") as file:
                        for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                            digest.update(chunk)
                            file.write(chunk)
                else:
                    response.read()
            received["sha256"] = digest.hexdigest()
            return response

        try:
            response = self.transport.attempt("GET", f"/api/images/{image.id}/file", send)
            raise_for_answer(response)
            if received["sha256"] != image.sha256:
                raise ImagestoreError(
                    f"image {image.id}: the file received has SHA-256"
                    f" {received['sha256']}, not {image.sha256}"
                )
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def download_all(
        self,
        images: Iterable[Image],
        folder: str | os.PathLike[str],
        *,
        jobs: int = 4,
        on_result: Callable[[FileResult], None] | None = None,
    ) -> Summary:
        """Download images into a folder as `<id>-<filename>`, skipping those whose file is
        there with the right SHA-256; a failed download is reported and the rest go on."""
        from .upload import run_in_threads

        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        summary = Summary(counted=("downloaded", "skipped", "failed"))

        def fetch(image: Image) -> FileResult:
            path = target / download_name(image)
            if path.exists() and file_sha256(path) == image.sha256:
                return FileResult(path, "skipped", image.sha256, image.size, image.id)
            try:
                self.download(image, path)
            except ApiError as error:
                if error.status == 401:
                    raise
                return FileResult(path, "failed", image.sha256, 0, image.id, error.detail)
            except (ImagestoreError, OSError) as error:
                return FileResult(path, "failed", image.sha256, 0, image.id, str(error))
            return FileResult(path, "downloaded", image.sha256, image.size, image.id)

        return run_in_threads(fetch, images, jobs, summary, on_result)

    def retag(
        self,
        image_ids: Iterable[int],
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        *,
        create_missing_tags: bool = False,
    ) -> list[Image]:
        """Add and remove tags on many images (1,000 per request, each all or nothing)."""
        ids, changed = list(dict.fromkeys(image_ids)), []
        params = {"create_missing_tags": "true"} if create_missing_tags else {}
        for start in range(0, len(ids), CHUNK):
            body = {"images": ids[start : start + CHUNK], "add": list(add), "remove": list(remove)}
            answer = self.transport.call("POST", "/api/images/bulk-tag/", json=body, params=params)
            changed += [Image.from_json(item) for item in answer]
        return changed

    def delete(self, image_ids: Iterable[int]) -> int:
        """Delete images (1,000 per request, each all or nothing); return how many."""
        ids = list(dict.fromkeys(image_ids))
        for start in range(0, len(ids), CHUNK):
            self.transport.call(
                "POST", "/api/images/bulk-delete/", json={"images": ids[start : start + CHUNK]}
            )
        return len(ids)

    # Tags

    def tags(self, name: str | None = None) -> list[Tag]:
        """Return every tag (whose name contains `name`, any case), sorted by name."""
        params = {"page_size": str(PAGE_SIZE)}
        if name:
            params["name"] = name
        return [Tag.from_json(item) for item in self.walk("/api/tags/", params)]

    def create_tag(self, name: str) -> Tag:
        """Create a tag; one of that name (any case) made meanwhile by someone else will do."""
        response = self.transport.request("POST", "/api/tags/", json={"name": name})
        if response.status_code == 409:
            found = self.tag(name)
            if found is not None:
                return found
        return Tag.from_json(self.transport.answer("POST", response))

    def tag(self, name: str) -> Tag | None:
        """Return the tag of this name (any case), or None."""
        response = self.transport.request("GET", f"/api/tags/{quote(name.strip(), safe='')}/")
        if response.status_code == 404:
            return None
        return Tag.from_json(self.transport.answer("GET", response))


__all__ = ["Client", "MissingTags", "Unreachable"]
