"""Image list filters: tags, dates, uploader, format, dimensions, checksum, ordering, pages."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from helpers import Auth, image_bytes, result_ids, set_created_at
from werkzeug.test import TestResponse

RED_PNG_40X30 = image_bytes("PNG", (40, 30))
RED_PNG_40X30_SHA256 = hashlib.sha256(RED_PNG_40X30).hexdigest()

# key: (uploader, format, (width, height), tags, day of January 2026 it was created, at noon UTC)
GALLERY = {
    "p1": ("alice", "PNG", (8, 6), ["cat", "dog"], 1),
    "p2": ("alice", "PNG", (40, 30), ["cat", "dog", "sky"], 2),
    "p3": ("alice", "GIF", (40, 30), ["cat", "dog"], 3),
    "p4": ("alice", "PNG", (8, 6), [], 4),
    "p5": ("bob", "PNG", (40, 30), ["cat"], 5),
    "p6": ("bob", "GIF", (8, 30), ["dog", "sky"], 6),
    "p7": ("bob", "PNG", (40, 6), ["cat", "dog"], 7),
    "p8": ("alice", "JPEG", (40, 30), [], 8),
    "p9": ("bob", "PNG", (40, 30), ["sky"], 9),
    "p10": ("bob", "GIF", (8, 6), [], 10),
}

# Each filter alone, and what it selects from the gallery, newest first; each selects 3 or more.
SINGLE_FILTERS = {
    "tags": ("tags=cat", ["p7", "p5", "p3", "p2", "p1"]),
    "tags-all-of": ("tags=cat,dog", ["p7", "p3", "p2", "p1"]),
    "tags-repeated": ("tags=cat&tags=dog", ["p7", "p3", "p2", "p1"]),
    "any_tags": ("any_tags=sky", ["p9", "p6", "p2"]),
    "any_tags-one-of": ("any_tags=cat,sky", ["p9", "p7", "p6", "p5", "p3", "p2", "p1"]),
    "any_tags-repeated": ("any_tags=cat&any_tags=sky", ["p9", "p7", "p6", "p5", "p3", "p2", "p1"]),
    "exclude_tags": ("exclude_tags=cat", ["p10", "p9", "p8", "p6", "p4"]),
    "exclude_tags-none-of": ("exclude_tags=cat,sky", ["p10", "p8", "p4"]),
    "exclude_tags-repeated": ("exclude_tags=cat&exclude_tags=sky", ["p10", "p8", "p4"]),
    "untagged-true": ("untagged=true", ["p10", "p8", "p4"]),
    "untagged-false": ("untagged=false", ["p9", "p7", "p6", "p5", "p3", "p2", "p1"]),
    "start_date": ("start_date=2026-01-05", ["p10", "p9", "p8", "p7", "p6", "p5"]),
    "end_date": ("end_date=2026-01-04", ["p4", "p3", "p2", "p1"]),
    "created_after": ("created_after=2026-01-08T12:00:00Z", ["p10", "p9", "p8"]),
    "created_before": ("created_before=2026-01-04T14:00:00%2B02:00", ["p3", "p2", "p1"]),
    "created_by": ("created_by=bob", ["p10", "p9", "p7", "p6", "p5"]),
    "content_type": ("content_type=image/gif", ["p10", "p6", "p3"]),
    "min_width": ("min_width=40", ["p9", "p8", "p7", "p5", "p3", "p2"]),
    "min_height": ("min_height=30", ["p9", "p8", "p6", "p5", "p3", "p2"]),
    "sha256": (f"sha256={RED_PNG_40X30_SHA256}", ["p9", "p5", "p2"]),
}

COMBINED_FILTERS = {
    "tags-and-exclude_tags": ("tags=cat&exclude_tags=sky", ["p7", "p5", "p3", "p1"]),
    "any_tags-and-exclude_tags": ("any_tags=dog,sky&exclude_tags=cat", ["p9", "p6"]),
    "tags-and-any_tags": ("tags=dog&any_tags=cat,sky", ["p7", "p6", "p3", "p2", "p1"]),
    "tags-comma-and-repeated": ("tags=cat,dog&tags=sky", ["p2"]),
    "untagged-true-and-tags": ("untagged=true&tags=cat", []),
    "untagged-true-and-exclude_tags": ("untagged=true&exclude_tags=cat", ["p10", "p8", "p4"]),
    "untagged-false-and-exclude_tags": ("untagged=false&exclude_tags=cat", ["p9", "p6"]),
    "created_by-and-content_type": ("created_by=bob&content_type=image/png", ["p9", "p7", "p5"]),
    "min_width-and-min_height": ("min_width=40&min_height=30", ["p9", "p8", "p5", "p3", "p2"]),
    "created_by-and-dates": (
        "created_by=alice&start_date=2026-01-03&end_date=2026-01-08",
        ["p8", "p4", "p3"],
    ),
    "created_after-created_before-and-tags": (
        "created_after=2026-01-02T00:00:00Z&created_before=2026-01-07T00:00:00Z&tags=cat",
        ["p5", "p3", "p2"],
    ),
    "sha256-and-created_by": (f"sha256={RED_PNG_40X30_SHA256}&created_by=bob", ["p9", "p5"]),
    "dates-and-created_after": (
        "start_date=2026-01-02&end_date=2026-01-09&created_after=2026-01-06T00:00:00Z",
        ["p9", "p8", "p7", "p6"],
    ),
    "every-kind": (
        "tags=cat&any_tags=dog,sky&exclude_tags=sky&untagged=false&created_by=alice"
        "&content_type=image/png&start_date=2026-01-01&end_date=2026-01-10"
        "&created_after=2026-01-01T00:00:00Z&created_before=2026-01-11T00:00:00Z"
        "&min_width=8&min_height=6",
        ["p1"],
    ),
}


# Helpers


def at_noon(day: int) -> datetime:
    """Return noon UTC on a day of January 2026."""
    return datetime(2026, 1, day, 12, tzinfo=UTC)


def link_params(url: str) -> dict[str, list[str]]:
    """Return the query parameters of a page link."""
    return parse_qs(urlsplit(url).query)


def assert_bad_query(response: TestResponse, field: str) -> None:
    """Check that a list request was refused with a 400 naming one query parameter."""
    assert response.status_code == 400, response.json
    assert response.mimetype == "application/problem+json"
    assert list(response.json["errors"]["query"]) == [field]
    assert field in response.json["detail"]


@pytest.fixture
def gallery(app: Flask, alice: Auth, bob: Auth, make_tag, upload) -> dict[str, int]:
    """Upload the GALLERY images and return their ids by key."""
    for name in ("cat", "dog", "sky"):
        make_tag(name, alice)
    users = {"alice": alice, "bob": bob}
    ids = {}
    for key, (owner, fmt, size, tags, day) in GALLERY.items():
        response = upload(users[owner], tags=tags, content=image_bytes(fmt, size), filename=key)
        assert response.status_code == 201, response.json
        ids[key] = response.json["id"]
        set_created_at(app, ids[key], at_noon(day))
    return ids


@pytest.fixture
def one_image(app: Flask, alice: Auth, upload) -> Callable[..., int]:
    """Return a builder that uploads an image created at a given time and returns its id."""

    def one_image(when: datetime, content: bytes | None = None) -> int:
        response = upload(alice, content=content)
        assert response.status_code == 201, response.json
        set_created_at(app, response.json["id"], when)
        return response.json["id"]

    return one_image


# Each filter, alone and combined


@pytest.mark.parametrize(("query", "expected"), SINGLE_FILTERS.values(), ids=SINGLE_FILTERS.keys())
def test_filter_selects_the_matching_images(client, alice, gallery, query, expected):
    response = client.get(f"/api/images/?{query}&page_size=100", auth=alice)

    assert response.json["count"] == len(expected)
    assert result_ids(response) == [gallery[key] for key in expected]


@pytest.mark.parametrize(
    ("query", "expected"), COMBINED_FILTERS.values(), ids=COMBINED_FILTERS.keys()
)
def test_filters_combine_as_and(client, alice, gallery, query, expected):
    response = client.get(f"/api/images/?{query}&page_size=100", auth=alice)

    assert response.json["count"] == len(expected)
    assert result_ids(response) == [gallery[key] for key in expected]


# Every filter with pagination


@pytest.mark.parametrize(("query", "expected"), SINGLE_FILTERS.values(), ids=SINGLE_FILTERS.keys())
def test_filtered_first_page_counts_every_match(client, alice, gallery, query, expected):
    response = client.get(f"/api/images/?{query}&page_size=2", auth=alice)

    assert response.json["count"] == len(expected)
    assert result_ids(response) == [gallery[key] for key in expected[:2]]
    assert response.json["previous"] is None


@pytest.mark.parametrize(("query", "expected"), SINGLE_FILTERS.values(), ids=SINGLE_FILTERS.keys())
def test_filtered_next_link_keeps_the_filters(client, alice, gallery, query, expected):
    response = client.get(f"/api/images/?{query}&page_size=2", auth=alice)

    assert link_params(response.json["next"]) == parse_qs(query) | {
        "page_size": ["2"],
        "page": ["2"],
    }


@pytest.mark.parametrize(("query", "expected"), SINGLE_FILTERS.values(), ids=SINGLE_FILTERS.keys())
def test_filtered_second_page_continues_the_matches(client, alice, gallery, query, expected):
    first = client.get(f"/api/images/?{query}&page_size=2", auth=alice)

    response = client.get(first.json["next"], auth=alice)

    assert response.json["count"] == len(expected)
    assert result_ids(response) == [gallery[key] for key in expected[2:4]]
    assert link_params(response.json["previous"]) == parse_qs(query) | {
        "page_size": ["2"],
        "page": ["1"],
    }


@pytest.mark.parametrize(("query", "expected"), SINGLE_FILTERS.values(), ids=SINGLE_FILTERS.keys())
def test_filtered_next_links_visit_every_match_once(client, alice, gallery, query, expected):
    url, seen = f"/api/images/?{query}&page_size=2", []

    while url:
        response = client.get(url, auth=alice)
        seen += result_ids(response)
        url = response.json["next"]

    assert seen == [gallery[key] for key in expected]


@pytest.mark.parametrize(
    ("query", "expected"),
    [COMBINED_FILTERS["tags-and-any_tags"], COMBINED_FILTERS["min_width-and-min_height"]],
    ids=["tags-and-any_tags", "min_width-and-min_height"],
)
def test_combined_filters_hold_on_the_second_page(client, alice, gallery, query, expected):
    response = client.get(f"/api/images/?{query}&page_size=2&page=2", auth=alice)

    assert response.json["count"] == len(expected)
    assert result_ids(response) == [gallery[key] for key in expected[2:4]]
    assert link_params(response.json["next"]) == parse_qs(query) | {
        "page_size": ["2"],
        "page": ["3"],
    }


def test_filtered_page_past_the_matches_is_404(client, alice, gallery):
    response = client.get("/api/images/?untagged=true&page_size=2&page=3", auth=alice)

    assert response.status_code == 404


# Tags: all of, any of, none of, untagged


def test_any_tags_lists_an_image_with_several_of_them_once(client, alice, gallery):
    response = client.get("/api/images/?any_tags=cat,dog,sky&page_size=100", auth=alice)

    assert response.json["count"] == 7
    assert sorted(result_ids(response)) == sorted(
        gallery[key] for key in ("p1", "p2", "p3", "p5", "p6", "p7", "p9")
    )


def test_any_tags_with_an_unknown_tag_among_known_ones_is_400_naming_it(client, alice, gallery):
    response = client.get("/api/images/?any_tags=sky,unicorn", auth=alice)

    assert_bad_query(response, "any_tags")
    assert response.json["errors"]["query"]["any_tags"] == ["Unknown tags: unicorn."]


def test_any_tags_of_only_unknown_tags_is_400_naming_them(client, alice, gallery):
    response = client.get("/api/images/?any_tags=unicorn,dragon", auth=alice)

    assert response.json["errors"]["query"]["any_tags"] == ["Unknown tags: unicorn, dragon."]


def test_exclude_tags_of_an_unknown_tag_is_400_not_excluding_nothing(client, alice, gallery):
    response = client.get("/api/images/?exclude_tags=unicorn", auth=alice)

    assert_bad_query(response, "exclude_tags")
    assert response.json["errors"]["query"]["exclude_tags"] == ["Unknown tags: unicorn."]


def test_exclude_tags_ignores_case(client, alice, gallery):
    response = client.get("/api/images/?exclude_tags=CAT,Sky&page_size=100", auth=alice)

    assert result_ids(response) == [gallery[key] for key in ("p10", "p8", "p4")]


@pytest.mark.parametrize("param", ["tags", "any_tags", "exclude_tags"])
def test_repeated_tag_parameters_mean_the_same_as_a_comma_list(client, alice, gallery, param):
    repeated = client.get(f"/api/images/?{param}=cat&{param}=sky&page_size=100", auth=alice)
    comma = client.get(f"/api/images/?{param}=cat,sky&page_size=100", auth=alice)

    assert result_ids(repeated) == result_ids(comma)
    assert repeated.json["count"] == comma.json["count"]


@pytest.mark.parametrize("param", ["tags", "any_tags", "exclude_tags"])
def test_tag_filter_with_an_invalid_tag_name_is_400(client, alice, param):
    response = client.get(f"/api/images/?{param}={'x' * 51}", auth=alice)

    assert_bad_query(response, param)


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_untagged_with_a_bad_value_is_400(client, alice, value):
    response = client.get(f"/api/images/?untagged={value}", auth=alice)

    assert_bad_query(response, "untagged")
    assert response.json["errors"] == {"query": {"untagged": ["Not a valid boolean."]}}


# Creation time: created_after and created_before


def test_created_after_includes_an_image_created_at_that_instant(client, alice, one_image):
    image_id = one_image(datetime(2026, 1, 1, 8, tzinfo=UTC))

    response = client.get("/api/images/?created_after=2026-01-01T08:00:00Z", auth=alice)

    assert result_ids(response) == [image_id]


def test_created_before_excludes_an_image_created_at_that_instant(client, alice, one_image):
    one_image(datetime(2026, 1, 1, 8, tzinfo=UTC))

    response = client.get("/api/images/?created_before=2026-01-01T08:00:00Z", auth=alice)

    assert result_ids(response) == []


@pytest.mark.parametrize(
    ("value", "included"),
    [
        ("2026-01-01T10:00:00+02:00", True),
        ("2026-01-01T10:00:01+02:00", False),
        ("2026-01-01T03:00:00-05:00", True),
        ("2026-01-01T03:00:01-05:00", False),
        ("2026-01-01T09:59:59+02:00", True),
    ],
)
def test_created_after_honours_the_offset(client, alice, one_image, value, included):
    image_id = one_image(datetime(2026, 1, 1, 8, tzinfo=UTC))

    response = client.get("/api/images/", query_string={"created_after": value}, auth=alice)

    assert result_ids(response) == ([image_id] if included else [])


@pytest.mark.parametrize(
    ("value", "included"),
    [
        ("2026-01-01T10:00:00+02:00", False),
        ("2026-01-01T10:00:01+02:00", True),
        ("2026-01-01T03:00:01-05:00", True),
        ("2026-01-01T07:59:59+00:00", False),
    ],
)
def test_created_before_honours_the_offset(client, alice, one_image, value, included):
    image_id = one_image(datetime(2026, 1, 1, 8, tzinfo=UTC))

    response = client.get("/api/images/", query_string={"created_before": value}, auth=alice)

    assert result_ids(response) == ([image_id] if included else [])


def test_created_after_and_before_select_a_window(client, alice, one_image):
    one_image(datetime(2026, 1, 1, 7, 59, 59, tzinfo=UTC))
    inside = one_image(datetime(2026, 1, 1, 8, tzinfo=UTC))
    one_image(datetime(2026, 1, 1, 9, tzinfo=UTC))
    query = {"created_after": "2026-01-01T10:00:00+02:00", "created_before": "2026-01-01T09:00Z"}

    response = client.get("/api/images/", query_string=query, auth=alice)

    assert result_ids(response) == [inside]


@pytest.mark.parametrize("param", ["created_after", "created_before"])
@pytest.mark.parametrize("value", ["2026-01-01T10:00:00", "2026-01-01T10:00", "2026-01-01"])
def test_created_filter_without_an_offset_is_400(client, alice, param, value):
    response = client.get("/api/images/", query_string={param: value}, auth=alice)

    assert_bad_query(response, param)


@pytest.mark.parametrize("param", ["created_after", "created_before"])
@pytest.mark.parametrize(
    "value", ["yesterday", "2026-13-01T10:00:00Z", "2026-01-01T25:00:00Z", "10/01/2026", ""]
)
def test_created_filter_with_garbage_is_400(client, alice, param, value):
    response = client.get("/api/images/", query_string={param: value}, auth=alice)

    assert_bad_query(response, param)


# Uploader, content type, dimensions, checksum


def test_created_by_an_unknown_user_is_400_naming_it(client, alice, gallery):
    response = client.get("/api/images/?created_by=nobody", auth=alice)

    assert_bad_query(response, "created_by")
    assert response.json["errors"]["query"]["created_by"] == ["No user is named 'nobody'."]


def test_created_by_a_user_without_images_is_empty(client, alice, make_user, gallery):
    make_user("carol")

    response = client.get("/api/images/?created_by=carol", auth=alice)

    assert response.json["count"] == 0


def test_content_type_ignores_case(client, alice, gallery):
    response = client.get("/api/images/?content_type=IMAGE/JPEG", auth=alice)

    assert result_ids(response) == [gallery["p8"]]


def test_content_type_of_an_unstored_type_is_empty(client, alice, gallery):
    response = client.get("/api/images/?content_type=image/webp", auth=alice)

    assert response.json["count"] == 0


@pytest.mark.parametrize(
    ("query", "included"),
    [
        ("min_width=40", True),
        ("min_width=41", False),
        ("min_height=30", True),
        ("min_height=31", False),
    ],
)
def test_minimum_dimensions_are_inclusive(client, alice, upload, query, included):
    image_id = upload(alice, content=image_bytes("PNG", (40, 30))).json["id"]

    response = client.get(f"/api/images/?{query}", auth=alice)

    assert result_ids(response) == ([image_id] if included else [])


@pytest.mark.parametrize("param", ["min_width", "min_height"])
@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "", "99999999999"])
def test_minimum_dimension_with_a_bad_value_is_400(client, alice, param, value):
    response = client.get(f"/api/images/?{param}={value}", auth=alice)

    assert_bad_query(response, param)


def test_sha256_combines_with_tags(client, alice, gallery):
    response = client.get(f"/api/images/?sha256={RED_PNG_40X30_SHA256}&tags=sky", auth=alice)

    assert result_ids(response) == [gallery["p9"], gallery["p2"]]


# Ordering


@pytest.fixture
def trio(one_image: Callable[..., int]) -> dict[str, int]:
    """Upload three images whose orders by id, creation time and size all differ.

    By id: small, large, medium. Created: medium, small, large. Size: small, medium, large.
    """
    contents = {
        "small": image_bytes("PNG", (8, 6)),
        "large": image_bytes("PNG", (200, 150)),
        "medium": image_bytes("PNG", (40, 30)),
    }
    assert len(contents["small"]) < len(contents["medium"]) < len(contents["large"])
    days = {"small": 2, "large": 3, "medium": 1}
    return {key: one_image(at_noon(days[key]), content) for key, content in contents.items()}


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("created_at", ["medium", "small", "large"]),
        ("-created_at", ["large", "small", "medium"]),
        ("size", ["small", "medium", "large"]),
        ("-size", ["large", "medium", "small"]),
        ("id", ["small", "large", "medium"]),
        ("-id", ["medium", "large", "small"]),
    ],
)
def test_ordering(client, alice, trio, ordering, expected):
    response = client.get(f"/api/images/?ordering={ordering}", auth=alice)

    assert result_ids(response) == [trio[key] for key in expected]


def test_default_ordering_is_newest_first(client, alice, trio):
    response = client.get("/api/images/", auth=alice)

    assert result_ids(response) == [trio["large"], trio["small"], trio["medium"]]


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [("size", ["first", "second"]), ("-size", ["second", "first"])],
)
def test_ordering_by_size_breaks_ties_by_id(client, alice, upload, ordering, expected):
    ids = {key: upload(alice).json["id"] for key in ("first", "second")}

    response = client.get(f"/api/images/?ordering={ordering}", auth=alice)

    assert result_ids(response) == [ids[key] for key in expected]


@pytest.mark.parametrize("ordering", ["name", "Size", "--id", "width", "size,id", ""])
def test_bad_ordering_is_400(client, alice, ordering):
    response = client.get(f"/api/images/?ordering={ordering}", auth=alice)

    assert_bad_query(response, "ordering")


@pytest.mark.parametrize(
    ("ordering", "second"),
    [
        ("created_at", "small"),
        ("-created_at", "small"),
        ("size", "medium"),
        ("-size", "medium"),
        ("id", "large"),
        ("-id", "large"),
    ],
)
def test_ordering_holds_across_pages(client, alice, trio, ordering, second):
    first = client.get(f"/api/images/?ordering={ordering}&page_size=1", auth=alice)

    response = client.get(first.json["next"], auth=alice)

    assert link_params(first.json["next"]) == {
        "ordering": [ordering],
        "page_size": ["1"],
        "page": ["2"],
    }
    assert result_ids(response) == [trio[second]]


def test_ordering_combines_with_filters(client, alice, gallery):
    response = client.get("/api/images/?tags=cat&ordering=id&page_size=3&page=2", auth=alice)

    assert response.json["count"] == 5
    assert result_ids(response) == [gallery["p5"], gallery["p7"]]
