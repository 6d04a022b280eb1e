"""Ids are never given twice, and image lists are walked by cursor: each test sends an attack."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import PASSWORD, POSTGRES_URL, image_bytes
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import joinedload, selectinload

from imagestore.db import db
from imagestore.images.schemas import image_schema
from imagestore.models import Image, Tag, User

SQLITE_ONLY = pytest.mark.skipif(POSTGRES_URL is not None, reason="SQLite's own behaviour")
# The last revision under which SQLite gave a deleted row's id to the next row.
BEFORE_AUTOINCREMENT = "4aada2bbcdcf"
TABLES = ("users", "tags", "images", "image_tags", "tokens", "trackings")
COLORS = ("red", "green", "blue", "white", "black", "yellow", "purple", "orange", "gray", "pink")


def upload_new(upload: Callable[..., Any], auth: tuple[str, str], number: int, **kwargs) -> int:
    """Upload an image of its own content and return its id."""
    content = image_bytes(size=(8 + number, 6), color=COLORS[number % len(COLORS)])
    response = upload(auth, content=content, **kwargs)
    assert response.status_code == 201, response.json
    return response.json["id"]


def newest_tracking_id(client: FlaskClient, admin: tuple[str, str]) -> int:
    """Return the id of the newest tracking row (reading the log leaves no row)."""
    return client.get("/api/trackings/?cursor=&page_size=1", auth=admin).json["results"][0]["id"]


# Ids are never given twice


def test_the_id_of_a_deleted_newest_image_is_not_given_again(client, alice, upload):
    """Attack: delete the newest image and upload another, which got the same id on SQLite:
    a client's cached download (`max-age=86400`) and the tracking rows named the old image."""
    upload_new(upload, alice, 1)
    newest = upload_new(upload, alice, 2)
    assert client.delete(f"/api/images/{newest}/", auth=alice).status_code == 204

    again = upload_new(upload, alice, 3)

    assert again > newest
    assert client.get(f"/api/images/{newest}/", auth=alice).status_code == 404


def test_the_id_of_a_bulk_deleted_newest_image_is_not_given_again(client, alice, upload):
    """Attack: the newest images deleted in bulk, then an upload of several at once."""
    kept = upload_new(upload, alice, 1)
    newest = [upload_new(upload, alice, number) for number in (2, 3)]
    response = client.post("/api/images/bulk-delete/", json={"images": newest}, auth=alice)
    assert response.status_code == 204

    again = upload_new(upload, alice, 4)

    assert again > max(newest) > kept


def test_the_id_of_a_deleted_newest_tag_is_not_given_again(app, client, alice, make_tag):
    """Attack: delete the newest tag and create another (tag ids are not shown: read the row)."""
    make_tag("cat", alice)
    make_tag("dog", alice)
    with app.app_context():
        newest = db.session.scalar(select(Tag.id).where(Tag.name == "dog"))
    assert client.delete("/api/tags/dog/", auth=alice).status_code == 204

    make_tag("fish", alice)

    with app.app_context():
        assert db.session.scalar(select(Tag.id).where(Tag.name == "fish")) > newest


def test_the_id_of_a_revoked_newest_token_is_not_given_again(client, alice):
    """Attack: revoke the newest token and create another: a script that revokes the old
    token by its id later would revoke the new one."""
    client.post("/api/tokens/", json={"name": "one"}, auth=alice)
    newest = client.post("/api/tokens/", json={"name": "two"}, auth=alice).json["id"]
    assert client.delete(f"/api/tokens/{newest}/", auth=alice).status_code == 204

    again = client.post("/api/tokens/", json={"name": "three"}, auth=alice).json["id"]

    assert again > newest


def test_the_id_of_a_token_revoked_by_the_cli_is_not_given_again(client, runner, alice):
    """Attack: the newest token revoked from the command line, then a new one created."""
    newest = client.post("/api/tokens/", json={"name": "one"}, auth=alice).json["id"]
    result = runner.invoke(args=["tokens", "revoke", str(newest)])
    assert result.exit_code == 0, result.output

    again = client.post("/api/tokens/", json={"name": "two"}, auth=alice).json["id"]

    assert again > newest


