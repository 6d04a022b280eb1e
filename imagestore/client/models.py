"""What the client hands back: plain dataclasses built from the API's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from .transport import api_answer


def parse_time(text: str | None) -> datetime | None:
    """Read the API's ISO 8601 timestamps (`2026-11-27T10:00:00.000000Z`)."""
    return datetime.fromisoformat(text) if text else None


def time_text(value: datetime | None) -> str | None:
    """Write a timestamp as the API does, UTC with a `Z`."""
    return value.isoformat().replace("+00:00", "Z") if value else None


@dataclass(frozen=True)
class Image:
    """One stored image, as `GET /api/images/{id}/` shows it."""

    id: int
    filename: str
    sha256: str
    size: int
    width: int
    height: int
    content_type: str
    format: str
    tags: list[str]
    created_by: str | None
    created_at: datetime | None
    url: str
    thumbnails: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Image:
        with api_answer("An image"):
            return cls(
                id=data["id"],
                filename=data["filename"],
                sha256=data["sha256"],
                size=data["size"],
                width=data["width"],
                height=data["height"],
                content_type=data["content_type"],
                format=data["format"],
                tags=list(data["tags"]),
                created_by=data.get("created_by"),
                created_at=parse_time(data.get("created_at")),
                url=data["image"],
                thumbnails={int(size): link for size, link in data.get("thumbnails", {}).items()},
            )

    def to_json(self) -> dict[str, Any]:
        """Return the image as JSON-ready values (for `imagestore ls --json`)."""
        return {
            "id": self.id,
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "content_type": self.content_type,
            "format": self.format,
            "tags": self.tags,
            "created_by": self.created_by,
            "created_at": time_text(self.created_at),
            "url": self.url,
        }


@dataclass(frozen=True)
class Tag:
    """One tag and how many images have it."""

    name: str
    image_count: int
    created_by: str | None
    created_at: datetime | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tag:
        with api_answer("A tag"):
            return cls(
                name=data["name"],
                image_count=data["image_count"],
                created_by=data.get("created_by"),
                created_at=parse_time(data.get("created_at")),
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image_count": self.image_count,
            "created_by": self.created_by,
            "created_at": time_text(self.created_at),
        }


@dataclass(frozen=True)
class Identity:
    """Who the client acts as."""

    url: str
    username: str
    auth: Literal["token", "basic", "netrc"]
    admin: bool

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "username": self.username, "auth": self.auth, "admin": self.admin}


# What became of one file of an upload or a download.
Outcome = Literal["uploaded", "skipped", "failed", "new", "downloaded"]


@dataclass(frozen=True)
class FileResult:
    """What became of one file: `uploaded` (or `downloaded`), `skipped` because the server (or
    the destination) has its bytes, `new` in a dry run, or `failed`; `detail` says why it
    failed, or of a skipped file which file of the run has the same bytes."""

    path: Path
    outcome: Outcome
    sha256: str | None = None
    size: int = 0
    image_id: int | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.outcome, "path": str(self.path)}
        if self.image_id is not None:
            data["id"] = self.image_id
        if self.sha256 is not None:
            data["sha256"] = self.sha256
        if self.size:
            data["size"] = self.size
        if self.detail is not None:
            data["error" if self.outcome == "failed" else "detail"] = self.detail
        return data


@dataclass
class Summary:
    """The counts of a run, and every file's result."""

    counted: tuple[Outcome, ...] = ("uploaded", "skipped", "failed")
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def count(self, outcome: Outcome) -> int:
        return sum(result.outcome == outcome for result in self.results)

    @property
    def failed(self) -> list[FileResult]:
        return [result for result in self.results if result.outcome == "failed"]

    @property
    def bytes_sent(self) -> int:
        return sum(r.size for r in self.results if r.outcome in ("uploaded", "downloaded"))

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "summary",
            **{outcome: self.count(outcome) for outcome in self.counted},
            "bytes": self.bytes_sent,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
        }
