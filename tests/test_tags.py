"""Tests of the tags API: create, list, filter, page, fetch, rename and delete tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from helpers import ISO_UTC, assert_problem, image_tags, names, tagged_image
from sqlalchemy import select

from imagestore.db import db
from imagestore.models import Tag
from imagestore.schemas import tag_schema

BAD_NAME_MESSAGES = {
    "empty": "Tag name must not be empty.",
    "long": "Tag name must be at most 50 characters.",
    "control": "Tag name must not contain control characters.",
    "invisible": "Tag name must not contain invisible characters such as U+{}"
    " (only those that join emoji).",
    "separator": "Tag name must not contain ',' or '/'.",
}
# (method, path) of every tags route, for the tag named "cat".
ROUTES = [
    ("get", "/api/tags/"),
    ("post", "/api/tags/"),
    ("get", "/api/tags/cat/"),
    ("patch", "/api/tags/cat/"),
    ("put", "/api/tags/cat/"),
    ("delete", "/api/tags/cat/"),
]


def split_link(url: str) -> tuple[str, dict[str, list[str]]]:
    """Split a page link into its address without the query string and its parameters."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", parse_qs(parts.query)


# Create


def test_create_tag_is_201_with_the_tag(client, alice):
    response = client.post("/api/tags/", json={"name": "cat"}, auth=alice)

    assert response.status_code == 201
    assert response.json | {"created_at": None} == {
        "name": "cat",
        "image_count": 0,
        "created_by": "alice",
        "created_at": None,
    }


def test_create_tag_gives_the_location_of_the_new_tag(client, alice):
    response = client.post("/api/tags/", json={"name": "cat"}, auth=alice)

    assert response.headers["Location"] == "http://localhost/api/tags/cat/"


def test_create_tag_location_leads_to_the_tag(client, alice):
    location = client.post("/api/tags/", json={"name": "Big Cat"}, auth=alice).headers["Location"]

    response = client.get(location, auth=alice)

    assert location == "http://localhost/api/tags/Big%20Cat/"
    assert response.status_code == 200
    assert response.json["name"] == "Big Cat"


def test_create_tag_created_at_is_iso_8601_in_utc_with_z(client, alice):
    response = client.post("/api/tags/", json={"name": "cat"}, auth=alice)

    assert ISO_UTC.match(response.json["created_at"])


def test_create_tag_created_at_is_the_current_time(client, alice):
    before = datetime.now(UTC)

    response = client.post("/api/tags/", json={"name": "cat"}, auth=alice)

    created_at = datetime.fromisoformat(response.json["created_at"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= created_at <= datetime.now(UTC) + timedelta(seconds=1)


def test_create_tag_keeps_the_case_given(client, alice):
    response = client.post("/api/tags/", json={"name": "Cat"}, auth=alice)

    assert response.json["name"] == "Cat"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("  cat  ", "cat"),
        ("big   cat", "big cat"),
        ("\tbig \n cat\r\n", "big cat"),
        ("big\u00a0cat", "big cat"),
    ],
)
def test_create_tag_trims_and_collapses_whitespace(client, alice, given, stored):
    response = client.post("/api/tags/", json={"name": given}, auth=alice)

    assert response.status_code == 201
    assert response.json["name"] == stored


