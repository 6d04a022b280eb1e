"""HTTP with retries: one keep-alive httpx client, back-off with jitter, `Retry-After` honoured.

Retried: connection errors and timeouts, 429 (after its `Retry-After`), 502, 503, 504 and 507.
Never retried: any other 4xx, which says the request itself is wrong. Uploads are safe to
retry: they are sent with `on_duplicate=reject`, so an upload that did land before its answer
was lost comes back as a 409 naming the stored image, not as a second copy.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504, 507})


class ImagestoreError(Exception):
    """Anything the client could not do."""


class ApiError(ImagestoreError):
    """The API answered an error: its status and the problem JSON's `detail`."""

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body


class AuthError(ApiError):
    """The credentials are missing, wrong, expired or revoked (401)."""


class Unreachable(ImagestoreError):
    """The service could not be reached, however often the client tried."""


class UnexpectedAnswer(ImagestoreError):
    """An answer the API never gives: not JSON, or JSON without the API's fields. The URL
    names another service, or a proxy answered in the service's place."""


@contextmanager
def api_answer(what: str) -> Iterator[None]:
    """Read the fields of an answer: one missing, or of another type, is UnexpectedAnswer."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UnexpectedAnswer(
            f"{what} is not as the imagestore API gives it ({type(error).__name__}: {error}):"
            " does the URL name an imagestore service?"
        ) from None


def problem_detail(response: httpx.Response) -> tuple[str, Any]:
    """Return the `detail` of an error answer (or its text) and its parsed body."""
    if response.is_redirect:
        # The API never redirects: a proxy sends http to https, or the URL names another path.
        target = response.url.join(response.headers["Location"])
        return (
            f"{response.reason_phrase}, to {target}: IMAGESTORE_URL should name the address"
            " the service answers at"
        ), None
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:200] or response.reason_phrase), None
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"]), body
    return response.reason_phrase, body


def raise_for_answer(response: httpx.Response) -> None:
    """Raise ApiError (AuthError for 401) when the answer is not a success."""
    if response.is_success:
        return
    detail, body = problem_detail(response)
    if response.status_code == 401:
        raise AuthError(401, detail, body)
    raise ApiError(response.status_code, detail, body)


@dataclass(frozen=True)
class Retry:
    """One retry about to happen: what failed, the attempt that comes next, the wait."""

    method: str
    url: str
    reason: str
    attempt: int
    wait: float


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: `attempts` in all, waits doubling from `base` up to
    `cap` seconds with jitter; a `Retry-After` longer than `max_retry_after` is not waited."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0

    def backoff(self, attempt: int) -> float:
        """Return the wait after failed attempt `attempt` (1, 2...): half fixed, half random."""
        delay = min(self.cap, self.base * 2 ** (attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)


def retry_after(response: httpx.Response) -> float | None:
    """Return the seconds a `Retry-After` header asks for (seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Transport:
    """The client's HTTP: keep-alive connections (one httpx.Client, shared by threads) and the
    retry loop around every request."""

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth | None,
        timeout: float = 60.0,
        policy: RetryPolicy | None = None,
        on_retry: Callable[[Retry], None] | None = None,
        user_agent: str = "imagestore-client",
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.on_retry = on_retry
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self.http = httpx.Client(
            base_url=base_url,
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            # Plain HTTP needs no TLS context: loading the CA certificates of one costs a tenth
            # of a second, which https URLs (the service's, or a presigned download's) alone pay.
            transport=httpx.HTTPTransport(limits=limits, verify=False),
            mounts={"https://": LazyTransport(limits=limits)},
        )

    def close(self) -> None:
        self.http.close()

    def attempt(self, method: str, url: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        """Call `send` until it answers something not worth retrying, or attempts run out.

        `send` makes one request (rewinding any file it sends) and returns its answer, read.
        The last answer is returned as it is, whatever its status; a connection error on the
        last attempt raises Unreachable.
        """
        attempt = 1
        while True:
            try:
                response = send()
            except httpx.TransportError as error:
                if attempt >= self.policy.attempts:
                    raise Unreachable(f"{method} {url}: {describe(error)}") from error
                self.wait(method, url, describe(error), attempt, self.policy.backoff(attempt))
                attempt += 1
                continue
            if response.status_code not in RETRY_STATUSES or attempt >= self.policy.attempts:
                return response
            wait = self.policy.backoff(attempt)
            asked = retry_after(response)
            if asked is not None:
                if asked > self.policy.max_retry_after:
                    return response
                wait = max(wait, asked)
            detail, _ = problem_detail(response)
            self.wait(method, url, f"{response.status_code} {detail}", attempt, wait)
            attempt += 1

    def wait(self, method: str, url: str, reason: str, attempt: int, seconds: float) -> None:
        if self.on_retry is not None:
            self.on_retry(Retry(method, url, reason, attempt + 1, seconds))
        time.sleep(seconds)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Make a request with retries; return its answer, whatever its status."""
        return self.attempt(method, url, lambda: self.http.request(method, url, **kwargs))

    def call(self, method: str, url: str, **kwargs: Any) -> Any:
        """Make a request with retries; return its JSON (None for 204) or raise ApiError."""
        return self.answer(method, self.request(method, url, **kwargs))

    def answer(self, method: str, response: httpx.Response) -> Any:
        """Return an answer's JSON (None for 204); raise ApiError for an error, and
        UnexpectedAnswer for a success that is not JSON."""
        raise_for_answer(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no Content-Type")
            raise UnexpectedAnswer(
                f"{method} {response.url} answered {response.status_code} in {kind}, not JSON:"
                f" is {self.http.base_url} an imagestore service?"
            ) from None


class LazyTransport(httpx.BaseTransport):
    """An httpx transport made at its first request, with TLS verified as httpx's default."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.made: httpx.HTTPTransport | None = None
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if self.made is None:
                self.made = httpx.HTTPTransport(**self.options)
        return self.made.handle_request(request)

    def close(self) -> None:
        if self.made is not None:
            self.made.close()


def describe(error: httpx.TransportError) -> str:
    """Name a connection error briefly: its class and message."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
