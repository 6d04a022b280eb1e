"""Database models: users, images, tags, the image-tag links and the tracking log."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

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
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import (
    Mapped,
    column_property,
    joinedload,
    mapped_column,
    relationship,
    undefer,
    validates,
)
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from .db import MAX_ID, Model, db

# PostgreSQL compares and groups JSONB; plain JSON elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER primary key.
BigID = BigInteger().with_variant(Integer(), "sqlite")
# Ids are never given twice: without AUTOINCREMENT SQLite gives a new row the highest id plus
# one, the id of the newest row once it is deleted, which cached downloads and tracking rows
# still name. PostgreSQL's sequences never give an id twice; the option is SQLite's alone.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


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


class walk_in_order(FunctionElement):
    """A column that, on SQLite, may not lead an ordered select: the ORDER BY index leads.

    Given `id IN (images of a tag)`, SQLite starts from that list, thousands of rows long for a
    common tag, and sorts it all for a page of 10. A unary `+` keeps the term from choosing the
    plan (SQLite's documented way), so the date index is walked and stops at the page's last
    row. Unordered selects (the count) keep the list. Elsewhere it is the plain column.
    """

    inherit_cache = True
    type = Integer()
    name = "walk_in_order"


@compiles(walk_in_order)
def compile_walk_in_order(element: walk_in_order, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(walk_in_order, "sqlite")
def compile_walk_in_order_sqlite(element: walk_in_order, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    selectable = compiler.stack[-1]["selectable"] if compiler.stack else None
    return f"+{column}" if getattr(selectable, "_order_by_clauses", ()) else column


def fold_name(name: str) -> str:
    """Return the key under which a name is compared: NFC, case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def ordered(query: Select, column: Any, tiebreak: Any, descending: bool) -> Select:
    """Order a query by a column, ties broken by `tiebreak` in the same direction."""
    if descending:
        return query.order_by(column.desc(), tiebreak.desc())
    return query.order_by(column.asc(), tiebreak.asc())


def day_start(day: date) -> datetime:
    """Return midnight UTC at the start of a calendar day."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def created_within(created_at: Any, filters: dict[str, Any]) -> list[Any]:
    """Return the conditions of rows created from the `start_date` to the `end_date` filter
    (UTC days, both included)."""
    conditions = []
    if filters.get("start_date"):
        conditions.append(created_at >= day_start(filters["start_date"]))
    if filters.get("end_date") and filters["end_date"] < date.max:
        conditions.append(created_at < day_start(filters["end_date"]) + timedelta(days=1))
    return conditions


image_tags = Table(
    "image_tags",
    db.metadata,
    Column("image_id", ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    # Covers "images having this tag" without reading the table (the key covers the reverse).
    Index("ix_image_tags_tag_id_image_id", "tag_id", "image_id"),
)


class User(Model):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    # The folded username (fold_name): names are unique and matched without regard to case or
    # Unicode form. Case folding makes a character up to three.
    username_folded: Mapped[str] = mapped_column(String(450), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @validates("username")
    def normalize_username(self, key: str, username: str) -> str:
        """Store a username in NFC, and its folded form beside it."""
        username = unicodedata.normalize("NFC", username)
        self.username_folded = fold_name(username)
        return username

    @classmethod
    def named(cls, username: str) -> Select:
        """Select the user with this name, whatever its case or Unicode form."""
        return select(cls).where(cls.username_folded == fold_name(username))

    def __repr__(self) -> str:
        return f"<User {self.username}>"


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The user a request authenticated as: what authentication and permissions read of the row.

    A plain value rather than a mapped `User`: it is built on every request, where an ORM object
    costs more than reading its row.
    """

    id: int
    username: str
    password_hash: str
    is_active: bool
    is_admin: bool

    @classmethod
    def of(cls, user: User) -> CurrentUser:
        return cls(user.id, user.username, user.password_hash, user.is_active, user.is_admin)

    def may_change(self, owner_id: int | None) -> bool:
        """Tell whether this user may change what `owner_id` created: its creator or an admin."""
        return self.is_admin or owner_id == self.id


class Token(Model):
    """A bearer token of a user: only its SHA-256 is stored, the secret is shown once."""

    __tablename__ = "tokens"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    @staticmethod
    def hash(secret: str) -> str:
        """Return the stored form of a token's secret: its SHA-256 in hexadecimal."""
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def newest_first(cls, username: str | None = None) -> Select:
        """Select the tokens, of one user (any case) when named, newest first, with their owner."""
        query = select(cls).options(joinedload(cls.user)).order_by(cls.id.desc())
        if username is not None:
            owner = User.named(username).with_only_columns(User.id).scalar_subquery()
            query = query.where(cls.user_id == owner)
        return query

    @classmethod
    def revoke_all_of(cls, user_id: int) -> int:
        """Delete every token of a user, in the session's transaction; return how many."""
        # A DELETE's result is a cursor result, which counts the rows.
        result = db.session.execute(delete(cls).where(cls.user_id == user_id))
        return cast("CursorResult[Any]", result).rowcount

    def __repr__(self) -> str:
        return f"<Token {self.id} {self.name}>"


class Tag(Model):
    __tablename__ = "tags"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    # The case-folded name: tag names are unique and looked up without regard to case.
    name_folded: Mapped[str] = mapped_column(String(200), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    created_by: Mapped[User | None] = relationship()
    # How many images carry the tag, counted by the same query that loads the tag. Deferred: the
    # tags of listed images do not need it (Tag.matching and Tag.named load it).
    image_count: Mapped[int] = column_property(
        select(func.count(image_tags.c.image_id))
        .where(image_tags.c.tag_id == id)
        .correlate_except(image_tags)
        .scalar_subquery(),
        deferred=True,
    )

    def rename(self, name: str) -> None:
        """Give the tag a new (already normalized) name."""
        self.name = name
        self.name_folded = fold_name(name)

    def merge_into(self, target: Tag) -> None:
        """Give every image of this tag the tag `target` (once), then delete this tag."""
        already = select(image_tags.c.image_id).where(image_tags.c.tag_id == target.id)
        db.session.execute(
            insert(image_tags).from_select(
                ["image_id", "tag_id"],
                select(image_tags.c.image_id, literal(target.id))
                .where(image_tags.c.tag_id == self.id)
                .where(image_tags.c.image_id.not_in(already)),
            )
        )
        db.session.delete(self)

    @classmethod
    def named(cls, name: str) -> Select:
        """Select the tag with this name, whatever its case."""
        return (
            select(cls).where(cls.name_folded == fold_name(name)).options(undefer(cls.image_count))
        )

    @classmethod
    def matching(cls, filters: dict[str, Any]) -> Select:
        """Select tags whose name contains `name` (any case), in the order asked (by name)."""
        field = filters.get("ordering", "name")
        column = {"name": cls.name_folded}.get(field.lstrip("-")) or getattr(cls, field.lstrip("-"))
        query = ordered(select(cls), column, cls.id, descending=field.startswith("-"))
        query = query.options(undefer(cls.image_count))
        if filters.get("name"):
            needle = fold_name(filters["name"])
            escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(cls.name_folded.like(f"%{escaped}%", escape="\\"))
        return query

    def __repr__(self) -> str:
        return f"<Tag {self.name}>"


class Image(Model):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_created_at_id", "created_at", "id"),
        Index("ix_images_size_id", "size", "id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The sanitized name the client gave; the file itself is stored under `file_key`.
    filename: Mapped[str] = mapped_column(String(255))
    # Content-addressed: every image with the same bytes shares the file under this key.
    file_key: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(50), index=True)
    format: Mapped[str] = mapped_column(String(10))
    size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(index=True)
    height: Mapped[int] = mapped_column(index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    created_by: Mapped[User | None] = relationship()
    tags: Mapped[list[Tag]] = relationship(secondary=image_tags, order_by=Tag.name_folded)

    @classmethod
    def matching(cls, filters: dict[str, Any]) -> Select:
        """Select images that match the list filters, in the order asked (newest first)."""
        field = filters.get("ordering", "-created_at")
        column = getattr(cls, field.lstrip("-"))
        query = ordered(select(cls), column, cls.id, descending=field.startswith("-"))
        # Images of one tag in date or id order: walk that index, checking the tag (see
        # walk_in_order); a cursor walk by id then costs what the first page does.
        walk = len(filters.get("tags") or ()) == 1 and field.lstrip("-") in ("created_at", "id")
        tag_key = walk_in_order(cls.id) if walk else cls.id
        return query.where(*cls.tag_conditions(filters, tag_key), *cls.field_conditions(filters))

    @classmethod
    def field_conditions(cls, filters: dict[str, Any]) -> list[Any]:
        """Return the WHERE conditions of the filters on the image's own columns."""
        conditions = []
        if filters.get("sha256"):
            conditions.append(cls.sha256 == filters["sha256"])
        conditions += created_within(cls.created_at, filters)
        if filters.get("created_after"):
            conditions.append(cls.created_at >= filters["created_after"])
        if filters.get("created_before"):
            conditions.append(cls.created_at < filters["created_before"])
        if filters.get("created_by"):
            uploader = User.named(filters["created_by"]).with_only_columns(User.id)
            conditions.append(cls.created_by_id.in_(uploader.scalar_subquery()))
        if filters.get("content_type"):
            conditions.append(cls.content_type == filters["content_type"].lower())
        if filters.get("min_width"):
            conditions.append(cls.width >= filters["min_width"])
        if filters.get("min_height"):
            conditions.append(cls.height >= filters["min_height"])
        return conditions

    @classmethod
    def tag_conditions(cls, filters: dict[str, Any], key: Any = None) -> list[Any]:
        """Return the WHERE conditions of the tag filters: sub-selects, never a join per tag."""
        conditions = []
        if filters.get("tags"):
            # One sub-select per tag asked for (images having all of them), each read from the
            # (tag_id, image_id) index; a grouped sub-select sorted every tagged row instead.
            for folded in sorted({fold_name(name) for name in filters["tags"]}):
                tag_id = select(Tag.id).where(Tag.name_folded == folded).scalar_subquery()
                tagged = select(image_tags.c.image_id).where(image_tags.c.tag_id == tag_id)
                conditions.append((cls.id if key is None else key).in_(tagged))
        if filters.get("any_tags"):
            conditions.append(cls.id.in_(images_tagged(filters["any_tags"])))
        if filters.get("exclude_tags"):
            conditions.append(cls.id.not_in(images_tagged(filters["exclude_tags"])))
        if filters.get("untagged") is not None:
            has_tags = select(image_tags.c.image_id).where(image_tags.c.image_id == cls.id).exists()
            conditions.append(~has_tags if filters["untagged"] else has_tags)
        return conditions

    @classmethod
    def count_tagged(cls, names: list[str]) -> Select:
        """Count the images having all of these tags from the image-tag links alone.

        Every link names an existing image (its foreign key cascades), so no image row is read:
        for a tag on thousands of images this is an index range instead of thousands of lookups.
        """
        first, *others = [
            select(Tag.id).where(Tag.name_folded == folded).scalar_subquery()
            for folded in sorted({fold_name(name) for name in names})
        ]
        query = select(func.count()).select_from(image_tags).where(image_tags.c.tag_id == first)
        for tag_id in others:
            also = select(image_tags.c.image_id).where(image_tags.c.tag_id == tag_id)
            query = query.where(image_tags.c.image_id.in_(also))
        return query

    @classmethod
    def first_with_content(cls, sha256: str) -> int | None:
        """Return the id of the oldest image with these bytes, if any."""
        query = select(cls.id).where(cls.sha256 == sha256).order_by(cls.id).limit(1)
        return db.session.scalar(query)

    @classmethod
    def first_with_contents(cls, digests: list[str]) -> dict[str, int]:
        """Return, for each of these checksums that some image has, the oldest one's id."""
        if not digests:
            return {}
        # One expanding parameter: the thousand digests are bound, not each made a literal.
        query = (
            select(cls.sha256, func.min(cls.id))
            .where(cls.sha256.in_(bindparam("digests", expanding=True)))
            .group_by(cls.sha256)
        )
        return dict(db.session.execute(query, {"digests": digests}).all())

    def __repr__(self) -> str:
        return f"<Image {self.id} {self.filename}>"


def lock_content(sha256: str) -> None:
    """Serialize, until the transaction ends, the requests that add or drop a content's file.

    SQLite has done so since `BEGIN IMMEDIATE`; PostgreSQL takes an advisory lock.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(sha256[:15], 16)}
        )


def images_tagged(names: list[str]) -> Select:
    """Select the ids of images that have at least one of these tags."""
    folded = {fold_name(name) for name in names}
    return (
        select(image_tags.c.image_id)
        .join(Tag, Tag.id == image_tags.c.tag_id)
        .where(Tag.name_folded.in_(folded))
    )


class Tracking(Model):
    __tablename__ = "trackings"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # The user name given, also when authentication failed and `user_id` is empty.
    username: Mapped[str | None] = mapped_column(String(150))
    # How the request authenticated: "basic", "bearer", or None without credentials.
    auth_method: Mapped[str | None] = mapped_column(String(16))
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
    # The request's X-Request-ID (the client's when sane, else generated), as in the JSON logs.
    request_id: Mapped[str | None] = mapped_column(String(128), index=True)

    user: Mapped[User | None] = relationship()

    @classmethod
    def matching(cls, filters: dict[str, Any]) -> Select:
        """Select tracking rows, newest first, that match the list filters."""
        query = select(cls).order_by(cls.id.desc())
        user = filters.get("user")
        if user is not None:
            # Only ASCII digits make an id: `isdigit` also accepts "²", which `int` refuses.
            if user.isascii() and user.isdigit() and int(user) <= MAX_ID:
                query = query.where(cls.user_id == int(user))
            else:
                named = User.named(user).with_only_columns(User.id)
                query = query.where(cls.user_id.in_(named.scalar_subquery()))
        for name in ("endpoint", "method", "status_code", "request_id"):
            if filters.get(name) is not None:
                query = query.where(getattr(cls, name) == filters[name])
        return query.where(*created_within(cls.created_at, filters))

    def __repr__(self) -> str:
        return f"<Tracking {self.id} {self.method} {self.endpoint}>"