def test_create_tag_stores_whitespace_trimmed_name_for_lookup(client, alice):
    client.post("/api/tags/", json={"name": "  big   cat "}, auth=alice)

    response = client.get("/api/tags/big%20cat/", auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "big cat"


def test_create_tag_stores_the_name_in_nfc(client, alice):
    response = client.post("/api/tags/", json={"name": "cafe\u0301"}, auth=alice)

    assert response.json["name"] == "caf\u00e9"


def test_create_tag_with_50_characters_is_201(client, alice):
    response = client.post("/api/tags/", json={"name": "x" * 50}, auth=alice)

    assert response.status_code == 201
    assert response.json["name"] == "x" * 50


def test_create_tag_counts_length_after_trimming(client, alice):
    response = client.post("/api/tags/", json={"name": f"  {'x' * 50}  "}, auth=alice)

    assert response.status_code == 201
    assert response.json["name"] == "x" * 50


def test_create_tag_without_trailing_slash_is_201(client, alice):
    response = client.post("/api/tags", json={"name": "cat"}, auth=alice)

    assert response.status_code == 201
    assert response.json["name"] == "cat"


def test_create_tag_twice_is_409(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.post("/api/tags/", json={"name": "cat"}, auth=alice)

    assert_problem(response, 409)


@pytest.mark.parametrize(
    ("existing", "duplicate"),
    [
        ("Cat", "cat"),
        ("cat", "CAT"),
        ("Cat", " cat "),
        ("big cat", "big   cat"),
        ("big cat", "BIG\tCAT"),
        ("caf\u00e9", "CAFE\u0301"),
        ("stra\u00dfe", "STRASSE"),
    ],
)
def test_create_tag_with_a_name_equal_but_for_case_or_whitespace_is_409(
    client, alice, make_tag, existing, duplicate
):
    make_tag(existing, alice)

    response = client.post("/api/tags/", json={"name": duplicate}, auth=alice)

    assert_problem(response, 409)


def test_create_tag_conflict_names_the_existing_tag(client, alice, make_tag):
    make_tag("Cat", alice)

    response = client.post("/api/tags/", json={"name": " cat "}, auth=alice)

    assert "Cat" in response.json["detail"]


def test_create_tag_conflict_adds_no_tag(client, alice, make_tag):
    make_tag("Cat", alice)

    client.post("/api/tags/", json={"name": "cat"}, auth=alice)

    assert names(client.get("/api/tags/", auth=alice)) == ["Cat"]


def test_create_tag_of_a_name_another_user_has_is_409(client, alice, bob, make_tag):
    make_tag("cat", alice)

    response = client.post("/api/tags/", json={"name": "cat"}, auth=bob)

    assert_problem(response, 409)


# Create: validation


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", BAD_NAME_MESSAGES["empty"]),
        ("   ", BAD_NAME_MESSAGES["empty"]),
        ("\t\n", BAD_NAME_MESSAGES["empty"]),
        ("x" * 51, BAD_NAME_MESSAGES["long"]),
        ("cat,dog", BAD_NAME_MESSAGES["separator"]),
        (",", BAD_NAME_MESSAGES["separator"]),
        ("cat/dog", BAD_NAME_MESSAGES["separator"]),
        ("/", BAD_NAME_MESSAGES["separator"]),
        ("cat\x00", BAD_NAME_MESSAGES["control"]),
        ("c\x07at", BAD_NAME_MESSAGES["control"]),
        ("c\x1bat", BAD_NAME_MESSAGES["control"]),
        ("c\x7fat", BAD_NAME_MESSAGES["control"]),
        ("c\u200bat", BAD_NAME_MESSAGES["invisible"].format("200B")),
        ("c\u202eat", BAD_NAME_MESSAGES["invisible"].format("202E")),
    ],
    ids=[
        "empty",
        "spaces",
        "whitespace",
        "51-chars",
        "comma",
        "only-comma",
        "slash",
        "only-slash",
        "nul",
        "bell",
        "escape",
        "delete",
        "zero-width-space",
        "right-to-left-override",
    ],
)
def test_create_tag_with_an_invalid_name_is_400(client, alice, name, message):
    response = client.post("/api/tags/", json={"name": name}, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"name": [message]}}


def test_create_tag_with_an_invalid_name_adds_no_tag(client, alice):
    client.post("/api/tags/", json={"name": "cat/dog"}, auth=alice)

    assert client.get("/api/tags/", auth=alice).json["count"] == 0


def test_create_tag_with_a_lone_surrogate_in_the_name_is_400(client, alice):
    # "\ud800" is valid JSON but no valid Unicode text: no database can store it.
    body = '{"name": "cat\\ud800"}'

    response = client.post("/api/tags/", data=body, content_type="application/json", auth=alice)

    assert_problem(response, 400)
    assert list(response.json["errors"]["json"]) == ["name"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (5, "Not a valid string."),
        (1.5, "Not a valid string."),
        (True, "Not a valid string."),
        (["cat"], "Not a valid string."),
        ({"en": "cat"}, "Not a valid string."),
        (None, "Field may not be null."),
    ],
)
def test_create_tag_with_a_name_that_is_not_a_string_is_400(client, alice, name, message):
    response = client.post("/api/tags/", json={"name": name}, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"name": [message]}}


def test_create_tag_without_a_name_is_400(client, alice):
    response = client.post("/api/tags/", json={}, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"name": ["Missing data for required field."]}}


def test_create_tag_with_an_unknown_field_is_400_naming_it(client, alice):
    response = client.post("/api/tags/", json={"name": "cat", "colour": "red"}, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"colour": ["Unknown field."]}}
    assert client.get("/api/tags/", auth=alice).json["count"] == 0


@pytest.mark.parametrize("body", ['{"name": "cat"', "{name: cat}", "{}}", b'{"name": "\xff"}'])
def test_create_tag_with_malformed_json_is_400(client, alice, body):
    response = client.post("/api/tags/", data=body, content_type="application/json", auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": ["Invalid JSON body."]}


def test_create_tag_with_an_empty_json_body_is_400(client, alice):
    response = client.post("/api/tags/", data="", content_type="application/json", auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"name": ["Missing data for required field."]}}


@pytest.mark.parametrize("body", ["null", "[]", '["cat"]', '"cat"', "5"])
def test_create_tag_with_a_json_body_that_is_no_object_is_400(client, alice, body):
    response = client.post("/api/tags/", data=body, content_type="application/json", auth=alice)

    assert_problem(response, 400)
    assert list(response.json["errors"]) == ["json"]


def test_create_tag_with_a_form_body_is_201_as_the_old_service_took_it(client, alice):
    response = client.post(
        "/api/tags/", data="name=cat", content_type="application/x-www-form-urlencoded", auth=alice
    )

    assert response.status_code == 201
    assert response.json["name"] == "cat"


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_create_tag_with_a_body_in_another_media_type_is_415(client, alice, content_type):
    response = client.post(
        "/api/tags/", data='{"name": "cat"}', content_type=content_type, auth=alice
    )

    assert_problem(response, 415)
    assert response.json["accepted"] == [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]
    assert "application/json" in response.json["detail"]
    assert "application/json" in response.headers["Accept-Post"]
    assert client.get("/api/tags/", auth=alice).json["count"] == 0


