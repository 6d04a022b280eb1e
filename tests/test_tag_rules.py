"""Tag rules: normalized names, case-insensitive lookups everywhere, merge, and list ordering."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import Auth, assert_problem, image_tags, names, tagged_image
from werkzeug.test import TestResponse

from imagestore.db import db
from imagestore.models import Tag, fold_name

DECOMPOSED = "cafe\u0301"  # "e" followed by a combining acute accent
COMPOSED = "caf\u00e9"  # the precomposed "é"


# Helpers


def all_tag_names(client: FlaskClient, auth: Auth) -> list[str]:
    """Return the name of every tag, in the list's default order."""
    return names(client.get("/api/tags/?page_size=100", auth=auth))


def image_ids(response: TestResponse) -> list[int]:
    """Return the ids of one page of the image list, in order."""
    return [image["id"] for image in response.json["results"]]


def tag_url(name: str) -> str:
    """Return the path of a tag, its name percent-encoded."""
    return f"/api/tags/{quote(name, safe='')}/"


def set_tag_created_at(app: Flask, name: str, when: datetime) -> None:
    """Give a tag another creation time, which the API cannot set."""
    with app.app_context():
        tag = db.session.scalar(db.select(Tag).where(Tag.name_folded == fold_name(name)))
        tag.created_at = when
        db.session.commit()


# Normalization


def test_decomposed_and_precomposed_accents_are_one_tag(client, alice, make_tag):
    make_tag(DECOMPOSED, alice)

    response = client.post("/api/tags/", json={"name": COMPOSED}, auth=alice)

    assert_problem(response, 409)
    assert all_tag_names(client, alice) == [COMPOSED]


def test_precomposed_name_finds_a_tag_created_decomposed(client, alice, make_tag):
    make_tag(DECOMPOSED, alice)

    response = client.get(tag_url(COMPOSED), auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == COMPOSED


def test_decomposed_name_finds_a_tag_created_precomposed(client, alice, make_tag):
    make_tag(COMPOSED, alice)

    response = client.get(tag_url(DECOMPOSED), auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == COMPOSED


def test_tag_name_is_trimmed_of_surrounding_whitespace(client, alice):
    response = client.post("/api/tags/", json={"name": " \t cat \n "}, auth=alice)

    assert response.status_code == 201
    assert response.json["name"] == "cat"


def test_tag_name_inner_whitespace_runs_collapse_to_one_space(client, alice):
    response = client.post("/api/tags/", json={"name": "big \t\n  black   cat"}, auth=alice)

    assert response.status_code == 201
    assert response.json["name"] == "big black cat"


def test_tag_name_whitespace_variants_are_one_tag(client, alice, make_tag):
    make_tag("big cat", alice)

    response = client.post("/api/tags/", json={"name": "  big \t cat "}, auth=alice)

    assert_problem(response, 409)


def test_upload_normalizes_a_tag_name_before_looking_it_up(client, alice, make_tag, upload):
    make_tag(f"big {COMPOSED}", alice)

    response = upload(alice, tags=[f"  BIG   {DECOMPOSED.upper()} "])

    assert response.status_code == 201
    assert response.json["tags"] == [f"big {COMPOSED}"]


# Refusals, each with a detail saying why


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "must not be empty"),
        (" \t\n ", "must not be empty"),
        ("x" * 51, "at most 50 characters"),
        ("cat\x01", "control characters"),
        ("cat,dog", "','"),
        ("cat/dog", "'/'"),
    ],
    ids=["empty", "only-whitespace", "51-chars", "control", "comma", "slash"],
)
def test_create_tag_refusal_detail_says_why(client, alice, name, reason):
    response = client.post("/api/tags/", json={"name": name}, auth=alice)

    assert_problem(response, 400)
    assert reason in response.json["detail"]


@pytest.mark.parametrize(
    "separator", ["\x1c", "\x1d", "\x1e", "\x1f"], ids=["fs", "gs", "rs", "us"]
)
def test_create_tag_with_an_information_separator_is_400(client, alice, separator):
    # U+001C..U+001F are control characters, not Unicode whitespace (Python's `\s` says they are).
    response = client.post("/api/tags/", json={"name": f"c{separator}at"}, auth=alice)

    assert_problem(response, 400)
    assert "control characters" in response.json["detail"]