def test_the_id_of_a_pruned_newest_tracking_row_is_not_given_again(client, runner, alice, admin):
    """Attack: prune the whole log, newest row included; the next row got id 1 again."""
    client.get("/api/", auth=alice)
    newest = newest_tracking_id(client, admin)
    result = runner.invoke(args=["trackings", "prune", "--older-than", "0h"])
    assert result.exit_code == 0, result.output

    client.get("/api/", auth=alice)

    assert newest_tracking_id(client, admin) > newest


def test_the_id_of_a_deleted_newest_user_is_not_given_again(app, runner):
    """Attack: the newest user deleted in the database (no route or command deletes users),
    then another created: the tracking rows of the old one would name the new one."""
    for name in ("carol", "dave"):
        result = runner.invoke(args=["users", "create", name, "--password", PASSWORD])
        assert result.exit_code == 0, result.output
    with app.app_context():
        newest = db.session.scalar(select(User).where(User.username == "dave"))
        dave = newest.id
        db.session.delete(newest)
        db.session.commit()

    runner.invoke(args=["users", "create", "erin", "--password", PASSWORD])

    with app.app_context():
        assert db.session.scalar(select(User.id).where(User.username == "erin")) > dave


# The migration that makes ids monotonic


def table_rows(app: Flask) -> dict[str, list[tuple]]:
    """Return every row of every table, in key order."""
    with app.app_context(), db.engine.connect() as connection:
        return {
            table: [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))]
            for table in TABLES
        }


def constraints(app: Flask) -> dict[str, Any]:
    """Return each table's columns, keys, foreign keys (with their ON DELETE), indexes."""
    with app.app_context():
        inspector = inspect(db.engine)
        return {
            table: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                inspector.get_pk_constraint(table)["constrained_columns"],
                sorted(inspector.get_foreign_keys(table), key=lambda fk: fk["name"]),
                sorted(inspector.get_indexes(table), key=lambda index: index["name"]),
                sorted(inspector.get_unique_constraints(table), key=lambda uq: uq["name"]),
            )
            for table in TABLES
        }


@pytest.fixture
def before_autoincrement(make_app, empty_database_url) -> Flask:
    """Return an app on a database at the revision before ids were kept, with users."""
    app = make_app(DATABASE_URL=empty_database_url)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "upgrade", BEFORE_AUTOINCREMENT])
    assert result.exit_code == 0, result.output
    for name in ("alice", "bob"):
        result = runner.invoke(args=["users", "create", name, "--password", PASSWORD])
        assert result.exit_code == 0, result.output
    return app


def test_upgrade_keeps_every_row_and_gives_no_deleted_id_again(before_autoincrement):
    """Attack: the newest image and token deleted before the upgrade, and a failed request
    naming the largest id; the upgrade copies every table (links, tokens, log rows kept, none
    cascaded away), and the next image and token get the id after the deleted ones, not the
    deleted ones' nor one at the end of the range."""
    app, alice = before_autoincrement, ("alice", PASSWORD)
    client = app.test_client()
    for name in ("cat", "dog"):
        assert client.post("/api/tags/", json={"name": name}, auth=alice).status_code == 201
    for number in range(3):
        image = io.BytesIO(image_bytes(color=COLORS[number]))
        data = {"image": (image, "a.png"), "tags": ["cat", "dog"]}
        assert client.post("/api/images/", data=data, auth=alice).status_code == 201
    tokens = [client.post("/api/tokens/", json={"name": n}, auth=alice).json for n in "ab"]
    deleted_image, deleted_token = 3, tokens[-1]["id"]
    assert client.delete(f"/api/images/{deleted_image}/", auth=alice).status_code == 204
    assert client.delete(f"/api/tokens/{deleted_token}/", auth=alice).status_code == 204
    assert client.get("/api/images/2147483647/", auth=alice).status_code == 404
    rows, schema = table_rows(app), constraints(app)

    result = app.test_cli_runner().invoke(args=["db", "upgrade"])

    assert result.exit_code == 0, result.output
    assert table_rows(app) == rows
    assert len(rows["image_tags"]) == 4
    assert len(rows["tokens"]) == 1
    assert constraints(app) == schema
    data = {"image": (io.BytesIO(image_bytes(color="pink")), "b.png")}
    assert client.post("/api/images/", data=data, auth=alice).json["id"] == deleted_image + 1
    token = client.post("/api/tokens/", json={"name": "c"}, auth=alice).json
    assert token["id"] == deleted_token + 1