def test_create_tag_with_json_charset_content_type_is_201(client, alice):
    response = client.post(
        "/api/tags/",
        data='{"name": "cat"}',
        content_type="application/json; charset=utf-8",
        auth=alice,
    )

    assert response.status_code == 201


# List


def test_list_tags_is_empty_at_first(client, alice):
    response = client.get("/api/tags/", auth=alice)

    assert response.status_code == 200
    assert response.json == {"count": 0, "next": None, "previous": None, "results": []}


def test_list_tags_shows_every_field(client, alice, make_tag):
    created = make_tag("cat", alice)

    response = client.get("/api/tags/", auth=alice)

    assert response.json["results"] == [created]


def test_list_tags_sorts_by_name_ignoring_case(client, alice, make_tag):
    for name in ["banana", "Cherry", "apple", "Banana split", "APRICOT"]:
        make_tag(name, alice)

    response = client.get("/api/tags/", auth=alice)

    assert names(response) == ["apple", "APRICOT", "banana", "Banana split", "Cherry"]


def test_list_tags_shows_tags_of_every_user(client, alice, bob, make_tag):
    make_tag("cat", alice)
    make_tag("dog", bob)

    response = client.get("/api/tags/", auth=bob)

    assert [(tag["name"], tag["created_by"]) for tag in response.json["results"]] == [
        ("cat", "alice"),
        ("dog", "bob"),
    ]


def test_each_listed_tag_is_written_as_its_own_page_shows_it(
    app, client, alice, bob, make_tag, upload
):
    make_tag("cat", alice)
    make_tag("dog", bob)
    make_tag("orphan", alice)
    tagged_image(upload, alice, ["cat", "dog"])
    with app.app_context():  # a tag whose creator is gone, made at a whole second
        tag = db.session.scalar(select(Tag).where(Tag.name == "orphan"))
        tag.created_by_id = None
        tag.created_at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
        db.session.commit()

    listed = client.get("/api/tags/", auth=alice).json["results"]

    assert [tag["name"] for tag in listed] == ["cat", "dog", "orphan"]
    for tag in listed:
        shown = client.get(f"/api/tags/{tag['name']}/", auth=alice).json
        assert list(tag.items()) == list(shown.items())
    assert listed[2]["created_by"] is None
    assert listed[2]["created_at"] == "2026-11-27T10:00:00Z"


def test_list_tags_shows_the_image_count(client, alice, make_tag, upload):
    make_tag("cat", alice)
    make_tag("dog", alice)
    tagged_image(upload, alice, ["cat", "dog"])
    tagged_image(upload, alice, ["cat"])

    response = client.get("/api/tags/", auth=alice)

    counts = {tag["name"]: tag["image_count"] for tag in response.json["results"]}
    assert counts == {"cat": 2, "dog": 1}


def test_list_tags_gives_pages_of_10(client, alice, make_tag):
    for number in range(1, 13):
        make_tag(f"tag {number:02}", alice)

    response = client.get("/api/tags/", auth=alice)

    assert response.json["count"] == 12
    assert names(response) == [f"tag {number:02}" for number in range(1, 11)]


def test_list_tags_first_page_links_to_the_next_only(client, alice, make_tag):
    for number in range(1, 13):
        make_tag(f"tag {number:02}", alice)

    response = client.get("/api/tags/", auth=alice)

    assert response.json["next"] == "http://localhost/api/tags/?page=2"
    assert response.json["previous"] is None


def test_list_tags_last_page_links_to_the_previous_only(client, alice, make_tag):
    for number in range(1, 13):
        make_tag(f"tag {number:02}", alice)

    response = client.get("/api/tags/?page=2", auth=alice)

    assert names(response) == ["tag 11", "tag 12"]
    assert response.json["next"] is None
    assert response.json["previous"] == "http://localhost/api/tags/?page=1"


def test_list_tags_middle_page_links_both_ways(client, alice, make_tag):
    for number in range(1, 8):
        make_tag(f"tag {number}", alice)

    response = client.get("/api/tags/?page_size=3&page=2", auth=alice)

    assert names(response) == ["tag 4", "tag 5", "tag 6"]
    assert split_link(response.json["next"]) == (
        "http://localhost/api/tags/",
        {"page_size": ["3"], "page": ["3"]},
    )
    assert split_link(response.json["previous"]) == (
        "http://localhost/api/tags/",
        {"page_size": ["3"], "page": ["1"]},
    )


def test_list_tags_exactly_one_full_page_has_no_next(client, alice, make_tag):
    for number in range(10):
        make_tag(f"tag {number}", alice)

    response = client.get("/api/tags/", auth=alice)

    assert response.json["count"] == 10
    assert response.json["next"] is None