def test_create_tag_with_51_characters_after_trimming_is_400(client, alice):
    response = client.post("/api/tags/", json={"name": f"  {'x' * 51}  "}, auth=alice)

    assert_problem(response, 400)
    assert "at most 50 characters" in response.json["detail"]


def test_create_tag_whose_collapsed_name_has_50_characters_is_201(client, alice):
    name = "a" * 24 + "    " + "b" * 25

    response = client.post("/api/tags/", json={"name": name}, auth=alice)

    assert response.status_code == 201
    assert response.json["name"] == "a" * 24 + " " + "b" * 25


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "must not be empty"), ("x" * 51, "at most 50"), ("a,b", "','"), ("a/b", "'/'")],
    ids=["empty", "51-chars", "comma", "slash"],
)
def test_rename_tag_refusal_detail_says_why(client, alice, make_tag, name, reason):
    make_tag("cat", alice)

    response = client.patch("/api/tags/cat/", json={"name": name}, auth=alice)

    assert_problem(response, 400)
    assert reason in response.json["detail"]


def test_upload_with_a_tag_name_with_a_slash_is_400_saying_why(alice, upload):
    response = upload(alice, tags=["cat/dog"])

    assert_problem(response, 400)
    assert "'/'" in response.json["detail"]


def test_image_filter_with_a_too_long_tag_name_is_400_saying_why(client, alice):
    response = client.get(f"/api/images/?tags={'x' * 51}", auth=alice)

    assert_problem(response, 400)
    assert "at most 50 characters" in response.json["detail"]
    assert list(response.json["errors"]["query"]) == ["tags"]


# Case-insensitive uniqueness


def test_create_tag_differing_only_in_case_and_spaces_is_409(client, alice, make_tag):
    make_tag("Cat", alice)

    response = client.post("/api/tags/", json={"name": "cat "}, auth=alice)

    assert_problem(response, 409)


def test_create_tag_in_another_case_keeps_the_first_spelling(client, alice, make_tag):
    make_tag("Cat", alice)

    client.post("/api/tags/", json={"name": "cat "}, auth=alice)

    assert all_tag_names(client, alice) == ["Cat"]


# Case-insensitive lookups, shown as first written


