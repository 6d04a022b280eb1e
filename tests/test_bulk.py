"""Bulk operations: upload many files at once, bulk tagging, bulk delete, create_missing_tags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from helpers import (
    Auth,
    assert_problem,
    image_bytes,
    image_rows,
    image_tags,
    media_files,
    post_files,
)

NOT_AN_IMAGE = "The file is not an image in an accepted format (JPEG, PNG, GIF, WEBP)."
TOO_MANY_FILES = "Send at most 100 files in the `image` field."
NOTHING_TO_DO = "Give tags to `add`, to `remove` or both."
ADDED_AND_REMOVED = "A tag cannot be both added and removed."


# Helpers


def tag_names(client: FlaskClient, auth: Auth) -> list[str]:
    """Return the name of every tag."""
    return [
        tag["name"] for tag in client.get("/api/tags/?page_size=100", auth=auth).json["results"]
    ]


def tag_creator(client: FlaskClient, auth: Auth, name: str) -> str | None:
    """Return the username of a tag's creator."""
    response = client.get(f"/api/tags/{name}/", auth=auth)
    assert response.status_code == 200, response.json
    return response.json["created_by"]


def exists(client: FlaskClient, auth: Auth, image_id: int) -> bool:
    """Tell whether an image is still there."""
    return client.get(f"/api/images/{image_id}/", auth=auth).status_code == 200


def three_images() -> list[tuple[bytes, str]]:
    """Return three different good images with their filenames."""
    return [
        (image_bytes("PNG"), "one.png"),
        (image_bytes("GIF"), "two.gif"),
        (image_bytes("JPEG"), "three.jpg"),
    ]


@pytest.fixture
def tags(alice: Auth, make_tag: Callable[..., dict[str, Any]]) -> list[str]:
    """Create alice's tags `cat`, `dog` and `sky`."""
    return [make_tag(name, alice)["name"] for name in ("cat", "dog", "sky")]


@pytest.fixture
def photos(alice: Auth, upload: Callable[..., Any], tags: list[str]) -> dict[str, int]:
    """Upload alice's images: `both` tagged cat and dog, `cat` tagged cat, `bare` untagged."""
    ids = {}
    for key, (names, color) in {
        "both": (["cat", "dog"], "red"),
        "cat": (["cat"], "green"),
        "bare": ([], "blue"),
    }.items():
        response = upload(alice, tags=names, content=image_bytes(color=color))
        assert response.status_code == 201, response.json
        ids[key] = response.json["id"]
    return ids


@pytest.fixture
def bobs_photo(bob: Auth, upload: Callable[..., Any], tags: list[str]) -> int:
    """Upload one image of bob's, tagged cat."""
    response = upload(bob, tags=["cat"], content=image_bytes(color="yellow"))
    assert response.status_code == 201, response.json
    return response.json["id"]


# Bulk upload


def test_bulk_upload_is_201_with_a_list_in_the_order_sent(client, alice):
    response = post_files(client, alice, three_images())

    assert response.status_code == 201
    assert [image["filename"] for image in response.json] == ["one.png", "two.gif", "three.jpg"]
    assert [image["format"] for image in response.json] == ["PNG", "GIF", "JPEG"]


def test_bulk_upload_gives_every_image_the_shared_tags(client, alice, tags):
    response = post_files(client, alice, three_images(), tags=["cat", "sky"])

    assert [image["tags"] for image in response.json] == [["cat", "sky"]] * 3


def test_bulk_upload_stores_every_image(app, client, alice):
    response = post_files(client, alice, three_images())

    assert image_rows(app) == 3
    assert len(media_files(app)) == 3
    assert all(exists(client, alice, image["id"]) for image in response.json)


def test_bulk_upload_of_the_same_bytes_twice_stores_two_images_and_one_file(app, client, alice):
    files = [(image_bytes(), "first.png"), (image_bytes(), "second.png")]

    response = post_files(client, alice, files)

    assert response.status_code == 201
    assert len({image["id"] for image in response.json}) == 2
    assert len(media_files(app)) == 1