def test_list_tags_links_keep_the_name_filter_and_page_size(client, alice, make_tag):
    for number in range(1, 8):
        make_tag(f"cat {number}", alice)
    make_tag("dog", alice)

    response = client.get("/api/tags/?name=CAT&page_size=3&page=2", auth=alice)

    expected = {"name": ["CAT"], "page_size": ["3"]}
    assert split_link(response.json["next"]) == (
        "http://localhost/api/tags/",
        expected | {"page": ["3"]},
    )
    assert split_link(response.json["previous"]) == (
        "http://localhost/api/tags/",
        expected | {"page": ["1"]},
    )


def test_list_tags_next_links_visit_every_tag_once(client, alice, make_tag):
    created = [f"tag {number:02}" for number in range(1, 24)]
    for name in created:
        make_tag(name, alice)

    seen, url = [], "/api/tags/?page_size=5"
    while url is not None:
        response = client.get(url, auth=alice)
        seen += names(response)
        url = response.json["next"]

    assert seen == created


def test_list_tags_page_size_sets_the_page_length(client, alice, make_tag):
    for number in range(1, 6):
        make_tag(f"tag {number}", alice)

    response = client.get("/api/tags/?page_size=2", auth=alice)

    assert response.json["count"] == 5
    assert names(response) == ["tag 1", "tag 2"]


