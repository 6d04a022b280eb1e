"""Database models: users, images, tags, the image-tag links and the tracking log."""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Select,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .extensions import db

# PostgreSQL compares and groups JSONB; plain JSON elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER primary key.
BigID = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Return the current time in UTC, timezone-aware."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def fold_name(name: str) -> str:
    """Return the key under which a name is compared: NFC, case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def day_start(day: date) -> datetime:
    """Return midnight UTC at the start of a calendar day."""
    return datetime.combine(day, time.min, tzinfo=UTC)


image_tags = Table(
    "image_tags",
    db.metadata,
    Column("image_id", ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<User {self.username}>"


class Tag(db.Model):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    # The case-folded name: tag names are unique and looked up without regard to case.
    name_folded: Mapped[str] = mapped_column(String(200), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    created_by: Mapped[User | None] = relationship()

    def rename(self, name: str) -> None:
        """Give the tag a new (already normalized) name."""
        self.name = name
        self.name_folded = fold_name(name)

    @classmethod
    def named(cls, name: str) -> Select:
        """Select the tag with this name, whatever its case."""
        return select(cls).where(cls.name_folded == fold_name(name))

    @classmethod
    def matching(cls, filters: dict[str, Any]) -> Select:
        """Select tags whose name contains `name` (any case), sorted by name."""
        query = select(cls).order_by(cls.name_folded, cls.id)
        if filters.get("name"):
            needle = fold_name(filters["name"])
            escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(cls.name_folded.like(f"%{escaped}%", escape="\\"))
        return query

    def __repr__(self) -> str:
        return f"<Tag {self.name}>"


# How many images carry the tag, counted by the same query that loads the tag.
Tag.image_count = column_property(
    select(func.count(image_tags.c.image_id))
    .where(image_tags.c.tag_id == Tag.id)
    .correlate_except(image_tags)
    .scalar_subquery()
)


class Image(db.Model):
    __tablename__ = "images"
    __table_args__ = (Index("ix_images_created_at_id", "created_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The sanitized name the client gave; the file itself is stored under `file_key`.
    filename: Mapped[str] = mapped_column(String(255))
    file_key: Mapped[str] = mapped_column(String(255), unique=True)
    content_type: Mapped[str] = mapped_column(String(50))
    size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int]
    height: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    created_by: Mapped[User | None] = relationship()
    tags: Mapped[list[Tag]] = relationship(secondary=image_tags, order_by=Tag.name_folded)

    @classmethod
    def matching(cls, filters: dict[str, Any]) -> Select:
        """Select images, newest first, that match the list filters."""
        query = select(cls).order_by(cls.created_at.desc(), cls.id.desc())
        if filters.get("tags"):
            folded = {fold_name(name) for name in filters["tags"]}
            # One grouped sub-select finds the images that have every tag asked for.
            having_all = (
                select(image_tags.c.image_id)
                .join(Tag, Tag.id == image_tags.c.tag_id)
                .where(Tag.name_folded.in_(folded))
                .group_by(image_tags.c.image_id)
                .having(func.count(func.distinct(Tag.id)) == len(folded))
            )
            query = query.where(cls.id.in_(having_all))
        if filters.get("start_date"):
            query = query.where(cls.created_at >= day_start(filters["start_date"]))
        if filters.get("end_date") and filters["end_date"] < date.max:
            next_day = day_start(filters["end_date"]) + timedelta(days=1)
            query = query.where(cls.created_at < next_day)
        return query

    def __repr__(self) -> str:
        return f"<Image {self.id} {self.filename}>"


class Tracking(db.Model):
    __tablename__ = "trackings"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # The user name given, also when authentication failed and `user_id` is empty.
    username: Mapped[str | None] = mapped_column(String(150))
    method: Mapped[str] = mapped_column(String(16), index=True)
    endpoint: Mapped[str] = mapped_column(String(1024), index=True)
    query: Mapped[Any | None] = mapped_column(JSONType)
    data: Mapped[Any | None] = mapped_column(JSONType)
    status_code: Mapped[int] = mapped_column(index=True)
    duration_ms: Mapped[float]
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    headers: Mapped[Any | None] = mapped_column(JSONType)
    response: Mapped[Any | None] = mapped_column(JSONType)
    truncated: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    user: Mapped[User | None] = relationship()

    @classmethod
    def matching(cls, filters: dict[str, Any]) -> Select:
        """Select tracking rows, newest first, that match the list filters."""
        query = select(cls).order_by(cls.id.desc())
        user = filters.get("user")
        if user is not None:
            if user.isdigit():
                query = query.where(cls.user_id == int(user))
            else:
                query = query.where(cls.user_id.in_(select(User.id).where(User.username == user)))
        for name in ("endpoint", "method", "status_code"):
            if filters.get(name) is not None:
                query = query.where(getattr(cls, name) == filters[name])
        return query

    def __repr__(self) -> str:
        return f"<Tracking {self.id} {self.method} {self.endpoint}>"
