"""`flask storage check`: compare the stored files with the image rows, and repair orphans."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field

import click
from flask import current_app
from flask.cli import AppGroup

from ..db import db
from ..models import Image, lock_content
from . import CHUNK_SIZE, Storage, StoredObject, get_storage, thumbnail_key

# Content files and thumbnails are named by their checksum: `<sha256>.jpg`, `<sha256>.256.webp`.
CONTENT_NAME = re.compile(r"([0-9a-f]{64})\.")

storage_cli = AppGroup("storage", help="Check the stored files against the database.")


@dataclass
class Report:
    """What a check found: files no row uses, rows without a file, files that changed."""

    orphans: list[StoredObject] = field(default_factory=list)
    missing: list[tuple[int, str, str]] = field(default_factory=list)
    mismatched: list[tuple[int, str, str]] = field(default_factory=list)


def file_checksum(storage: Storage, key: str) -> str:
    """Hash a stored file in chunks."""
    digest = hashlib.sha256()
    with storage.open(key) as file:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def check_storage() -> Report:
    """Compare every stored file with the image rows."""
    storage = get_storage()
    sizes = current_app.config["THUMBNAIL_SIZES"]
    rows: dict[str, list[tuple[int, str]]] = {}
    for image_id, sha256, key in db.session.execute(
        db.select(Image.id, Image.sha256, Image.file_key).order_by(Image.id)
    ):
        rows.setdefault(key, []).append((image_id, sha256))
    used = set(rows)
    used.update(
        thumbnail_key(sha256, size)
        for images in rows.values()
        for _, sha256 in images
        for size in sizes
    )

    report = Report()
    present = set()
    for stored in storage.objects():
        present.add(stored.key)
        if stored.key not in used:
            report.orphans.append(stored)
    for key, images in rows.items():
        if key not in present:
            report.missing.extend((image_id, sha256, key) for image_id, sha256 in images)
            continue
        found = file_checksum(storage, key)
        report.mismatched.extend(
            (image_id, sha256, found) for image_id, sha256 in images if found != sha256
        )
    return report


def remove_if_unused(key: str) -> bool:
    """Remove a file unless an image started using its content since the listing.

    A content file is checked again under the content lock that uploads take, so an upload of
    the same bytes on another host cannot lose its file to the repair.
    """
    sha256 = CONTENT_NAME.match(key.rsplit("/", 1)[-1])
    if sha256 is None:
        get_storage().delete(key)
        return True
    db.session.rollback()  # a command's transactions take the write lock (db.begin_sqlite)
    lock_content(sha256.group(1))
    unused = Image.first_with_content(sha256.group(1)) is None
    if unused:
        get_storage().delete(key)
    db.session.commit()
    return unused


@storage_cli.command("check")
@click.option("--repair", is_flag=True, help="Remove unused files older than the grace period.")
def check_command(repair: bool) -> None:
    """List files without rows, rows without files and checksum mismatches (exit 1 if any)."""
    report = check_storage()
    grace = current_app.config["STORAGE_REPAIR_GRACE_SECONDS"]
    problems = 0
    for image_id, sha256, key in report.missing:
        click.echo(f"missing file: image {image_id} (sha256 {sha256}) has no file {key}")
        problems += 1
    for image_id, sha256, found in report.mismatched:
        click.echo(
            f"checksum mismatch: image {image_id} (sha256 {sha256}) has a file hashing to {found}"
        )
        problems += 1
    for stored in report.orphans:
        old = time.time() - stored.modified >= grace
        if repair and old:
            if remove_if_unused(stored.key):
                click.echo(f"removed unused file: {stored.key} ({stored.size} bytes)")
            continue
        note = "" if old else f" (younger than {grace} s: may be an upload in flight)"
        click.echo(f"unused file: {stored.key} ({stored.size} bytes){note}")
        problems += 1
    if problems:
        raise SystemExit(1)
    click.echo("storage check: no problems")