def test_bulk_upload_counts_the_shared_tag_once_per_image(client, alice, tags):
    post_files(client, alice, three_images(), tags=["cat"])

    assert client.get("/api/tags/cat/", auth=alice).json["image_count"] == 3


def test_bulk_upload_with_a_bad_file_is_400_listing_it_by_position_and_filename(
    client, alice, tags
):
    files = [(image_bytes(), "good.png"), (b"just words\n", "notes.png"), (image_bytes(), "b.png")]

    response = post_files(client, alice, files, tags=["cat"])

    assert_problem(response, 400)
    assert response.json["errors"] == {"files": {"image": {"1": [f"notes.png: {NOT_AN_IMAGE}"]}}}
    assert "#1 notes.png" in response.json["detail"]


def test_bulk_upload_lists_every_bad_file(client, alice):
    files = [(b"", "empty.png"), (image_bytes(), "good.png"), (b"words", "words.jpg")]

    response = post_files(client, alice, files)

    assert_problem(response, 400)
    assert response.json["errors"]["files"]["image"] == {
        "0": [f"empty.png: {NOT_AN_IMAGE}"],
        "2": [f"words.jpg: {NOT_AN_IMAGE}"],
    }
    assert "#0 empty.png" in response.json["detail"]
    assert "#2 words.jpg" in response.json["detail"]


def test_bulk_upload_with_a_bad_file_stores_nothing(app, client, alice, tags):
    files = [(image_bytes(), "good.png"), (b"just words\n", "notes.png"), (image_bytes("GIF"), "b")]

    post_files(client, alice, files, tags=["cat"])

    assert image_rows(app) == 0
    assert media_files(app) == []
    assert client.get("/api/tags/cat/", auth=alice).json["image_count"] == 0


def test_bulk_upload_with_a_bad_file_creates_no_missing_tag(client, alice):
    files = [(image_bytes(), "good.png"), (b"just words\n", "notes.png")]

    post_files(client, alice, files, tags=["new"], query="?create_missing_tags=true")

    assert tag_names(client, alice) == []


def test_bulk_upload_of_100_files_is_201(app, client, alice):
    files = [(image_bytes(), f"{number}.png") for number in range(100)]

    response = post_files(client, alice, files)

    assert response.status_code == 201
    assert len(response.json) == 100
    assert image_rows(app) == 100


def test_bulk_upload_of_101_files_is_400(client, alice):
    files = [(image_bytes(), f"{number}.png") for number in range(101)]

    response = post_files(client, alice, files)

    assert_problem(response, 400)
    assert response.json["errors"] == {"files": {"image": [TOO_MANY_FILES]}}


def test_bulk_upload_of_101_files_stores_nothing(app, client, alice):
    files = [(image_bytes(), f"{number}.png") for number in range(101)]

    post_files(client, alice, files)

    assert image_rows(app) == 0
    assert media_files(app) == []


def test_bulk_upload_size_limit_applies_to_the_whole_request(make_app, alice):
    app = make_app(MAX_UPLOAD_MB=0.001)  # about 1 KB; each file is under 100 bytes
    files = [(image_bytes(), f"{number}.png") for number in range(20)]

    response = post_files(app.test_client(), alice, files)

    assert_problem(response, 413)
    assert image_rows(app) == 0
    assert media_files(app) == []


def test_bulk_upload_with_an_unknown_tag_is_400_and_stores_nothing(app, client, alice, tags):
    response = post_files(client, alice, three_images(), tags=["cat", "unicorn"])

    assert_problem(response, 400)
    assert "unicorn" in response.json["detail"]
    assert image_rows(app) == 0
    assert media_files(app) == []


def test_bulk_upload_with_create_missing_tags_creates_them(client, alice, tags):
    response = post_files(
        client, alice, three_images(), tags=["cat", "Unicorn"], query="?create_missing_tags=true"
    )

    assert response.status_code == 201
    assert [image["tags"] for image in response.json] == [["cat", "Unicorn"]] * 3
    assert client.get("/api/tags/unicorn/", auth=alice).json["image_count"] == 3


def test_bulk_upload_with_create_missing_tags_makes_the_uploader_their_creator(
    client, alice, bob, tags
):
    post_files(client, bob, three_images(), tags=["unicorn"], query="?create_missing_tags=true")

    assert tag_creator(client, alice, "unicorn") == "bob"


