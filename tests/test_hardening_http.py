"""Hardening at the HTTP level: filters too long to run.

Each test sends the attack as its input: a thousand tag names in a filter.
"""

from __future__ import annotations

import pytest

from imagestore.schemas import TAG_NAMES_MAX

THOUSAND = ",".join(f"tag{n}" for n in range(1000))


# Filters and lists of tag names


@pytest.mark.parametrize("field", ["tags", "any_tags", "exclude_tags"])
def test_a_thousand_tag_names_in_a_filter_is_a_400(client, alice, field):
    """`?tags=` with 1,000 names: SQLite refuses an expression that deep (a 500 before)."""
    response = client.get("/api/images/", query_string={field: THOUSAND}, auth=alice)

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.json["errors"]["query"][field] == [f"Give at most {TAG_NAMES_MAX} tag names."]


def test_the_most_tag_names_a_filter_takes_are_answered(client, alice):
    """Exactly the cap, with every name unknown: an empty page, not an error."""
    names = ",".join(f"tag{n}" for n in range(TAG_NAMES_MAX))

    response = client.get("/api/images/", query_string={"exclude_tags": names}, auth=alice)

    assert response.status_code == 200


def test_an_upload_with_a_thousand_tags_is_a_400_and_stores_nothing(client, alice, upload):
    """An upload naming 1,000 tags."""
    response = upload(alice, tags=[THOUSAND])

    assert response.status_code == 400
    assert client.get("/api/images/", auth=alice).json["count"] == 0