def test_get_tag_in_another_case_shows_it_as_first_written(client, alice, make_tag):
    make_tag("Big Cat", alice)

    response = client.get(tag_url("  bIG   cAT "), auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "Big Cat"


def test_delete_tag_in_another_case_deletes_it(client, alice, make_tag):
    make_tag("Cat", alice)

    response = client.delete("/api/tags/CAT/", auth=alice)

    assert response.status_code == 204
    assert all_tag_names(client, alice) == []


def test_image_filter_in_another_case_finds_the_tag(client, alice, make_tag, upload):
    make_tag("Cat", alice)
    image_id = tagged_image(upload, alice, ["Cat"])
    tagged_image(upload, alice, [])

    response = client.get("/api/images/?tags=cAT", auth=alice)

    assert image_ids(response) == [image_id]


@pytest.mark.parametrize("param", ["any_tags", "exclude_tags"])
def test_other_tag_filters_in_another_case_find_the_tag(client, alice, make_tag, upload, param):
    make_tag("Cat", alice)
    tagged = tagged_image(upload, alice, ["Cat"])
    untagged = tagged_image(upload, alice, [])

    response = client.get(f"/api/images/?{param}=CAT", auth=alice)

    assert image_ids(response) == ([tagged] if param == "any_tags" else [untagged])


def test_upload_with_a_tag_in_another_case_shows_it_as_first_written(alice, make_tag, upload):
    make_tag("Cat", alice)

    response = upload(alice, tags=["CAT"])

    assert response.status_code == 201
    assert response.json["tags"] == ["Cat"]


def test_patch_image_with_a_tag_in_another_case_shows_it_as_first_written(
    client, alice, make_tag, upload
):
    make_tag("Cat", alice)
    image_id = tagged_image(upload, alice, [])

    response = client.patch(f"/api/images/{image_id}/", json={"tags": ["cat"]}, auth=alice)

    assert response.status_code == 200
    assert response.json["tags"] == ["Cat"]


def test_tagging_in_another_case_adds_no_tag(client, alice, make_tag, upload):
    make_tag("Cat", alice)

    tagged_image(upload, alice, ["CAT", "cat"])

    assert all_tag_names(client, alice) == ["Cat"]


# Rename


def test_rename_keeps_every_image_link(client, alice, make_tag, upload):
    make_tag("cat", alice)
    first = tagged_image(upload, alice, ["cat"])
    second = tagged_image(upload, alice, ["cat"])

    client.patch("/api/tags/cat/", json={"name": "Kitten"}, auth=alice)

    assert image_tags(client, alice, first) == ["Kitten"]
    assert image_tags(client, alice, second) == ["Kitten"]


def test_rename_onto_another_existing_tag_in_another_case_is_409(client, alice, make_tag):
    make_tag("cat", alice)
    make_tag("Dog", alice)

    response = client.patch("/api/tags/cat/", json={"name": " dog "}, auth=alice)

    assert_problem(response, 409)
    assert "Dog" in response.json["detail"]


def test_rename_onto_another_existing_tag_keeps_both_tags_and_links(
    client, alice, make_tag, upload
):
    make_tag("cat", alice)
    make_tag("dog", alice)
    image_id = tagged_image(upload, alice, ["cat"])

    client.put("/api/tags/cat/", json={"name": "DOG"}, auth=alice)

    assert all_tag_names(client, alice) == ["cat", "dog"]
    assert image_tags(client, alice, image_id) == ["cat"]


# Merge


def test_merge_answers_with_the_target_tag(client, alice, make_tag, upload):
    make_tag("kitty", alice)
    make_tag("cat", alice)
    tagged_image(upload, alice, ["kitty"])

    response = client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    assert response.status_code == 200
    assert response.json | {"created_at": None} == {
        "name": "cat",
        "image_count": 1,
        "created_by": "alice",
        "created_at": None,
    }


def test_merge_gives_every_image_of_the_source_the_target(client, alice, make_tag, upload):
    make_tag("kitty", alice)
    make_tag("cat", alice)
    make_tag("sky", alice)
    first = tagged_image(upload, alice, ["kitty"])
    second = tagged_image(upload, alice, ["kitty", "sky"])

    client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    assert image_tags(client, alice, first) == ["cat"]
    assert image_tags(client, alice, second) == ["cat", "sky"]


def test_merge_keeps_one_link_on_images_that_had_both_tags(client, alice, make_tag, upload):
    make_tag("kitty", alice)
    make_tag("cat", alice)
    image_id = tagged_image(upload, alice, ["kitty", "cat"])

    client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    assert image_tags(client, alice, image_id) == ["cat"]


def test_merge_counts_each_image_of_the_target_once(client, alice, make_tag, upload):
    make_tag("kitty", alice)
    make_tag("cat", alice)
    tagged_image(upload, alice, ["kitty"])
    tagged_image(upload, alice, ["kitty", "cat"])
    tagged_image(upload, alice, ["cat"])

    response = client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    assert response.json["image_count"] == 3
    assert client.get("/api/tags/cat/", auth=alice).json["image_count"] == 3


def test_merge_deletes_the_source_tag(client, alice, make_tag):
    make_tag("kitty", alice)
    make_tag("cat", alice)

    client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    assert_problem(client.get("/api/tags/kitty/", auth=alice), 404)
    assert all_tag_names(client, alice) == ["cat"]


def test_merge_leaves_images_of_other_tags_alone(client, alice, make_tag, upload):
    make_tag("kitty", alice)
    make_tag("cat", alice)
    make_tag("dog", alice)
    image_id = tagged_image(upload, alice, ["dog"])

    client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    assert image_tags(client, alice, image_id) == ["dog"]


def test_merged_images_are_found_by_the_target_filter(client, alice, make_tag, upload):
    make_tag("kitty", alice)
    make_tag("cat", alice)
    merged = tagged_image(upload, alice, ["kitty"])
    tagged_image(upload, alice, [])

    client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    assert image_ids(client.get("/api/images/?tags=cat", auth=alice)) == [merged]


def test_merge_looks_both_tags_up_ignoring_case(client, alice, make_tag, upload):
    make_tag("Kitty", alice)
    make_tag("Cat", alice)
    image_id = tagged_image(upload, alice, ["Kitty"])

    response = client.post("/api/tags/KITTY/merge/", json={"into": " cat "}, auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "Cat"
    assert image_tags(client, alice, image_id) == ["Cat"]


def test_merge_frees_the_source_name(client, alice, make_tag):
    make_tag("kitty", alice)
    make_tag("cat", alice)
    client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    response = client.post("/api/tags/", json={"name": "kitty"}, auth=alice)

    assert response.status_code == 201


def test_merge_into_itself_is_400(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.post("/api/tags/cat/merge/", json={"into": "cat"}, auth=alice)

    assert_problem(response, 400)
    assert list(response.json["errors"]["json"]) == ["into"]


def test_merge_into_itself_in_another_case_is_400_and_keeps_the_tag(
    client, alice, make_tag, upload
):
    make_tag("cat", alice)
    image_id = tagged_image(upload, alice, ["cat"])

    response = client.post("/api/tags/cat/merge/", json={"into": "CAT"}, auth=alice)

    assert_problem(response, 400)
    assert image_tags(client, alice, image_id) == ["cat"]


def test_merge_into_an_unknown_tag_is_400_naming_it(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.post("/api/tags/cat/merge/", json={"into": "unicorn"}, auth=alice)

    assert_problem(response, 400)
    assert "unicorn" in response.json["errors"]["json"]["into"][0]


def test_merge_into_an_unknown_tag_keeps_the_source(client, alice, make_tag, upload):
    make_tag("cat", alice)
    image_id = tagged_image(upload, alice, ["cat"])

    client.post("/api/tags/cat/merge/", json={"into": "unicorn"}, auth=alice)

    assert all_tag_names(client, alice) == ["cat"]
    assert image_tags(client, alice, image_id) == ["cat"]


def test_merge_of_an_unknown_source_is_404(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.post("/api/tags/unicorn/merge/", json={"into": "cat"}, auth=alice)

    assert_problem(response, 404)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing data for required field."),
        ({"into": ""}, "Tag name must not be empty."),
        ({"into": "a/b"}, "Tag name must not contain ',' or '/'."),
        ({"into": 5}, "Not a valid string."),
    ],
    ids=["missing", "empty", "slash", "not-a-string"],
)
def test_merge_with_a_bad_into_is_400(client, alice, make_tag, body, message):
    make_tag("cat", alice)

    response = client.post("/api/tags/cat/merge/", json=body, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"into": [message]}}


def test_merge_by_an_admin_of_other_users_tags_works(client, alice, bob, admin, make_tag, upload):
    make_tag("kitty", alice)
    make_tag("cat", bob)
    image_id = tagged_image(upload, alice, ["kitty"])

    response = client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=admin)

    assert response.status_code == 200
    assert image_tags(client, alice, image_id) == ["cat"]


def test_merge_of_another_users_tags_is_403(client, alice, bob, make_tag):
    make_tag("kitty", alice)
    make_tag("cat", alice)

    response = client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=bob)

    assert_problem(response, 403)