# Bulk tag


def test_bulk_tag_adds_and_removes_in_one_call(client, alice, photos):
    response = client.post(
        "/api/images/bulk-tag/",
        json={"images": [photos["both"], photos["cat"]], "add": ["sky"], "remove": ["cat"]},
        auth=alice,
    )

    assert response.status_code == 200
    assert image_tags(client, alice, photos["both"]) == ["dog", "sky"]
    assert image_tags(client, alice, photos["cat"]) == ["sky"]


def test_bulk_tag_answers_with_the_images_in_the_order_given(client, alice, photos):
    ids = [photos["bare"], photos["both"]]

    response = client.post(
        "/api/images/bulk-tag/", json={"images": ids, "add": ["sky"]}, auth=alice
    )

    assert [image["id"] for image in response.json] == ids
    assert [image["tags"] for image in response.json] == [["sky"], ["cat", "dog", "sky"]]


def test_bulk_tag_leaves_other_images_alone(client, alice, photos):
    client.post(
        "/api/images/bulk-tag/",
        json={"images": [photos["both"]], "add": ["sky"], "remove": ["cat"]},
        auth=alice,
    )

    assert image_tags(client, alice, photos["cat"]) == ["cat"]
    assert image_tags(client, alice, photos["bare"]) == []


def test_bulk_tag_adding_a_tag_an_image_has_keeps_one_link(client, alice, photos):
    response = client.post(
        "/api/images/bulk-tag/", json={"images": [photos["both"]], "add": ["CAT"]}, auth=alice
    )

    assert response.status_code == 200
    assert image_tags(client, alice, photos["both"]) == ["cat", "dog"]
    assert client.get("/api/tags/cat/", auth=alice).json["image_count"] == 2


def test_bulk_tag_removing_a_tag_an_image_lacks_is_fine(client, alice, photos):
    response = client.post(
        "/api/images/bulk-tag/", json={"images": [photos["bare"]], "remove": ["dog"]}, auth=alice
    )

    assert response.status_code == 200
    assert image_tags(client, alice, photos["bare"]) == []


def test_bulk_tag_with_duplicate_ids_is_fine(client, alice, photos):
    ids = [photos["bare"], photos["bare"]]

    response = client.post(
        "/api/images/bulk-tag/", json={"images": ids, "add": ["sky"]}, auth=alice
    )

    assert response.status_code == 200
    assert image_tags(client, alice, photos["bare"]) == ["sky"]


def test_bulk_tag_with_unknown_ids_is_400_naming_them(client, alice, photos):
    ids = [photos["bare"], 998, 999]

    response = client.post(
        "/api/images/bulk-tag/", json={"images": ids, "add": ["sky"]}, auth=alice
    )

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"images": ["Unknown images: 998, 999."]}}
    assert "998, 999" in response.json["detail"]


def test_bulk_tag_with_unknown_ids_changes_nothing(client, alice, photos):
    ids = [photos["bare"], photos["both"], 999]

    client.post(
        "/api/images/bulk-tag/", json={"images": ids, "add": ["sky"], "remove": ["cat"]}, auth=alice
    )

    assert image_tags(client, alice, photos["bare"]) == []
    assert image_tags(client, alice, photos["both"]) == ["cat", "dog"]


@pytest.mark.parametrize("field", ["add", "remove"])
def test_bulk_tag_with_unknown_tags_is_400_naming_them(client, alice, photos, field):
    body = {"images": [photos["both"]], field: ["sky", "unicorn", "dragon"]}

    response = client.post("/api/images/bulk-tag/", json=body, auth=alice)

    assert_problem(response, 400)
    assert "unicorn, dragon" in response.json["detail"]
    assert list(response.json["errors"]) == ["json"]


def test_bulk_tag_with_an_unknown_tag_changes_nothing(client, alice, photos):
    body = {"images": [photos["both"]], "add": ["sky", "unicorn"], "remove": ["cat"]}

    client.post("/api/images/bulk-tag/", json=body, auth=alice)

    assert image_tags(client, alice, photos["both"]) == ["cat", "dog"]
    assert tag_names(client, alice) == ["cat", "dog", "sky"]


