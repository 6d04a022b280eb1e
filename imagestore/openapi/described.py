"""`doc`: what a view says of itself for the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from marshmallow import Schema

JSON = "application/json"
# Any of these authenticates a request; an operation may narrow the list (`doc(schemes=...)`).
SECURITY_SCHEMES = {
    "basicAuth": {"type": "http", "scheme": "basic"},
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "From POST /api/tokens/"},
}

# The schema of a success body, a tuple of the shapes it may take, or None.
Response = Schema | type[Schema] | tuple[Schema | type[Schema], ...] | None


@dataclass(frozen=True)
class Described:
    """What `doc` says about a view: its success response and its unusual errors."""

    response: Response
    status: int
    page: bool
    media_type: str
    errors: tuple[int, ...]
    public: bool
    schemes: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)


def doc(
    response: Response = None,
    *,
    status: int = 200,
    page: bool = False,
    media_type: str = JSON,
    errors: tuple[int, ...] = (),
    public: bool = False,
    schemes: tuple[str, ...] = tuple(SECURITY_SCHEMES),
    headers: dict[str, str] | None = None,
) -> Callable[[Callable], Callable]:
    """Describe a view for the OpenAPI document.

    `response` is the schema of the success body (`page=True`: of each row of a page), or a
    tuple of the schemas it may have; a non-JSON `media_type` without a schema means a file
    download (`image/*`: in any image type the app sends). The statuses that follow from the
    route, method, body, security and files are added (`document.error_statuses`); `errors`
    names the others.
    """
    described = Described(
        response, status, page, media_type, tuple(errors), public, schemes, headers or {}
    )

    def mark(view: Callable) -> Callable:
        view.openapi = described  # type: ignore[attr-defined]  # a function attribute
        return view

    return mark