def test_merge_of_own_tag_into_another_users_tag_is_403(client, alice, bob, make_tag):
    make_tag("kitty", alice)
    make_tag("cat", bob)

    response = client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    assert_problem(response, 403)


def test_merge_of_another_users_tag_into_own_tag_is_403(client, alice, bob, make_tag):
    make_tag("kitty", bob)
    make_tag("cat", alice)

    response = client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=alice)

    assert_problem(response, 403)


def test_refused_merge_changes_nothing(client, alice, bob, make_tag, upload):
    make_tag("kitty", alice)
    make_tag("cat", alice)
    image_id = tagged_image(upload, bob, ["kitty"])

    client.post("/api/tags/kitty/merge/", json={"into": "cat"}, auth=bob)

    assert all_tag_names(client, alice) == ["cat", "kitty"]
    assert image_tags(client, alice, image_id) == ["kitty"]


def test_anonymous_merge_is_401(client, alice, make_tag):
    make_tag("kitty", alice)
    make_tag("cat", alice)

    response = client.post("/api/tags/kitty/merge/", json={"into": "cat"})

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert all_tag_names(client, alice) == ["cat", "kitty"]


def test_anonymous_merge_of_an_unknown_tag_is_401_not_404(client):
    response = client.post("/api/tags/unicorn/merge/", json={"into": "cat"})

    assert_problem(response, 401)


# List ordering