def test_bulk_tag_with_create_missing_tags_creates_them(client, alice, photos):
    body = {"images": [photos["both"], photos["bare"]], "add": ["sky", "Unicorn"]}

    response = client.post("/api/images/bulk-tag/?create_missing_tags=true", json=body, auth=alice)

    assert response.status_code == 200
    assert image_tags(client, alice, photos["bare"]) == ["sky", "Unicorn"]
    assert client.get("/api/tags/unicorn/", auth=alice).json["image_count"] == 2


def test_bulk_tag_with_create_missing_tags_makes_the_caller_their_creator(
    client, alice, admin, photos
):
    body = {"images": [photos["bare"]], "add": ["unicorn"]}

    client.post("/api/images/bulk-tag/?create_missing_tags=true", json=body, auth=admin)

    assert tag_creator(client, alice, "unicorn") == "root"


def test_bulk_tag_create_missing_tags_does_not_create_tags_to_remove(client, alice, photos):
    body = {"images": [photos["both"]], "add": ["unicorn"], "remove": ["dragon"]}

    response = client.post("/api/images/bulk-tag/?create_missing_tags=true", json=body, auth=alice)

    assert_problem(response, 400)
    assert "dragon" in response.json["detail"]
    assert tag_names(client, alice) == ["cat", "dog", "sky"]


def test_bulk_tag_of_another_users_images_is_403_naming_them(client, alice, bob, photos):
    ids = [photos["both"], photos["cat"]]

    response = client.post("/api/images/bulk-tag/", json={"images": ids, "add": ["sky"]}, auth=bob)

    assert_problem(response, 403)
    assert response.json["images"] == ids
    assert f"{ids[0]}, {ids[1]}" in response.json["detail"]


def test_bulk_tag_refused_for_some_images_names_only_those(client, alice, bob, photos, bobs_photo):
    ids = [bobs_photo, photos["cat"]]

    response = client.post("/api/images/bulk-tag/", json={"images": ids, "add": ["sky"]}, auth=bob)

    assert_problem(response, 403)
    assert response.json["images"] == [photos["cat"]]


def test_bulk_tag_refused_for_some_images_changes_none(client, alice, bob, photos, bobs_photo):
    ids = [bobs_photo, photos["cat"]]

    client.post(
        "/api/images/bulk-tag/", json={"images": ids, "add": ["sky"], "remove": ["cat"]}, auth=bob
    )

    assert image_tags(client, bob, bobs_photo) == ["cat"]
    assert image_tags(client, bob, photos["cat"]) == ["cat"]


def test_bulk_tag_by_an_admin_of_other_users_images_works(client, alice, admin, photos, bobs_photo):
    ids = [bobs_photo, photos["bare"]]

    response = client.post(
        "/api/images/bulk-tag/", json={"images": ids, "add": ["sky"]}, auth=admin
    )

    assert response.status_code == 200
    assert image_tags(client, alice, bobs_photo) == ["cat", "sky"]
    assert image_tags(client, alice, photos["bare"]) == ["sky"]


@pytest.mark.parametrize(
    "changes",
    [{}, {"add": []}, {"remove": []}, {"add": [], "remove": []}, {"add": ""}],
    ids=["neither", "empty-add", "empty-remove", "both-empty", "empty-string"],
)
def test_bulk_tag_without_tags_to_add_or_remove_is_400(client, alice, photos, changes):
    body = {"images": [photos["both"]]} | changes

    response = client.post("/api/images/bulk-tag/", json=body, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"add": [NOTHING_TO_DO]}}


@pytest.mark.parametrize(("added", "removed"), [("sky", "sky"), ("Sky", " sky ")])
def test_bulk_tag_adding_and_removing_the_same_tag_is_400(client, alice, photos, added, removed):
    body = {"images": [photos["both"]], "add": [added, "dog"], "remove": [removed]}

    response = client.post("/api/images/bulk-tag/", json=body, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"remove": [ADDED_AND_REMOVED]}}


