"""The OpenAPI document and the Swagger UI page: valid, complete, public and not tracked."""

from __future__ import annotations

import errno
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flask_swagger_ui
import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import image_bytes, tracking_rows
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from werkzeug.test import TestResponse

from imagestore.errors import PROBLEM_JSON
from imagestore.openapi import UNDOCUMENTED_ENDPOINTS, build_document, doc
from imagestore.schemas import PageArgs, RootSchema, TagSchema, use_args
from imagestore.storage import Staged, content_key
from imagestore.storage.local import LocalStorage

ROUTE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
ASSET = re.compile(r'(?:src|href)="([^"]*)"')
BINARY = {"type": "string", "format": "binary"}
# The operations that use the file store: an upload and a download (with its thumbnails).
FILE_STORE_OPERATIONS = {"create_image", "get_image_file"}


def served_routes(app: Flask) -> set[tuple[str, str]]:
    """Every (path, method) Flask answers under /api/, a path and its slash twin counted once."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api") and rule.endpoint not in UNDOCUMENTED_ENDPOINTS:
            path = ROUTE_VARIABLE.sub(r"{\1}", rule.rule).rstrip("/")
            routes |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (path, method) the document describes, trailing slash aside."""
    return {
        (path.rstrip("/"), method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }


def operation(document: dict[str, Any], operation_id: str) -> dict[str, Any]:
    """Return the operation with this id."""
    [found] = [
        described
        for operations in document["paths"].values()
        for described in operations.values()
        if described["operationId"] == operation_id
    ]
    return found


def resolved(document: dict[str, Any], schema: Any) -> Any:
    """Return a schema with every `$ref` replaced by what it points to."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rpartition("/")[2]
            return resolved(document, document["components"]["schemas"][name])
        return {key: resolved(document, value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [resolved(document, item) for item in schema]
    return schema


def assert_documented(document: dict[str, Any], operation_id: str, response: TestResponse) -> None:
    """Check that an operation documents a response: its status, media type, body and the
    headers it says are always sent."""
    responses = operation(document, operation_id)["responses"]
    described = responses.get(str(response.status_code))
    assert described is not None, (operation_id, response.status_code)
    content = described.get("content", {})
    if not content:
        assert response.data == b"", (operation_id, response.status_code)
    else:
        assert response.mimetype in content, (operation_id, response.mimetype)
        schema = resolved(document, content[response.mimetype]["schema"])
        if schema == BINARY:
            assert response.data, operation_id
        else:
            OAS30Validator(schema).validate(response.json if response.is_json else response.text)
    for name, header in described.get("headers", {}).items():
        assert name in response.headers or not header.get("required"), (operation_id, name)


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.json


# The document


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)

    assert document["openapi"].startswith("3.")


def test_every_api_route_is_documented(app: Flask, document: dict[str, Any]) -> None:
    missing = served_routes(app) - documented_routes(document)

    assert not missing, f"routes without @doc(...) (imagestore/openapi.py): {sorted(missing)}"


def test_document_names_only_routes_that_exist(app: Flask, document: dict[str, Any]) -> None:
    invented = documented_routes(document) - served_routes(app)

    assert not invented, f"documented but not served: {sorted(invented)}"


def test_a_route_without_doc_is_left_out_and_noticed(app: Flask) -> None:
    app.add_url_rule("/api/forgotten/", "forgotten", lambda: {})

    missing = served_routes(app) - documented_routes(build_document(app))

    assert missing == {("/api/forgotten", "GET")}


def test_doc_describes_a_route_from_its_schemas(app: Flask) -> None:
    @doc(TagSchema, page=True)
    @use_args(PageArgs(), location="query")
    def list_things(thing_id: int, query_args: dict[str, Any]) -> dict[str, Any]:
        """List things.

        Longer text.
        """
        return {}

    app.add_url_rule("/api/things/<int:thing_id>/", "things.list_things", list_things)

    document = build_document(app)

    described = document["paths"]["/api/things/{thing_id}/"]["get"]
    parameters = {parameter["name"]: parameter for parameter in described["parameters"]}
    assert described["summary"] == "List things."
    assert described["description"] == "Longer text."
    assert parameters["thing_id"]["in"] == "path"
    assert parameters["thing_id"]["schema"] == {"type": "integer", "minimum": 0}
    assert parameters["page_size"]["schema"]["maximum"] == 100
    assert described["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TagPage"
    }
    assert set(described["responses"]) == {"200", "400", "401", "404", "429"}


def test_document_is_public_and_not_tracked(app: Flask, client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert tracking_rows(app) == 0


def test_document_answers_without_the_trailing_slash_too(client: FlaskClient) -> None:
    assert client.get("/api/openapi.json/").status_code == 200


def test_list_filters_carry_types_bounds_and_formats(document: dict[str, Any]) -> None:
    images = {p["name"]: p for p in operation(document, "list_images")["parameters"]}
    trackings = {p["name"]: p for p in operation(document, "list_trackings")["parameters"]}

    assert images["page"]["schema"] == {"type": "integer", "default": 1, "minimum": 1}
    assert images["page_size"]["schema"]["maximum"] == 100
    assert images["start_date"]["schema"] == {"type": "string", "format": "date"}
    assert images["tags"]["explode"] is True
    assert {"GET", "POST", "DELETE"} <= set(trackings["method"]["schema"]["enum"])
    assert trackings["status_code"]["schema"]["minimum"] == 100
    assert trackings["status_code"]["schema"]["maximum"] == 599


def test_upload_is_multipart_with_a_binary_image_and_repeated_tags(
    document: dict[str, Any],
) -> None:
    body = operation(document, "create_image")["requestBody"]

    schema = resolved(document, body["content"]["multipart/form-data"]["schema"])
    image = schema["properties"]["image"]
    assert body["required"] is True
    assert "image" in schema["required"]
    assert image.get("format") == "binary" or image["items"]["format"] == "binary"
    tags = schema["properties"]["tags"]["anyOf"]
    assert {"type": "array", "items": tags[0]["items"], "maxItems": 100} == tags[0]
    assert tags[0]["items"]["maxLength"] == 50


def test_retagging_takes_json_or_form_fields(document: dict[str, Any]) -> None:
    body = operation(document, "replace_image_tags")["requestBody"]

    assert set(body["content"]) == {
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }
    schema = resolved(document, body["content"]["application/json"]["schema"])
    assert schema["required"] == ["tags"]


def test_every_error_is_problem_json_with_a_detail(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    errors = [
        response
        for operations in document["paths"].values()
        for described in operations.values()
        for status, response in described["responses"].items()
        if status[0] in "45"
    ]

    assert errors
    for response in errors:
        assert response["content"] == {
            PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
    assert {"type", "title", "status", "detail"} <= set(problem["required"])


def test_every_operation_with_a_path_variable_may_answer_404(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for described in operations.values():
            if "{" in path:
                assert "404" in described["responses"], described["operationId"]


def test_responses_list_every_field_as_required(document: dict[str, Any]) -> None:
    image = document["components"]["schemas"]["Image"]

    assert set(image["required"]) == set(image["properties"])
    assert image["properties"]["created_by"]["nullable"] is True


def test_operations_need_basic_or_bearer_credentials(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]

    assert schemes["basicAuth"] == {"type": "http", "scheme": "basic"}
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert document["security"] == [{"basicAuth": []}, {"bearerAuth": []}]
    assert operation(document, "get_openapi")["security"] == []
    assert "security" not in operation(document, "list_images")
    assert "401" in operation(document, "list_images")["responses"]


def test_responses_match_the_document(
    client: FlaskClient,
    document: dict[str, Any],
    admin: tuple[str, str],
    make_tag: Any,
    upload: Any,
) -> None:
    make_tag("cats", admin)
    image = upload(admin, tags=["cats"]).json
    calls = [
        ("create_image", upload(admin, tags=["cats"])),
        ("index", client.get("/api/", auth=admin)),
        ("list_images", client.get("/api/images/?tags=cats", auth=admin)),
        ("get_image", client.get(f"/api/images/{image['id']}/", auth=admin)),
        ("update_image_tags", client.patch(f"/api/images/{image['id']}/", json={}, auth=admin)),
        ("list_tags", client.get("/api/tags/", auth=admin)),
        ("get_tag", client.get("/api/tags/cats/", auth=admin)),
        ("list_trackings", client.get("/api/trackings/", auth=admin)),
        ("get_tracking", client.get("/api/trackings/1/", auth=admin)),
        ("list_images", client.get("/api/images/?page=0", auth=admin)),
        ("list_images", client.get("/api/images/")),
        ("get_tag", client.get("/api/tags/dogs/", auth=admin)),
        ("create_tag", client.post("/api/tags/", json={"name": "CATS"}, auth=admin)),
        ("replace_image_tags", client.put(f"/api/images/{image['id']}/", auth=admin)),
    ]

    for operation_id, response in calls:
        assert_documented(document, operation_id, response)


def test_downloads_are_binary_in_every_image_type_and_as_octet_stream(
    document: dict[str, Any],
) -> None:
    """Attack (on clients): a download typed `image/*`, which generated clients drop."""
    responses = operation(document, "get_image_file")["responses"]

    for status in ("200", "206"):
        content = responses[status]["content"]
        assert list(content) == [
            "image/jpeg",
            "image/png",
            "image/gif",
            "image/webp",
            "application/octet-stream",
        ]
        assert all(described["schema"] == BINARY for described in content.values())


def test_the_image_types_follow_the_accepted_formats(make_app: Callable[..., Flask]) -> None:
    """Attack (on clients): a list of media types that misses one the service sends."""
    document = build_document(make_app(IMAGE_FORMATS=["PNG", "TIFF"]))

    content = operation(document, "get_image_file")["responses"]["200"]["content"]

    assert list(content) == ["image/png", "image/tiff", "image/webp", "application/octet-stream"]


def test_downloads_name_their_range_and_conditional_headers(document: dict[str, Any]) -> None:
    """Attack (on clients): ranges and revalidation that a client cannot know it may ask for."""
    download = operation(document, "get_image_file")
    responses = download["responses"]
    headers = {p["name"] for p in download["parameters"] if p["in"] == "header"}

    def required(status: str) -> set[str]:
        listed = responses[status].get("headers", {})
        return {name for name, header in listed.items() if header["required"]}

    assert headers == {"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since"}
    assert {"ETag", "Last-Modified", "Cache-Control", "Content-Disposition"} <= required("200")
    assert "max-age=86400" in responses["200"]["headers"]["Cache-Control"]["description"]
    assert required("206") == required("200") | {"Content-Range"}
    assert required("304") == {"ETag", "Cache-Control"}
    assert "content" not in responses["304"]
    assert required("416") == {"Content-Range"}
    assert "302" not in responses  # files are sent by the service itself


def test_a_presigning_store_documents_its_redirect(make_app: Callable[..., Flask]) -> None:
    """Attack (on clients): a 302 to the object store that the contract does not mention."""
    app = make_app(STORAGE_URL="s3://bucket/media", S3_PRESIGNED_DOWNLOAD_SECONDS=60)

    redirect = operation(build_document(app), "get_image_file")["responses"]["302"]

    assert redirect["headers"]["Location"]["required"] is True
    assert "max-age=60" in redirect["headers"]["Cache-Control"]["description"]


def test_every_status_follows_from_what_the_operation_does(document: dict[str, Any]) -> None:
    """Attack (on clients): statuses the service answers that the contract leaves out."""
    for operations in document["paths"].values():
        for method, described in operations.items():
            responses = described["responses"]
            name = described["operationId"]
            public = described.get("security") == []
            has_body = "requestBody" in described
            assert "400" in responses, name
            assert ("401" in responses) == ("429" in responses) == (not public), name
            if not public:
                assert "Retry-After" in responses["429"]["headers"], name
            assert ("413" in responses) == ("415" in responses) == has_body, name
            if has_body:
                assert set(responses["415"]["headers"]) == {"Accept-Post", "Accept-Patch"}
            if method != "get":
                assert {"403", "409"} <= set(responses), name  # cross-site, concurrent change
            uses_files = name in FILE_STORE_OPERATIONS
            assert ("503" in responses) == ("507" in responses) == uses_files, name
            assert ("416" in responses) == (name == "get_image_file"), name


class FullStorage(LocalStorage):
    """A local store on a full disk: every file it would place fails."""

    def place(self, staged: Staged, key: str) -> None:
        staged.discard()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_download_answers_match_the_document(
    app: Flask,
    client: FlaskClient,
    document: dict[str, Any],
    alice: tuple[str, str],
    upload: Callable[..., Any],
) -> None:
    """Attack (on clients): download answers whose status, type or headers break the contract."""
    content = image_bytes("PNG", (300, 200))
    image = upload(alice, content=content).json
    url = f"/api/images/{image['id']}/file"
    etag = f'"{image["sha256"]}"'

    def get(path: str = url, **headers: str) -> TestResponse:
        return client.get(path, headers=headers, auth=alice)

    answers = [
        get(),
        get(Range="bytes=0-9"),
        get(Range="bytes=0-9", **{"If-Range": '"another"'}),
        get(**{"If-None-Match": etag}),
        get(**{"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}),
        get(Range=f"bytes={len(content)}-"),
        get(f"{url}?size=128"),
        get(f"{url}?size=127"),
        get("/api/images/999/file"),
        client.get(url),
    ]
    app.extensions["imagestore.storage"] = FullStorage(app.config["MEDIA_FOLDER"])
    full = [get(f"{url}?size=256"), upload(alice, content=image_bytes("PNG", (9, 9)))]
    os.remove(os.path.join(app.config["MEDIA_FOLDER"], content_key(image["sha256"], ".png")))
    answers += [get(), full[0]]

    assert [answer.status_code for answer in answers] == [
        *(200, 206, 200, 304, 304, 416, 200, 400, 404, 401),
        *(503, 507),  # the file is gone; no room for the thumbnail
    ]
    assert full[1].status_code == 507
    for answer in answers:
        assert_documented(document, "get_image_file", answer)
    assert_documented(document, "create_image", full[1])


def test_refused_bodies_and_cross_site_changes_match_the_document(
    client: FlaskClient, document: dict[str, Any], alice: tuple[str, str]
) -> None:
    """Attack (on clients): a 415 or a cross-site 403 that the contract does not list."""
    text = client.post("/api/tags/", data="name=cats", content_type="text/plain", auth=alice)
    foreign = client.post(
        "/api/tags/", json={"name": "cats"}, headers={"Origin": "https://other.example"}, auth=alice
    )

    assert (text.status_code, foreign.status_code) == (415, 403)
    assert_documented(document, "create_tag", text)
    assert_documented(document, "create_tag", foreign)


def test_a_presigned_redirect_matches_the_document(
    make_app: Callable[..., Flask], s3_settings: dict[str, Any], alice: tuple[str, str]
) -> None:
    """Attack (on clients): a redirect to the object store that breaks the contract."""
    app = make_app(**s3_settings, S3_PRESIGNED_DOWNLOAD_SECONDS=60)
    client = app.test_client()
    data = {"image": (io.BytesIO(image_bytes()), "photo.png")}
    image = client.post("/api/images/", data=data, auth=alice).json

    redirect = client.get(f"/api/images/{image['id']}/file", auth=alice)

    assert redirect.status_code == 302
    assert_documented(client.get("/api/openapi.json").json, "get_image_file", redirect)


# The Swagger UI page


def test_docs_page_loads_only_files_of_the_app(client: FlaskClient) -> None:
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assets = ASSET.findall(response.text)
    assert assets
    assert all(asset.startswith("/api/docs/") for asset in assets), assets
    assert '"validatorUrl": null' in response.text
    assert '"url": "/api/openapi.json"' in response.text


def test_docs_scripts_come_from_the_installed_package(client: FlaskClient) -> None:
    package = Path(flask_swagger_ui.__file__).parent / "dist"

    response = client.get("/api/docs/swagger-ui-bundle.js")

    assert response.status_code == 200
    assert response.data == (package / "swagger-ui-bundle.js").read_bytes()


def test_docs_are_public_and_not_tracked(app: Flask, client: FlaskClient) -> None:
    responses = [client.get(path) for path in ("/api/docs", "/api/docs/", "/api/docs/index.css")]

    assert [response.status_code for response in responses] == [200, 200, 200]
    assert tracking_rows(app) == 0


def test_api_root_links_to_the_docs_and_the_document(
    client: FlaskClient, alice: tuple[str, str]
) -> None:
    response = client.get("/api/", auth=alice)

    assert response.json["docs"] == "http://localhost/api/docs/"
    assert response.json["openapi"] == "http://localhost/api/openapi.json"
    assert set(response.json) == set(RootSchema().fields)
