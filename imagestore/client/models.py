"""What the client hands back: plain dataclasses built from the API's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal


def parse_time(text: str | None) -> datetime | None:
    """Read the API's ISO 8601 timestamps (`2026-11-27T10:00:00.000000Z`)."""
    return datetime.fromisoformat(text) if text else None


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
            "created_at": self.created_at.isoformat() if self.created_at else None,
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
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


@dataclass(frozen=True)
class Identity:
    """Who the client acts as."""

    url: str
    username: str | None
    auth: Literal["token", "basic", "netrc"]
    admin: bool

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "username": self.username, "auth": self.auth, "admin": self.admin}


# What became of one file of an upload or a download.
Outcome = Literal["uploaded", "skipped", "failed", "new", "downloaded"]


@dataclass(frozen=True)
class FileResult:
    """What became of one file: `uploaded` (or `downloaded`), `skipped` because the server (or
    the destination) has its bytes, `new` in a dry run, or `failed` with the reason."""

    path: Path
    outcome: Outcome
    sha256: str | None = None
    size: int = 0
    image_id: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.outcome, "path": str(self.path)}
        for name in ("image_id", "sha256", "error"):
            value = getattr(self, name)
            if value is not None:
                data["id" if name == "image_id" else name] = value
        if self.size:
            data["size"] = self.size
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