@SQLITE_ONLY
def test_upgrade_leaves_foreign_keys_enforced(before_autoincrement):
    """Attack: the upgrade turns foreign keys off to copy tables; a connection handed back
    with them still off would let a deleted user's tokens live on."""
    app = before_autoincrement

    result = app.test_cli_runner().invoke(args=["db", "upgrade"])

    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1


@SQLITE_ONLY
def test_upgrade_refuses_a_database_with_rows_referring_to_no_row(before_autoincrement):
    """Attack: a tag link to an image that does not exist (written with foreign keys off);
    the upgrade stops, names it and changes nothing, rather than copying it along."""
    app = before_autoincrement
    with app.app_context(), db.engine.connect() as connection:
        connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        connection.execute(text("INSERT INTO image_tags (image_id, tag_id) VALUES (7, 9)"))
        connection.commit()
        connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")
    with app.app_context(), db.engine.connect() as connection:
        tables_before = connection.execute(text("SELECT sql FROM sqlite_master")).all()

    result = app.test_cli_runner().invoke(args=["db", "upgrade"])

    assert result.exit_code == 1
    assert "image_tags row 1 -> images" in result.output
    with app.app_context(), db.engine.connect() as connection:
        assert connection.execute(text("SELECT sql FROM sqlite_master")).all() == tables_before
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert revision == BEFORE_AUTOINCREMENT


# Walking image lists with a cursor


def walk(
    client: FlaskClient, auth: tuple[str, str], url: str, between: Callable[[int], None]
) -> list[int]:
    """Follow `next` from `url` to the end; call `between(pages read)` before each next page."""
    seen, pages = [], 0
    while url:
        response = client.get(url, auth=auth)
        assert response.status_code == 200, response.json
        seen += [image["id"] for image in response.json["results"]]
        url, pages = response.json["next"], pages + 1
        if url:
            between(pages)
    return seen


@pytest.fixture
def busy_list(client, alice, upload) -> tuple[list[int], Callable[[int], None], list[int]]:
    """Upload 9 images; return their ids, a step that uploads and deletes between pages (a
    new image after the first page, the two newest seen and the oldest after the second),
    and the ids it deleted."""
    ids = [upload_new(upload, alice, number) for number in range(9)]
    deleted = []

    def between(pages: int) -> None:
        if pages == 1:
            upload_new(upload, alice, 9)
        if pages == 2:
            for image_id in (ids[-1], ids[-2], ids[0]):
                assert client.delete(f"/api/images/{image_id}/", auth=alice).status_code == 204
                deleted.append(image_id)

    return ids, between, deleted


def test_a_cursor_walk_sees_each_image_once_while_others_come_and_go(client, alice, busy_list):
    """Attack: images uploaded and deleted between the pages of a walk by cursor; every image
    that existed throughout is seen exactly once, newest first."""
    ids, between, deleted = busy_list

    seen = walk(client, alice, "/api/images/?cursor=&page_size=3", between)

    throughout = [image_id for image_id in reversed(ids) if image_id not in deleted]
    assert [image_id for image_id in seen if image_id in throughout] == throughout
    assert seen == sorted(set(seen), reverse=True)  # each once, in order


def test_a_page_walk_duplicates_and_skips_while_others_come_and_go(client, alice, busy_list):
    """The problem cursors solve: the same changes between `page=` pages show an image twice
    (an upload pushed it onto the next page) and never show another (deletes pulled it back)."""
    ids, between, deleted = busy_list

    seen = walk(client, alice, "/api/images/?page=1&page_size=3", between)

    throughout = {image_id for image_id in ids if image_id not in deleted}
    assert [image_id for image_id, times in Counter(seen).items() if times > 1] == [ids[-3]]
    assert throughout - set(seen) == {ids[2], ids[3]}