@pytest.fixture
def ordered_tags(app, client, alice, make_tag, upload) -> None:
    """Create tags whose name, image count and creation orders all differ.

    By name: apple, Banana, cherry, date. Images: cherry 3, apple 2, date 1, Banana 0.
    Created: date, apple, cherry, Banana (created_at set in the database, apart from ids).
    """
    for name in ("cherry", "apple", "date", "Banana"):
        make_tag(name, alice)
    tagged_image(upload, alice, ["cherry", "apple", "date"])
    tagged_image(upload, alice, ["cherry", "apple"])
    tagged_image(upload, alice, ["cherry"])
    created = {"date": 1, "apple": 2, "cherry": 3, "Banana": 4}
    for name, day in created.items():
        set_tag_created_at(app, name, datetime(2026, 1, day, tzinfo=UTC))


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("name", ["apple", "Banana", "cherry", "date"]),
        ("-name", ["date", "cherry", "Banana", "apple"]),
        ("image_count", ["Banana", "date", "apple", "cherry"]),
        ("-image_count", ["cherry", "apple", "date", "Banana"]),
        ("created_at", ["date", "apple", "cherry", "Banana"]),
        ("-created_at", ["Banana", "cherry", "apple", "date"]),
    ],
)
def test_list_tags_ordering(client, alice, ordered_tags, ordering, expected):
    response = client.get(f"/api/tags/?ordering={ordering}", auth=alice)

    assert response.status_code == 200
    assert names(response) == expected


def test_list_tags_default_ordering_is_by_name(client, alice, ordered_tags):
    response = client.get("/api/tags/", auth=alice)

    assert names(response) == ["apple", "Banana", "cherry", "date"]


def test_list_tags_ordering_by_image_count_breaks_ties_by_creation_order(client, alice, make_tag):
    for name in ("b", "c", "a"):
        make_tag(name, alice)

    ascending = client.get("/api/tags/?ordering=image_count", auth=alice)
    descending = client.get("/api/tags/?ordering=-image_count", auth=alice)

    assert names(ascending) == ["b", "c", "a"]
    assert names(descending) == ["a", "c", "b"]


@pytest.mark.parametrize("ordering", ["size", "Name", "count", "--name", "name,-name", ""])
def test_list_tags_with_a_bad_ordering_is_400(client, alice, ordering):
    response = client.get(f"/api/tags/?ordering={ordering}", auth=alice)

    assert_problem(response, 400)
    assert list(response.json["errors"]["query"]) == ["ordering"]


@pytest.mark.parametrize(
    ("ordering", "second_page"),
    [
        ("name", ["cherry", "date"]),
        ("-name", ["Banana", "apple"]),
        ("image_count", ["apple", "cherry"]),
        ("-image_count", ["date", "Banana"]),
        ("created_at", ["cherry", "Banana"]),
        ("-created_at", ["apple", "date"]),
    ],
)
def test_list_tags_ordering_holds_across_pages(client, alice, ordered_tags, ordering, second_page):
    first = client.get(f"/api/tags/?ordering={ordering}&page_size=2", auth=alice)

    response = client.get(first.json["next"], auth=alice)

    assert response.json["count"] == 4
    assert names(response) == second_page


@pytest.mark.parametrize("ordering", ["-name", "image_count", "-created_at"])
def test_list_tags_page_links_keep_the_ordering(client, alice, ordered_tags, ordering):
    response = client.get(f"/api/tags/?ordering={ordering}&page_size=1&page=2", auth=alice)

    for link, page in ((response.json["next"], "3"), (response.json["previous"], "1")):
        assert parse_qs(urlsplit(link).query) == {
            "ordering": [ordering],
            "page_size": ["1"],
            "page": [page],
        }


def test_list_tags_ordering_combines_with_the_name_filter(client, alice, make_tag, upload):
    for name in ("cat", "catfish", "bobcat", "dog"):
        make_tag(name, alice)
    tagged_image(upload, alice, ["catfish", "bobcat"])
    tagged_image(upload, alice, ["catfish"])

    response = client.get("/api/tags/?name=cat&ordering=-image_count&page_size=2", auth=alice)

    assert response.json["count"] == 3
    assert names(response) == ["catfish", "bobcat"]
    assert names(client.get(response.json["next"], auth=alice)) == ["cat"]