def test_list_tags_page_size_100_is_accepted(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.get("/api/tags/?page_size=100", auth=alice)

    assert response.status_code == 200
    assert names(response) == ["cat"]


def test_list_tags_page_out_of_range_is_404(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.get("/api/tags/?page=2", auth=alice)

    assert_problem(response, 404)


def test_list_tags_far_page_out_of_range_is_404(client, alice):
    response = client.get("/api/tags/?page=99999999999999999999", auth=alice)

    assert_problem(response, 404)


def test_list_tags_first_page_of_no_tags_is_200(client, alice):
    response = client.get("/api/tags/?page=1", auth=alice)

    assert response.status_code == 200
    assert response.json["results"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=two", "page"),
        ("page=1.5", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page_size=ten", "page_size"),
        (f"name={'x' * 201}", "name"),
    ],
)
def test_list_tags_with_a_bad_query_parameter_is_400(client, alice, query, field):
    response = client.get(f"/api/tags/?{query}", auth=alice)

    assert_problem(response, 400)
    assert list(response.json["errors"]) == ["query"]
    assert list(response.json["errors"]["query"]) == [field]


# List: name filter


def test_list_tags_name_filter_is_a_case_insensitive_contains(client, alice, make_tag):
    for name in ["Black Cat", "cat", "dog", "Scatter", "CATERPILLAR", "ca t"]:
        make_tag(name, alice)

    response = client.get("/api/tags/?name=cAt", auth=alice)

    assert names(response) == ["Black Cat", "cat", "CATERPILLAR", "Scatter"]


def test_list_tags_name_filter_sets_the_count(client, alice, make_tag):
    for name in ["cat", "dog", "catfish"]:
        make_tag(name, alice)

    response = client.get("/api/tags/?name=cat", auth=alice)

    assert response.json["count"] == 2


def test_list_tags_name_filter_without_a_match_is_empty(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.get("/api/tags/?name=dog", auth=alice)

    assert response.json == {"count": 0, "next": None, "previous": None, "results": []}


def test_list_tags_empty_name_filter_lists_every_tag(client, alice, make_tag):
    make_tag("cat", alice)
    make_tag("dog", alice)

    response = client.get("/api/tags/?name=", auth=alice)

    assert names(response) == ["cat", "dog"]


def test_list_tags_name_filter_matches_a_space(client, alice, make_tag):
    for name in ["big cat", "bigcat"]:
        make_tag(name, alice)

    response = client.get("/api/tags/?name=g%20c", auth=alice)

    assert names(response) == ["big cat"]


def test_list_tags_name_filter_treats_percent_literally(client, alice, make_tag):
    for name in ["100%", "1000", "50% off", "percent"]:
        make_tag(name, alice)

    response = client.get("/api/tags/?name=%25", auth=alice)

    assert names(response) == ["100%", "50% off"]


def test_list_tags_name_filter_treats_underscore_literally(client, alice, make_tag):
    for name in ["snake_case", "snakecase", "snake case", "x"]:
        make_tag(name, alice)

    response = client.get("/api/tags/?name=e_c", auth=alice)

    assert names(response) == ["snake_case"]


def test_list_tags_name_filter_treats_backslash_literally(client, alice, make_tag):
    for name in ["back\\slash", "backslash", "back%slash"]:
        make_tag(name, alice)

    response = client.get("/api/tags/?name=k%5Cs", auth=alice)

    assert names(response) == ["back\\slash"]


def test_list_tags_name_filter_matches_accents_in_any_case(client, alice, make_tag):
    for name in ["Caf\u00e9", "cafe"]:
        make_tag(name, alice)

    response = client.get("/api/tags/?name=CAF%C3%89", auth=alice)

    assert names(response) == ["Caf\u00e9"]


def test_list_tags_name_filter_with_a_nul_character_is_400(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.get("/api/tags/?name=%00", auth=alice)

    assert_problem(response, 400)
    assert "NUL" in response.json["detail"]


# Get one


def test_get_tag_returns_it(client, alice, make_tag):
    created = make_tag("cat", alice)

    response = client.get("/api/tags/cat/", auth=alice)

    assert response.status_code == 200
    assert response.json == created


def test_get_tag_ignores_case(client, alice, make_tag):
    make_tag("Cat", alice)

    response = client.get("/api/tags/cAT/", auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "Cat"


def test_get_tag_of_another_user_is_200(client, alice, bob, make_tag):
    make_tag("cat", alice)

    response = client.get("/api/tags/cat/", auth=bob)

    assert response.status_code == 200
    assert response.json["created_by"] == "alice"


def test_get_unknown_tag_is_404(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.get("/api/tags/dog/", auth=alice)

    assert_problem(response, 404)


def test_get_tag_by_a_part_of_its_name_is_404(client, alice, make_tag):
    make_tag("catfish", alice)

    response = client.get("/api/tags/cat/", auth=alice)

    assert_problem(response, 404)


@pytest.mark.parametrize(
    "name", ["big cat", "100%", "what?", "a#b", "a+b", "caf\u00e9", "x & y", "50% off"]
)
def test_get_tag_with_special_characters_by_url_encoding(client, alice, make_tag, name):
    make_tag(name, alice)

    response = client.get(f"/api/tags/{quote(name)}/", auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == name


def test_get_tag_with_a_nul_character_is_400(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.get("/api/tags/cat%00/", auth=alice)

    assert_problem(response, 400)


def test_get_tag_counts_its_images(client, alice, make_tag, upload):
    make_tag("cat", alice)
    make_tag("dog", alice)
    tagged_image(upload, alice, ["cat"])
    tagged_image(upload, alice, ["cat", "dog"])
    tagged_image(upload, alice, ["dog"])
    tagged_image(upload, alice, [])

    response = client.get("/api/tags/cat/", auth=alice)

    assert response.json["image_count"] == 2


def test_get_tag_count_drops_when_an_image_is_deleted(client, alice, make_tag, upload):
    make_tag("cat", alice)
    image_id = tagged_image(upload, alice, ["cat"])
    tagged_image(upload, alice, ["cat"])
    client.delete(f"/api/images/{image_id}/", auth=alice)

    response = client.get("/api/tags/cat/", auth=alice)

    assert response.json["image_count"] == 1


# Rename


@pytest.mark.parametrize("method", ["patch", "put"])
def test_rename_tag_answers_with_the_renamed_tag(client, alice, make_tag, method):
    created = make_tag("cat", alice)

    response = getattr(client, method)("/api/tags/cat/", json={"name": "kitten"}, auth=alice)

    assert response.status_code == 200
    assert response.json == created | {"name": "kitten"}


@pytest.mark.parametrize("method", ["patch", "put"])
def test_renamed_tag_answers_under_its_new_name(client, alice, make_tag, method):
    make_tag("cat", alice)
    getattr(client, method)("/api/tags/cat/", json={"name": "kitten"}, auth=alice)

    response = client.get("/api/tags/kitten/", auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "kitten"


@pytest.mark.parametrize("method", ["patch", "put"])
def test_renamed_tag_is_gone_under_its_old_name(client, alice, make_tag, method):
    make_tag("cat", alice)
    getattr(client, method)("/api/tags/cat/", json={"name": "kitten"}, auth=alice)

    response = client.get("/api/tags/cat/", auth=alice)

    assert_problem(response, 404)


@pytest.mark.parametrize("method", ["patch", "put"])
def test_rename_tag_keeps_it_on_its_images(client, alice, make_tag, upload, method):
    make_tag("cat", alice)
    make_tag("pet", alice)
    first = tagged_image(upload, alice, ["cat", "pet"])
    second = tagged_image(upload, alice, ["cat"])

    getattr(client, method)("/api/tags/cat/", json={"name": "kitten"}, auth=alice)

    assert image_tags(client, alice, first) == ["kitten", "pet"]
    assert image_tags(client, alice, second) == ["kitten"]


@pytest.mark.parametrize("method", ["patch", "put"])
def test_rename_tag_keeps_its_image_count(client, alice, make_tag, upload, method):
    make_tag("cat", alice)
    tagged_image(upload, alice, ["cat"])
    tagged_image(upload, alice, ["cat"])

    response = getattr(client, method)("/api/tags/cat/", json={"name": "kitten"}, auth=alice)

    assert response.json["image_count"] == 2
    assert client.get("/api/tags/kitten/", auth=alice).json["image_count"] == 2


def test_renamed_tag_filters_images_by_its_new_name(client, alice, make_tag, upload):
    make_tag("cat", alice)
    image_id = tagged_image(upload, alice, ["cat"])
    client.patch("/api/tags/cat/", json={"name": "kitten"}, auth=alice)

    response = client.get("/api/images/?tags=kitten", auth=alice)

    assert [image["id"] for image in response.json["results"]] == [image_id]


def test_rename_tag_keeps_its_creator_and_creation_time(client, alice, admin, make_tag):
    created = make_tag("cat", alice)

    response = client.patch("/api/tags/cat/", json={"name": "kitten"}, auth=admin)

    assert response.json["created_by"] == "alice"
    assert response.json["created_at"] == created["created_at"]


def test_rename_tag_looks_it_up_ignoring_case(client, alice, make_tag):
    make_tag("Cat", alice)

    response = client.patch("/api/tags/CAT/", json={"name": "kitten"}, auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "kitten"


def test_rename_tag_trims_and_collapses_whitespace(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.patch("/api/tags/cat/", json={"name": "  big \t cat "}, auth=alice)

    assert response.json["name"] == "big cat"


def test_rename_tag_with_spaces_in_its_name_by_url_encoding(client, alice, make_tag):
    make_tag("big cat", alice)

    response = client.put("/api/tags/big%20cat/", json={"name": "small cat"}, auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "small cat"


@pytest.mark.parametrize("new_name", ["Cat", "CAT", " cAt "])
def test_rename_tag_to_another_case_of_its_own_name_works(client, alice, make_tag, new_name):
    make_tag("cat", alice)

    response = client.patch("/api/tags/cat/", json={"name": new_name}, auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == new_name.strip()


def test_rename_tag_to_its_own_name_works(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.put("/api/tags/cat/", json={"name": "cat"}, auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "cat"


def test_rename_tag_to_another_case_keeps_one_tag(client, alice, make_tag):
    make_tag("cat", alice)
    client.patch("/api/tags/cat/", json={"name": "Cat"}, auth=alice)

    response = client.get("/api/tags/", auth=alice)

    assert names(response) == ["Cat"]


@pytest.mark.parametrize("method", ["patch", "put"])
@pytest.mark.parametrize("taken", ["dog", "Dog", " DOG "])
def test_rename_tag_onto_another_existing_name_is_409(client, alice, make_tag, method, taken):
    make_tag("cat", alice)
    make_tag("dog", alice)

    response = getattr(client, method)("/api/tags/cat/", json={"name": taken}, auth=alice)

    assert_problem(response, 409)


def test_rename_tag_onto_another_existing_name_changes_nothing(client, alice, make_tag):
    make_tag("cat", alice)
    make_tag("dog", alice)

    client.patch("/api/tags/cat/", json={"name": "dog"}, auth=alice)

    assert names(client.get("/api/tags/", auth=alice)) == ["cat", "dog"]


def test_rename_tag_onto_a_name_of_another_users_tag_is_409(client, alice, bob, make_tag):
    make_tag("cat", alice)
    make_tag("dog", bob)

    response = client.patch("/api/tags/cat/", json={"name": "dog"}, auth=alice)

    assert_problem(response, 409)


def test_rename_tag_frees_its_old_name(client, alice, make_tag):
    make_tag("cat", alice)
    client.patch("/api/tags/cat/", json={"name": "kitten"}, auth=alice)

    response = client.post("/api/tags/", json={"name": "cat"}, auth=alice)

    assert response.status_code == 201


@pytest.mark.parametrize("method", ["patch", "put"])
def test_rename_unknown_tag_is_404(client, alice, make_tag, method):
    make_tag("cat", alice)

    response = getattr(client, method)("/api/tags/dog/", json={"name": "kitten"}, auth=alice)

    assert_problem(response, 404)


@pytest.mark.parametrize("method", ["patch", "put"])
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", BAD_NAME_MESSAGES["empty"]),
        ("  ", BAD_NAME_MESSAGES["empty"]),
        ("x" * 51, BAD_NAME_MESSAGES["long"]),
        ("cat,dog", BAD_NAME_MESSAGES["separator"]),
        ("cat/dog", BAD_NAME_MESSAGES["separator"]),
        ("c\x00at", BAD_NAME_MESSAGES["control"]),
    ],
)
def test_rename_tag_to_an_invalid_name_is_400(client, alice, make_tag, method, name, message):
    make_tag("cat", alice)

    response = getattr(client, method)("/api/tags/cat/", json={"name": name}, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"name": [message]}}


def test_rename_tag_to_an_invalid_name_keeps_the_old_name(client, alice, make_tag):
    make_tag("cat", alice)

    client.patch("/api/tags/cat/", json={"name": "cat/dog"}, auth=alice)

    assert client.get("/api/tags/cat/", auth=alice).status_code == 200


@pytest.mark.parametrize("method", ["patch", "put"])
def test_rename_tag_without_a_name_is_400(client, alice, make_tag, method):
    make_tag("cat", alice)

    response = getattr(client, method)("/api/tags/cat/", json={}, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"name": ["Missing data for required field."]}}


def test_rename_tag_with_a_name_that_is_not_a_string_is_400(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.patch("/api/tags/cat/", json={"name": 7}, auth=alice)

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": {"name": ["Not a valid string."]}}


def test_rename_tag_ignores_read_only_fields_sent_back(client, alice, make_tag):
    tag = make_tag("cat", alice)

    response = client.put("/api/tags/cat/", json=tag | {"name": "kitten"}, auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "kitten"


def test_rename_tag_with_malformed_json_is_400(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.put(
        "/api/tags/cat/", data='{"name": ', content_type="application/json", auth=alice
    )

    assert_problem(response, 400)
    assert response.json["errors"] == {"json": ["Invalid JSON body."]}


def test_rename_tag_with_a_form_body_renames_it(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.patch("/api/tags/cat/", data={"name": "kitten"}, auth=alice)

    assert response.status_code == 200
    assert response.json["name"] == "kitten"


# Delete


def test_delete_tag_is_204_without_a_body(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.delete("/api/tags/cat/", auth=alice)

    assert response.status_code == 204
    assert response.data == b""


def test_deleted_tag_is_gone(client, alice, make_tag):
    make_tag("cat", alice)
    client.delete("/api/tags/cat/", auth=alice)

    response = client.get("/api/tags/cat/", auth=alice)

    assert_problem(response, 404)


def test_deleted_tag_leaves_the_list(client, alice, make_tag):
    make_tag("cat", alice)
    make_tag("dog", alice)
    client.delete("/api/tags/cat/", auth=alice)

    response = client.get("/api/tags/", auth=alice)

    assert names(response) == ["dog"]


def test_delete_tag_looks_it_up_ignoring_case(client, alice, make_tag):
    make_tag("Cat", alice)

    response = client.delete("/api/tags/cAt/", auth=alice)

    assert response.status_code == 204


def test_delete_tag_with_spaces_in_its_name_by_url_encoding(client, alice, make_tag):
    make_tag("big cat", alice)

    response = client.delete("/api/tags/big%20cat/", auth=alice)

    assert response.status_code == 204


def test_delete_tag_removes_it_from_every_image(client, alice, bob, make_tag, upload):
    make_tag("cat", alice)
    make_tag("pet", alice)
    first = tagged_image(upload, alice, ["cat", "pet"])
    second = tagged_image(upload, bob, ["cat"])
    third = tagged_image(upload, bob, ["pet"])

    client.delete("/api/tags/cat/", auth=alice)

    assert image_tags(client, alice, first) == ["pet"]
    assert image_tags(client, alice, second) == []
    assert image_tags(client, alice, third) == ["pet"]


def test_delete_tag_keeps_its_images(client, alice, make_tag, upload):
    make_tag("cat", alice)
    image_ids = [tagged_image(upload, alice, ["cat"]) for _ in range(2)]

    client.delete("/api/tags/cat/", auth=alice)

    response = client.get("/api/images/", auth=alice)
    assert sorted(image["id"] for image in response.json["results"]) == sorted(image_ids)


def test_delete_tag_frees_its_name(client, alice, make_tag):
    make_tag("cat", alice)
    client.delete("/api/tags/cat/", auth=alice)

    response = client.post("/api/tags/", json={"name": "Cat"}, auth=alice)

    assert response.status_code == 201
    assert response.json["image_count"] == 0


def test_delete_unknown_tag_is_404(client, alice, make_tag):
    make_tag("cat", alice)

    response = client.delete("/api/tags/dog/", auth=alice)

    assert_problem(response, 404)


def test_delete_tag_twice_is_404(client, alice, make_tag):
    make_tag("cat", alice)
    client.delete("/api/tags/cat/", auth=alice)

    response = client.delete("/api/tags/cat/", auth=alice)

    assert_problem(response, 404)


# Permissions


@pytest.mark.parametrize("method", ["patch", "put"])
def test_rename_tag_of_another_user_is_403(client, alice, bob, make_tag, method):
    make_tag("cat", alice)

    response = getattr(client, method)("/api/tags/cat/", json={"name": "kitten"}, auth=bob)

    assert_problem(response, 403)


def test_refused_rename_keeps_the_tag_name(client, alice, bob, make_tag):
    make_tag("cat", alice)

    client.patch("/api/tags/cat/", json={"name": "kitten"}, auth=bob)

    assert names(client.get("/api/tags/", auth=alice)) == ["cat"]


def test_delete_tag_of_another_user_is_403(client, alice, bob, make_tag):
    make_tag("cat", alice)

    response = client.delete("/api/tags/cat/", auth=bob)

    assert_problem(response, 403)


def test_refused_delete_keeps_the_tag_on_its_images(client, alice, bob, make_tag, upload):
    make_tag("cat", alice)
    image_id = tagged_image(upload, bob, ["cat"])

    client.delete("/api/tags/cat/", auth=bob)

    assert image_tags(client, bob, image_id) == ["cat"]


def test_tagging_an_image_does_not_let_its_uploader_rename_the_tag(
    client, alice, bob, make_tag, upload
):
    make_tag("cat", alice)
    tagged_image(upload, bob, ["cat"])

    response = client.patch("/api/tags/cat/", json={"name": "kitten"}, auth=bob)

    assert_problem(response, 403)


@pytest.mark.parametrize("method", ["patch", "put"])
def test_admin_renames_a_tag_of_another_user(client, alice, admin, make_tag, method):
    make_tag("cat", alice)

    response = getattr(client, method)("/api/tags/cat/", json={"name": "kitten"}, auth=admin)

    assert response.status_code == 200
    assert response.json["name"] == "kitten"


def test_admin_deletes_a_tag_of_another_user(client, alice, admin, make_tag):
    make_tag("cat", alice)

    response = client.delete("/api/tags/cat/", auth=admin)

    assert response.status_code == 204
    assert client.get("/api/tags/cat/", auth=alice).status_code == 404


def test_user_renames_own_tag_while_others_exist(client, alice, bob, make_tag):
    make_tag("cat", alice)
    make_tag("dog", bob)

    response = client.patch("/api/tags/dog/", json={"name": "puppy"}, auth=bob)

    assert response.status_code == 200
    assert response.json["name"] == "puppy"


def test_admin_created_tag_is_not_changed_by_a_user(client, alice, admin, make_tag):
    make_tag("cat", admin)

    response = client.delete("/api/tags/cat/", auth=alice)

    assert_problem(response, 403)


# Authentication


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_anonymous_request_is_401_with_basic_challenge(client, alice, make_tag, method, path):
    make_tag("cat", alice)

    response = getattr(client, method)(path, json={"name": "dog"})

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_wrong_password_is_401(client, alice, make_tag, method, path):
    make_tag("cat", alice)

    response = getattr(client, method)(path, json={"name": "dog"}, auth=("alice", "wrong"))

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_unknown_user_is_401(client):
    response = client.get("/api/tags/", auth=("nobody", "secret"))

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_deactivated_user_is_401(client, alice, make_tag, make_user, method, path):
    make_tag("cat", alice)
    carol = make_user("carol", active=False)

    response = getattr(client, method)(path, json={"name": "dog"}, auth=carol)

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_user_deactivated_after_a_request_is_401(client, runner, alice):
    client.get("/api/tags/", auth=alice)
    runner.invoke(args=["users", "deactivate", "alice"])

    response = client.get("/api/tags/", auth=alice)

    assert_problem(response, 401)


def test_deactivated_creator_cannot_delete_own_tag(client, runner, alice, make_tag):
    make_tag("cat", alice)
    runner.invoke(args=["users", "deactivate", "alice"])

    response = client.delete("/api/tags/cat/", auth=alice)

    assert_problem(response, 401)


def test_anonymous_create_with_an_invalid_body_is_401_not_400(client):
    response = client.post("/api/tags/", data="{", content_type="application/json")

    assert_problem(response, 401)


def test_anonymous_create_adds_no_tag(client, alice):
    client.post("/api/tags/", json={"name": "cat"})

    assert client.get("/api/tags/", auth=alice).json["count"] == 0


def test_anonymous_request_for_an_unknown_tag_is_401_not_404(client):
    response = client.get("/api/tags/nothing/")

    assert_problem(response, 401)


# Routing: trailing slashes and methods


@pytest.mark.parametrize("slash", ["/", ""], ids=["with-slash", "without-slash"])
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/api/tags", None, 200),
        ("post", "/api/tags", {"name": "dog"}, 201),
        ("get", "/api/tags/cat", None, 200),
        ("patch", "/api/tags/cat", {"name": "kitten"}, 200),
        ("put", "/api/tags/cat", {"name": "kitten"}, 200),
        ("delete", "/api/tags/cat", None, 204),
    ],
)
def test_route_answers_with_and_without_trailing_slash(
    client, alice, make_tag, slash, method, path, body, status
):
    make_tag("cat", alice)

    response = getattr(client, method)(path + slash, json=body, auth=alice)

    assert response.status_code == status


def test_list_without_trailing_slash_links_pages_of_the_same_list(client, alice, make_tag):
    for number in range(1, 13):
        make_tag(f"tag {number:02}", alice)

    response = client.get("/api/tags?name=tag", auth=alice)

    base, params = split_link(response.json["next"])
    assert base.rstrip("/") == "http://localhost/api/tags"
    assert params == {"name": ["tag"], "page": ["2"]}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("delete", "/api/tags/", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("put", "/api/tags/", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("patch", "/api/tags/", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("delete", "/api/tags", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("put", "/api/tags", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("post", "/api/tags/cat/", {"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "PUT"}),
        ("post", "/api/tags/cat", {"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "PUT"}),
    ],
)
def test_unsupported_method_is_405_with_allow(client, alice, make_tag, method, path, allowed):
    make_tag("cat", alice)

    response = getattr(client, method)(path, json={"name": "dog"}, auth=alice)

    assert_problem(response, 405)
    assert {name.strip() for name in response.headers["Allow"].split(",")} == allowed


def test_unsupported_method_changes_nothing(client, alice, make_tag):
    make_tag("cat", alice)

    client.post("/api/tags/cat/", json={"name": "dog"}, auth=alice)

    assert names(client.get("/api/tags/", auth=alice)) == ["cat"]


def test_a_tag_list_writes_each_tag_as_the_schema_dumps_it(app, client, alice, make_tag, admin):
    """The list reads plain rows (tags.read_tags); a single tag goes through `TagSchema`."""
    make_tag("cat", alice)
    make_tag("Dog", admin)

    listed = client.get("/api/tags/", auth=alice).json["results"]

    with app.app_context():
        tags = db.session.scalars(select(Tag).order_by(Tag.name_folded)).all()
        assert listed == [tag_schema.dump(tag) for tag in tags]
    assert [list(tag) for tag in listed] == [list(tag_schema.fields)] * 2
