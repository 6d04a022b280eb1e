"""The `imagestore` command: upload, list, download, tag and delete images from scripts.

Exit codes: 0 when everything was done, 1 when some files or requests failed (each is named),
2 for a usage error, missing or refused credentials, or tags that do not exist; 130 after
Ctrl-C (running the same command again finishes the job).
"""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .api import Client, MissingTags
from .models import Image, Summary
from .output import Reporter, reporter
from .transport import ApiError, AuthError, ImagestoreError

OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130
ORDERINGS = ["-id", "id", "-created_at", "created_at", "-size", "size"]


class UsageError(Exception):
    """A command line that cannot be run: exit code 2."""


def image_ids(text: str) -> list[int]:
    """Read image ids: `12`, `3,5,8`, `10-20` or a mix (`3,10-12`)."""
    ids: list[int] = []
    for piece in filter(None, (part.strip() for part in text.split(","))):
        first, dash, last = piece.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise argparse.ArgumentTypeError(f"not image ids: {text!r} (say 3,5,10-20)")
        if dash:
            if int(last) < int(first) or int(last) - int(first) >= 100_000:
                raise argparse.ArgumentTypeError(f"not a range of ids: {piece!r}")
            ids += range(int(first), int(last) + 1)
        else:
            ids.append(int(first))
    if not ids:
        raise argparse.ArgumentTypeError("no image id given")
    return ids


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number from 1: {text!r}")
    return int(text)


