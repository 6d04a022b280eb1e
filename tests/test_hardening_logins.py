"""Hardening of logins and accounts: each test sends an attack and checks that it fails."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("user", ["²", "99999999999999999999"])
def test_tracking_user_filter_of_odd_digits_answers_no_rows(client, admin, user):
    """Attack: a `user` filter that `str.isdigit` calls digits but `int` refuses (a superscript),
    or a number that overflows the database's integer: both used to answer 500."""
    client.get("/api/", auth=admin)

    response = client.get("/api/trackings/", query_string={"user": user}, auth=admin)

    assert response.status_code == 200, response.json
    assert response.json["count"] == 0