@pytest.mark.parametrize(
    "images",
    [None, [], "1", [1.5], ["1"], [True], [0], [-1], [2**31]],
    ids=["missing", "empty", "string", "float", "string-id", "bool", "zero", "negative", "huge"],
)
def test_bulk_tag_with_bad_image_ids_is_400(client, alice, photos, images):
    body = {"add": ["sky"]} | ({} if images is None else {"images": images})

    response = client.post("/api/images/bulk-tag/", json=body, auth=alice)

    assert_problem(response, 400)
    assert list(response.json["errors"]["json"]) == ["images"]


def test_anonymous_bulk_tag_is_401(client, alice, photos):
    response = client.post(
        "/api/images/bulk-tag/", json={"images": [photos["bare"]], "add": ["sky"]}
    )

    assert_problem(response, 401)
    assert image_tags(client, alice, photos["bare"]) == []


# Bulk delete


def test_bulk_delete_is_204_without_a_body(client, alice, photos):
    ids = [photos["both"], photos["cat"]]

    response = client.post("/api/images/bulk-delete/", json={"images": ids}, auth=alice)

    assert response.status_code == 204
    assert response.data == b""


def test_bulk_delete_removes_the_images(app, client, alice, photos):
    ids = [photos["both"], photos["cat"]]

    client.post("/api/images/bulk-delete/", json={"images": ids}, auth=alice)

    assert not exists(client, alice, photos["both"])
    assert not exists(client, alice, photos["cat"])
    assert exists(client, alice, photos["bare"])
    assert image_rows(app) == 1


def test_bulk_delete_removes_their_files(app, client, alice, photos):
    client.post("/api/images/bulk-delete/", json={"images": list(photos.values())}, auth=alice)

    assert media_files(app) == []


def test_bulk_delete_keeps_a_file_another_image_shares(app, client, alice, upload):
    content = image_bytes(color="purple")
    doomed = [upload(alice, content=content).json["id"] for _ in range(2)]
    kept = upload(alice, content=content).json["id"]

    client.post("/api/images/bulk-delete/", json={"images": doomed}, auth=alice)

    assert len(media_files(app)) == 1
    assert client.get(f"/api/images/{kept}/file", auth=alice).data == content


def test_bulk_delete_with_duplicate_ids_is_fine(client, alice, photos):
    ids = [photos["cat"], photos["cat"]]

    response = client.post("/api/images/bulk-delete/", json={"images": ids}, auth=alice)

    assert response.status_code == 204
    assert not exists(client, alice, photos["cat"])


def test_bulk_delete_of_another_users_images_is_403_naming_them(
    client, alice, bob, photos, bobs_photo
):
    ids = [bobs_photo, photos["both"], photos["bare"]]

    response = client.post("/api/images/bulk-delete/", json={"images": ids}, auth=bob)

    assert_problem(response, 403)
    assert response.json["images"] == [photos["both"], photos["bare"]]
    assert f"{photos['both']}, {photos['bare']}" in response.json["detail"]


def test_refused_bulk_delete_deletes_nothing(app, client, alice, bob, photos, bobs_photo):
    ids = [bobs_photo, photos["both"]]

    client.post("/api/images/bulk-delete/", json={"images": ids}, auth=bob)

    assert exists(client, bob, bobs_photo)
    assert exists(client, bob, photos["both"])
    assert image_rows(app) == 4
    assert len(media_files(app)) == 4


def test_bulk_delete_with_unknown_ids_is_400_naming_them(client, alice, photos):
    response = client.post(
        "/api/images/bulk-delete/", json={"images": [photos["cat"], 999]}, auth=alice
    )

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"images": ["Unknown images: 999."]}}


def test_bulk_delete_with_unknown_ids_deletes_nothing(app, client, alice, photos):
    client.post("/api/images/bulk-delete/", json={"images": [photos["cat"], 999]}, auth=alice)

    assert exists(client, alice, photos["cat"])
    assert len(media_files(app)) == 3


