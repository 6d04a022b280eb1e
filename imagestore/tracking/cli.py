"""The `flask trackings ...` commands: prune old rows in batches, export rows as CSV or JSONL."""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import click
from flask.cli import AppGroup
from marshmallow import ValidationError
from sqlalchemy import delete, select

from ..db import db
from ..models import Tracking, utcnow
from ..schemas import TrackingFilters, tracking_schema

trackings_cli = AppGroup("trackings", help="Prune and export the tracking log.")

AGE = re.compile(r"(\d{1,9})\s*([dh])")
UNITS = {"d": "days", "h": "hours"}
# Columns of an export, in the order of the API's tracking JSON.
COLUMNS = list(tracking_schema.fields)


class Age(click.ParamType):
    """An age such as `90d` (days) or `12h` (hours)."""

    name = "age"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        match = AGE.fullmatch(str(value).strip().lower())
        if match is None:
            self.fail(f"{value!r} is not an age such as 90d (days) or 12h (hours)", param, ctx)
        return timedelta(**{UNITS[match[2]]: int(match[1])})


def prune_batch(cutoff: datetime, batch_size: int) -> int:
    """Delete up to `batch_size` rows created before the cutoff in one short transaction."""
    oldest = select(Tracking.id).where(Tracking.created_at < cutoff).limit(batch_size)
    with db.engine.begin() as connection:
        return connection.execute(delete(Tracking).where(Tracking.id.in_(oldest))).rowcount


@trackings_cli.command("prune")
@click.option(
    "--older-than",
    "age",
    type=Age(),
    required=True,
    help="Remove rows older than this: 90d (days) or 12h (hours).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Rows deleted per transaction; each batch holds its locks only briefly.",
)
def prune(age: timedelta, batch_size: int) -> None:
    """Delete tracking rows older than an age, in batches, and say how many went."""
    try:
        cutoff = utcnow() - age
    except OverflowError:
        raise click.BadParameter("the age is too large", param_hint="'--older-than'") from None
    removed = 0
    while True:
        count = prune_batch(cutoff, batch_size)
        removed += count
        if count < batch_size:
            break
    stamp = cutoff.isoformat(timespec="seconds").replace("+00:00", "Z")
    click.echo(f"removed {removed} tracking rows older than {stamp}")


def load_filters(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate the filters as the API does; stop with a one-line error when one is bad."""
    given = {key: value for key, value in raw.items() if value is not None}
    try:
        return TrackingFilters().load(given)
    except ValidationError as error:
        problems = "; ".join(
            f"--{field.replace('_', '-')}: {' '.join(messages)}"
            for field, messages in error.messages_dict.items()
        )
        raise click.UsageError(problems) from None


def matching_rows(filters: dict[str, Any], batch_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Yield the matching rows, oldest first, as the API's JSON; a batch in memory at a time."""
    query = Tracking.matching(filters).order_by(None).order_by(Tracking.id).limit(batch_size)
    last_id = 0
    while True:
        rows = db.session.scalars(query.where(Tracking.id > last_id)).all()
        if not rows:
            return
        yield from tracking_schema.dump(rows, many=True)
        last_id = rows[-1].id
        db.session.rollback()  # ends the read and empties the session before the next batch


def csv_cell(value: Any) -> Any:
    """Return a value as a CSV cell: JSON text for objects, lists and booleans; empty for null."""
    if value is None:
        return ""
    if isinstance(value, dict | list | bool):
        return json.dumps(value)
    return value


@trackings_cli.command("export")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "jsonl"]),
    default="jsonl",
    show_default=True,
    help="CSV with a header line, or one JSON object a line.",
)
@click.option("--user", help="A user id or name.")
@click.option("--endpoint", help="An exact path, such as /api/images/.")
@click.option("--method", help="An HTTP method.")
@click.option("--status-code", type=int, help="An HTTP status code.")
@click.option("--request-id", help="The X-Request-ID of one request.")
@click.option("--start-date", type=click.DateTime(["%Y-%m-%d"]), help="First day (UTC).")
@click.option("--end-date", type=click.DateTime(["%Y-%m-%d"]), help="Last day (UTC), included.")
def export(output_format: str, **raw_filters: Any) -> None:
    """Write the tracking rows that match the filters to stdout, oldest first."""
    for name in ("start_date", "end_date"):
        if raw_filters[name] is not None:
            raw_filters[name] = raw_filters[name].date().isoformat()
    filters = load_filters(raw_filters)
    out = sys.stdout
    if output_format == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in matching_rows(filters):
            writer.writerow({key: csv_cell(value) for key, value in row.items()})
    else:
        for row in matching_rows(filters):
            out.write(json.dumps(row) + "\n")
    out.flush()