def test_a_cursor_page_has_no_count_and_keeps_the_filters(client, alice, upload, make_tag):
    """Attack: a filtered walk whose `next` dropped the filter, or counted every row."""
    make_tag("cat", alice)
    cats = [upload_new(upload, alice, n, tags=["cat"] if n % 2 else []) for n in range(7)][1::2]

    first = client.get("/api/images/?cursor=&tags=cat&page_size=2", auth=alice).json
    second = client.get(first["next"], auth=alice).json

    assert first["count"] is None
    assert first["previous"] is None
    assert [image["id"] for image in first["results"]] == cats[:0:-1]
    assert "tags=cat" in first["next"]
    assert "page_size=2" in first["next"]
    assert f"cursor={cats[1]}" in first["next"]
    assert [image["id"] for image in second["results"]] == [cats[0]]
    assert second["next"] is None


def test_a_cursor_walks_oldest_first_and_picks_up_only_newer_images(client, alice, upload):
    """Attack: a script that syncs new images by remembering the last id it saw must get the
    images uploaded since, oldest first, and none it already had."""
    ids = [upload_new(upload, alice, number) for number in range(5)]

    first = client.get("/api/images/?cursor=&ordering=id&page_size=3", auth=alice).json
    later = upload_new(upload, alice, 5)
    rest = client.get(first["next"], auth=alice).json
    since = client.get(f"/api/images/?cursor={ids[-1]}&ordering=id", auth=alice).json

    assert [image["id"] for image in first["results"]] == ids[:3]
    assert "ordering=id" in first["next"]
    assert [image["id"] for image in rest["results"]] == [*ids[3:], later]
    assert rest["next"] is None
    assert [image["id"] for image in since["results"]] == [later]


def test_a_cursor_past_every_image_is_an_empty_page(client, alice, upload):
    """Attack: a cursor below the first id: an empty last page, not an error or a 404."""
    upload_new(upload, alice, 1)

    page = client.get("/api/images/?cursor=1", auth=alice).json

    assert page == {"count": None, "next": None, "previous": None, "results": []}


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "1e3", " ", str(2**63), "9" * 30])
def test_a_bad_cursor_is_400(client, alice, cursor):
    """Attack: cursors that are no id (text, negative, fractional, past 64 bits)."""
    response = client.get("/api/images/", query_string={"cursor": cursor}, auth=alice)

    assert response.status_code == 400
    assert list(response.json["errors"]["query"]) == ["cursor"]


@pytest.mark.parametrize("ordering", ["-created_at", "created_at", "size", "-size"])
def test_a_cursor_with_an_ordering_it_cannot_follow_is_400(client, alice, ordering):
    """Attack: a walk by size or date with an id cursor would skip and repeat images."""
    response = client.get(f"/api/images/?cursor=&ordering={ordering}", auth=alice)

    assert response.status_code == 400
    assert "ordering=-id" in response.json["errors"]["query"]["ordering"][0]


def test_a_cursor_page_is_what_the_schema_dumps(app, client, alice, bob, upload, make_tag):
    """Attack on the fast path: a cursor page written from rows must equal `ImageSchema`'s
    dump of the same images (tags in order, an uploader gone, URLs)."""
    for name in ("Zebra", "apple"):
        make_tag(name, alice)
    upload_new(upload, alice, 1, tags=["Zebra", "apple"])
    upload_new(upload, bob, 2)
    with app.app_context():
        db.session.execute(text("UPDATE images SET created_by_id = NULL WHERE id = 2"))
        db.session.commit()

    page = client.get("/api/images/?cursor=", auth=alice).json

    with app.test_request_context("/api/images/"):
        query = (
            select(Image)
            .order_by(Image.id.desc())
            .options(selectinload(Image.tags), joinedload(Image.created_by))
        )
        expected = image_schema.dump(db.session.scalars(query).all(), many=True)
    assert page["results"] == expected
    assert [image["created_by"] for image in expected] == [None, "alice"]


def test_the_openapi_document_describes_the_cursor(client):
    """Attack (on generated clients): a parameter missing from the document cannot be sent."""
    document = client.get("/api/openapi.json").json
    parameters = document["paths"]["/api/images/"]["get"]["parameters"]
    by_name = {parameter["name"]: parameter for parameter in parameters}

    assert by_name["cursor"]["in"] == "query"
    assert by_name["cursor"]["schema"]["type"] == "integer"
    assert "Keyset" in by_name["cursor"]["description"]
    assert by_name["ordering"]["schema"]["default"] == "-created_at"