def day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def moment(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date-time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give an offset (Z or +01:00): {text!r}")
    return value


def connection_options() -> argparse.ArgumentParser:
    """The options every command takes: where, as whom, how output looks, how hard to try."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--url", help="service address (default: $IMAGESTORE_URL)")
    group.add_argument(
        "--user",
        help="log in as this user with HTTP Basic, asking for the password"
        " (default: $IMAGESTORE_TOKEN, else ~/.netrc)",
    )
    group.add_argument("--json", action="store_true", help="print JSON lines")
    group.add_argument(
        "--retries", type=positive, default=5, help="attempts per request (default 5)"
    )
    group.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for an answer (default 60)"
    )
    return common


def filter_options() -> argparse.ArgumentParser:
    """The image filters of `ls` and `download`: those of GET /api/images/."""
    filters = argparse.ArgumentParser(add_help=False)
    group = filters.add_argument_group("filters (all must hold)")
    group.add_argument("--tag", action="append", default=[], help="has this tag (repeat: all)")
    group.add_argument("--any-tag", action="append", default=[], help="has one of these tags")
    group.add_argument("--exclude-tag", action="append", default=[], help="has not this tag")
    group.add_argument("--untagged", action="store_true", help="has no tag")
    group.add_argument("--sha256", help="has these bytes")
    group.add_argument("--start-date", type=day, help="created on or after this day (UTC)")
    group.add_argument("--end-date", type=day, help="created on or before this day (UTC)")
    group.add_argument("--created-after", type=moment, help="created at or after (ISO 8601)")
    group.add_argument("--created-before", type=moment, help="created before (ISO 8601)")
    group.add_argument("--created-by", help="uploaded by this user")
    group.add_argument("--content-type", help="of this media type (image/png)")
    group.add_argument("--min-width", type=positive)
    group.add_argument("--min-height", type=positive)
    group.add_argument("--ordering", choices=ORDERINGS, help="default: newest first (-id)")
    group.add_argument("--limit", type=positive, help="at most this many images")
    return filters


def build_parser() -> argparse.ArgumentParser:
    common, filters = connection_options(), filter_options()
    parser = argparse.ArgumentParser(
        prog="imagestore",
        description="Upload, list, download, tag and delete the images of an imagestore service.",
        epilog="Exit codes: 0 all done, 1 some failed (each named), 2 usage or credentials"
        " error, 130 interrupted (run it again to finish).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    upload = commands.add_parser(
        "upload",
        parents=[common],
        help="upload files and folders (each file read once; stored bytes skipped)",
        description="Upload image files, and the image files of folders at any depth (hidden"
        " ones aside). Files whose bytes the service has are skipped, so running the same"
        " upload again sends only what is missing.",
    )
    upload.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    upload.add_argument(
        "--tag", action="append", default=[], metavar="T", help="give every file this tag"
    )
    upload.add_argument(
        "--tags-from-folders",
        action="store_true",
        help="tag each file with the names of its folders below PATH"
        " (PATH/2026/beach/a.jpg: 2026 and beach)",
    )
    upload.add_argument(
        "--create-missing-tags", action="store_true", help="create tags that do not exist"
    )
    upload.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files and folders whose name, or path below PATH, matches (repeatable)",
    )
    upload.add_argument("-j", "--jobs", type=positive, default=4, help="parallel uploads (4)")
    upload.add_argument(
        "--dry-run", action="store_true", help="say what would be uploaded; send nothing"
    )
    upload.add_argument(
        "--no-cache",
        action="store_true",
        help="read every file, even those whose checksum an earlier run kept"
        " (~/.cache/imagestore/)",
    )
    upload.set_defaults(run=run_upload)

    ls = commands.add_parser("ls", parents=[common, filters], help="list images")
    ls.set_defaults(run=run_ls)

    download = commands.add_parser(
        "download",
        parents=[common, filters],
        help="download images into a folder, as ID-FILENAME (files already there are skipped)",
    )
    download.add_argument("dest", metavar="DEST", type=Path, help="folder (created if needed)")
    download.add_argument("-j", "--jobs", type=positive, default=4, help="parallel downloads (4)")
    download.set_defaults(run=run_download)

    tag = commands.add_parser("tag", help="add tags to images or remove them")
    actions = tag.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("add", "add tags to images"), ("rm", "remove tags from images")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("ids", type=image_ids, metavar="IDS", help="3,5,10-20")
        action.add_argument("tags", nargs="+", metavar="TAG")
        if name == "add":
            action.add_argument(
                "--create-missing-tags", action="store_true", help="create unknown tags"
            )
        action.set_defaults(run=run_tag)

    tags = commands.add_parser("tags", parents=[common], help="list tags")
    tags.add_argument("--name", help="names containing this text (any case)")
    tags.set_defaults(run=run_tags)

    rm = commands.add_parser("rm", parents=[common], help="delete images")
    rm.add_argument("ids", type=image_ids, nargs="+", metavar="IDS", help="3,5,10-20")
    rm.set_defaults(run=run_rm)

    whoami = commands.add_parser(
        "whoami", parents=[common], help="show the service and the user the credentials are for"
    )
    whoami.set_defaults(run=run_whoami)
    return parser


def connect(args: argparse.Namespace, report: Reporter | None = None) -> Client:
    """Make the client the options and environment describe; UsageError without credentials."""
    url = args.url or os.environ.get("IMAGESTORE_URL")
    if not url:
        raise UsageError("No service address: set IMAGESTORE_URL or pass --url.")
    password = None
    if args.user:
        host = urlsplit(url).hostname
        try:
            password = getpass.getpass(f"Password for {args.user} at {host}: ")
        except EOFError:
            raise UsageError(f"No password given for {args.user}.") from None
    try:
        client = Client(
            url,
            username=args.user,
            password=password,
            timeout=args.timeout,
            retries=args.retries,
            on_retry=report.retry if report else None,
        )
    except ImagestoreError as error:
        raise UsageError(str(error)) from None
    if client.auth_kind is None:
        client.close()
        raise UsageError(
            "No credentials: set IMAGESTORE_TOKEN, pass --user NAME, or add the host to ~/.netrc."
        )
    return client


def filters_of(args: argparse.Namespace) -> dict[str, Any]:
    """Return the image filters the options name."""
    return {
        "tags": args.tag or None,
        "any_tags": args.any_tag or None,
        "exclude_tags": args.exclude_tag or None,
        "untagged": True if args.untagged else None,
        "sha256": args.sha256,
        "start_date": args.start_date,
        "end_date": args.end_date,
        "created_after": args.created_after,
        "created_before": args.created_before,
        "created_by": args.created_by,
        "content_type": args.content_type,
        "min_width": args.min_width,
        "min_height": args.min_height,
        "ordering": args.ordering,
    }


def selected(client: Client, args: argparse.Namespace) -> list[Image]:
    """Return the images the filters select, up to --limit."""
    found: list[Image] = []
    for image in client.images(**filters_of(args)):
        if args.limit is not None and len(found) >= args.limit:
            break
        found.append(image)
    return found


def outcome_code(summary: Summary) -> int:
    if summary.interrupted:
        return INTERRUPTED
    return FAILED if summary.failed else OK


def run_upload(args: argparse.Namespace) -> int:
    report = reporter(args.json, "upload")
    try:
        with connect(args, report) as client:
            summary = client.upload(
                args.paths,
                args.tag,
                tags_from_folders=args.tags_from_folders,
                create_missing_tags=args.create_missing_tags,
                exclude=args.exclude,
                jobs=args.jobs,
                dry_run=args.dry_run,
                cache=not args.no_cache,
                on_start=report.start,
                on_result=report.result,
            )
    finally:
        report.close()
    report.finish(summary)
    return outcome_code(summary)


def run_download(args: argparse.Namespace) -> int:
    report = reporter(args.json, "download")
    try:
        with connect(args, report) as client:
            images = selected(client, args)
            report.start(len(images), sum(image.size for image in images))
            summary = client.download_all(
                images, args.dest, jobs=args.jobs, on_result=report.result
            )
    finally:
        report.close()
    report.finish(summary)
    return outcome_code(summary)


def run_ls(args: argparse.Namespace) -> int:
    with connect(args) as client:
        images = client.images(**filters_of(args))
        for count, image in enumerate(images):
            if args.limit is not None and count >= args.limit:
                break
            if args.json:
                print(json.dumps(image.to_json()), flush=True)
            else:
                created = image.created_at.strftime("%Y-%m-%d %H:%M") if image.created_at else ""
                pixels = f"{image.width}x{image.height}"
                print(
                    f"{image.id:>8}  {created}  {image.size:>10}  {pixels:>11}  {image.filename}"
                    f"  {','.join(image.tags)}"
                )
    return OK


def run_tags(args: argparse.Namespace) -> int:
    with connect(args) as client:
        for tag in client.tags(args.name):
            if args.json:
                print(json.dumps(tag.to_json()))
            else:
                print(f"{tag.image_count:>8}  {tag.name}")
    return OK


def run_tag(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.action == "add":
            changed = client.retag(
                args.ids, add=args.tags, create_missing_tags=args.create_missing_tags
            )
        else:
            changed = client.retag(args.ids, remove=args.tags)
    for image in changed:
        if args.json:
            print(json.dumps({"id": image.id, "tags": image.tags}))
        else:
            print(f"{image.id:>8}  {','.join(image.tags)}")
    return OK


def run_rm(args: argparse.Namespace) -> int:
    ids = [image_id for group in args.ids for image_id in group]
    with connect(args) as client:
        deleted = client.delete(ids)
    if args.json:
        print(json.dumps({"deleted": list(dict.fromkeys(ids))}))
    else:
        print(f"deleted {deleted} image{'s' if deleted != 1 else ''}")
    return OK


def run_whoami(args: argparse.Namespace) -> int:
    with connect(args) as client:
        identity = client.whoami()
    if args.json:
        print(json.dumps(identity.to_json()))
    else:
        role = "admin" if identity.admin else "user"
        print(f"{identity.username} ({role}, {identity.auth}) at {identity.url}")
    return OK


def fail(message: str, code: int) -> int:
    print(f"imagestore: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit code."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except UsageError as error:
        return fail(str(error), USAGE)
    except AuthError as error:
        return fail(f"the service refused the credentials: {error.detail}", USAGE)
    except MissingTags as error:
        return fail(str(error), USAGE)
    except ApiError as error:
        return fail(f"the service answered {error.status}: {error.detail}", FAILED)
    except ImagestoreError as error:
        return fail(str(error), FAILED)
    except KeyboardInterrupt:
        return fail("interrupted; run the same command again to finish", INTERRUPTED)


def command() -> int:
    """Run the `imagestore` console script. Every object its imports made lives until the
    process ends: frozen, they are not walked by the collections of the interpreter's exit,
    which would otherwise take about 4 % of the instructions of a run that has nothing to
    upload."""
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(command())