def test_bulk_delete_by_an_admin_of_other_users_images_works(
    app, client, alice, admin, photos, bobs_photo
):
    ids = [bobs_photo, photos["both"]]

    response = client.post("/api/images/bulk-delete/", json={"images": ids}, auth=admin)

    assert response.status_code == 204
    assert not exists(client, alice, bobs_photo)
    assert not exists(client, alice, photos["both"])
    assert len(media_files(app)) == 2


def test_bulk_delete_keeps_the_tags(client, alice, photos):
    client.post("/api/images/bulk-delete/", json={"images": list(photos.values())}, auth=alice)

    assert tag_names(client, alice) == ["cat", "dog", "sky"]


@pytest.mark.parametrize(
    "body",
    [{}, {"images": []}, {"images": ["1"]}, {"images": 1}],
    ids=["missing", "empty", "string-id", "not-a-list"],
)
def test_bulk_delete_with_bad_image_ids_is_400(client, alice, photos, body):
    response = client.post("/api/images/bulk-delete/", json=body, auth=alice)

    assert_problem(response, 400)
    assert list(response.json["errors"]["json"]) == ["images"]


def test_anonymous_bulk_delete_is_401(client, alice, photos):
    response = client.post("/api/images/bulk-delete/", json={"images": [photos["bare"]]})

    assert_problem(response, 401)
    assert exists(client, alice, photos["bare"])


# create_missing_tags on PUT and PATCH of an image


@pytest.mark.parametrize("method", ["put", "patch"])
def test_retag_with_create_missing_tags_creates_them(client, alice, photos, method):
    url = f"/api/images/{photos['bare']}/?create_missing_tags=true"

    response = getattr(client, method)(url, json={"tags": ["cat", "Unicorn"]}, auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == ["cat", "Unicorn"]
    assert client.get("/api/tags/unicorn/", auth=alice).json["image_count"] == 1


@pytest.mark.parametrize("method", ["put", "patch"])
def test_retag_with_create_missing_tags_makes_the_caller_their_creator(
    client, alice, admin, photos, method
):
    url = f"/api/images/{photos['bare']}/?create_missing_tags=true"

    getattr(client, method)(url, json={"tags": ["unicorn"]}, auth=admin)

    assert tag_creator(client, alice, "unicorn") == "root"


@pytest.mark.parametrize("method", ["put", "patch"])
def test_retag_with_create_missing_tags_reuses_a_tag_in_another_case(client, alice, photos, method):
    url = f"/api/images/{photos['bare']}/?create_missing_tags=true"

    response = getattr(client, method)(url, json={"tags": ["CAT", " Sky "]}, auth=alice)

    assert response.json["tags"] == ["cat", "sky"]
    assert tag_names(client, alice) == ["cat", "dog", "sky"]


def test_retag_with_create_missing_tags_from_a_form_creates_them(client, alice, photos):
    url = f"/api/images/{photos['bare']}/?create_missing_tags=true"

    response = client.patch(url, data={"tags": ["unicorn", "dog"]}, auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == ["dog", "unicorn"]


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize("query", ["", "?create_missing_tags=false"])
def test_retag_without_create_missing_tags_is_400_and_creates_none(
    client, alice, photos, method, query
):
    url = f"/api/images/{photos['bare']}/{query}"

    response = getattr(client, method)(url, json={"tags": ["cat", "unicorn"]}, auth=alice)

    assert_problem(response, 400)
    assert "unicorn" in response.json["detail"]
    assert tag_names(client, alice) == ["cat", "dog", "sky"]
    assert image_tags(client, alice, photos["bare"]) == []


def test_refused_retag_with_create_missing_tags_creates_none(client, alice, bob, photos):
    url = f"/api/images/{photos['bare']}/?create_missing_tags=true"

    response = client.patch(url, json={"tags": ["unicorn"]}, auth=bob)

    assert_problem(response, 403)
    assert tag_names(client, alice) == ["cat", "dog", "sky"]


def test_retag_with_a_bad_create_missing_tags_is_400(client, alice, photos):
    url = f"/api/images/{photos['bare']}/?create_missing_tags=perhaps"

    response = client.patch(url, json={"tags": ["unicorn"]}, auth=alice)

    assert_problem(response, 400)
    assert list(response.json["errors"]["query"]) == ["create_missing_tags"]
