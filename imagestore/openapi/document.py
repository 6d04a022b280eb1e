"""The OpenAPI document of an app: every documented view under /api/, through apispec."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema, fields
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import FloatConverter, IntegerConverter, Rule, UUIDConverter

from ..errors import PROBLEM_JSON
from .components import PageSchema, ProblemSchema
from .described import JSON, SECURITY_SCHEMES, Described

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
BINARY = {"type": "string", "format": "binary"}
BODY_LOCATIONS = ("json", "form", "files", "json_or_form")
BLUEPRINT_PREFIX = re.compile(r'^Blueprint "\w+": ')  # how blueprint modules start their docstring
ROUTE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
RETRY_AFTER = {
    "description": "Whole seconds until a Basic login from this client is checked again.",
    "schema": {"type": "integer", "minimum": 1},
}
OCTET_STREAM = "application/octet-stream"
# What a view's `doc(media_type=...)` says of a file in any of the image types the app sends.
IMAGE_FILES = "image/*"
# Thumbnails are WebP, whatever their original (imaging.make_thumbnail).
THUMBNAIL_MEDIA_TYPE = "image/webp"
# The request headers of conditional and range requests that a file download answers
# (storage.send: werkzeug decides as for any file it sends).
FILE_REQUEST_HEADERS = {
    "Range": "One range of bytes, such as `bytes=0-1023`: 206 with that part; 416 when the"
    " range is past the end of the file or not one range of bytes.",
    "If-Range": "The ETag or Last-Modified the client holds: the Range is sent only if the file"
    " is still that one, the whole file otherwise.",
    "If-Match": "ETags the client expects: 412 unless one is the file's.",
    "If-None-Match": "ETags the client holds: 304 when one is the file's.",
    "If-Modified-Since": "An HTTP date: 304 when the file is not newer.",
}


def documented_methods(rule: Rule) -> set[str]:
    """Return a route's methods but HEAD and OPTIONS (Flask lists every route's methods)."""
    return (rule.methods or set()) - {"HEAD", "OPTIONS"}


def api_rules(app: Flask) -> Iterator[tuple[Rule, str]]:
    """Yield each route under /api/ once (not its slash twin), with each of its methods."""
    seen: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api"):
            continue
        for method in sorted(documented_methods(rule)):
            key = (rule.rule.rstrip("/"), method)
            if key not in seen:
                seen.add(key)
                yield rule, method


def openapi_path(rule: Rule) -> str:
    """Turn a Flask route into an OpenAPI path: `<int:image_id>` becomes `{image_id}`."""
    return ROUTE_VARIABLE.sub(r"{\1}", rule.rule)


def path_parameters(rule: Rule) -> list[dict[str, Any]]:
    """Describe a route's variables, typed by their converters."""
    parameters = []
    for name in ROUTE_VARIABLE.findall(rule.rule):
        converter = rule._converters[name]  # werkzeug keeps no public map of a rule's converters
        if isinstance(converter, IntegerConverter | FloatConverter):
            schema: dict[str, Any] = {
                "type": "integer" if isinstance(converter, IntegerConverter) else "number"
            }
            if converter.min is not None or not converter.signed:
                schema["minimum"] = converter.min if converter.min is not None else 0
            if converter.max is not None:
                schema["maximum"] = converter.max
        elif isinstance(converter, UUIDConverter):
            schema = {"type": "string", "format": "uuid"}
        else:
            schema = {"type": "string", "minLength": 1}
        parameters.append({"in": "path", "name": name, "required": True, "schema": schema})
    return parameters


class DocumentBuilder:
    """Builds the document of one app: operations from views, schemas through apispec."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        plugin = MarshmallowPlugin()
        self.spec = APISpec(
            title="imagestore",
            version=package_version(),
            openapi_version="3.0.3",
            plugins=[plugin],
            security=[{name: []} for name in SECURITY_SCHEMES],  # public operations say []
            info={
                "description": "Images, their tags and a log of every API call. Errors are"
                " RFC 9457 problem details. Try any route here: Authorize first. Behind its"
                " nginx (`python -m imagestore.serve`), any request may also get nginx's own"
                " answers, as problem details too: 408, 414 or 431 for a slow or oversized"
                " request, 502, 503 or 504 while the application server is down or slow."
            },
        )
        if plugin.converter is None:  # APISpec sets it up when given the plugin
            raise RuntimeError("apispec did not set up the marshmallow converter")
        self.converter = plugin.converter
        self.converter.add_attribute_function(field_openapi_schema)
        for name, scheme in SECURITY_SCHEMES.items():
            self.spec.components.security_scheme(name, scheme)
        self.problem = self.ref(ProblemSchema)
        self.tagged: set[str] = set()

    def ref(self, schema: Schema | type[Schema]) -> dict[str, Any]:
        """Register a schema as a component and return a reference to it."""
        return self.converter.resolve_nested_schema(schema)

    def json_schema(self, schema: Schema | type[Schema]) -> dict[str, Any]:
        """Return the inline JSON schema of a marshmallow schema."""
        return self.converter.schema2jsonschema(schema)

    def build(self) -> dict[str, Any]:
        """Describe every documented operation under /api/."""
        for rule, method in api_rules(self.app):
            view = self.app.view_functions[rule.endpoint]
            described: Described | None = getattr(view, "openapi", None)
            if described is None:
                continue  # tests/test_openapi.py names every route left out
            operation = self.operation(rule, method, view, described)
            self.spec.path(path=openapi_path(rule), operations={method.lower(): operation})
        document = self.spec.to_dict()
        for response in iter_success_responses(document):
            for content in response.get("content", {}).values():
                require_every_property(document, content.get("schema", {}))
        return document

    def operation(
        self, rule: Rule, method: str, view: Callable, described: Described
    ) -> dict[str, Any]:
        """Describe one method of one route."""
        inputs = getattr(view, "openapi_inputs", ())
        blueprint = rule.endpoint.partition(".")[0]
        self.tag(blueprint)
        summary, _, description = (inspect.getdoc(view) or "").partition("\n")
        parameters = path_parameters(rule) + self.query_parameters(inputs)
        if sends_file(described):
            parameters += [
                {"in": "header", "name": name, "description": text, "schema": {"type": "string"}}
                for name, text in FILE_REQUEST_HEADERS.items()
            ]
        body = self.request_body(inputs)
        reads_files = any(location == "files" for location, _ in inputs)
        operation: dict[str, Any] = {
            "tags": [blueprint],
            "operationId": self.operation_id(rule, method),
            "summary": summary.strip(),
            "parameters": parameters,
        }
        if description.strip():
            operation["description"] = description.strip()
        if body:
            operation["requestBody"] = body
        operation["responses"] = self.responses(
            rule, method, described, has_body=body is not None, reads_files=reads_files
        )
        if described.public:
            operation["security"] = []
        elif described.schemes != tuple(SECURITY_SCHEMES):
            operation["security"] = [{name: []} for name in described.schemes]
        return operation

    def operation_id(self, rule: Rule, method: str) -> str:
        """Name an operation after its view, and its method when the view has several."""
        name = rule.endpoint.rpartition(".")[2]
        return f"{name}_{method.lower()}" if len(documented_methods(rule)) > 1 else name

    def tag(self, blueprint: str) -> None:
        """Add a blueprint's group to the document once, described by its module docstring."""
        if blueprint in self.tagged:
            return
        self.tagged.add(blueprint)
        module = sys.modules.get(getattr(self.app.blueprints.get(blueprint), "import_name", ""))
        text = (inspect.getdoc(module) or "").partition("\n")[0] if module else ""
        text = BLUEPRINT_PREFIX.sub("", text)
        text = text[:1].upper() + text[1:]
        self.spec.tag({"name": blueprint, "description": text} if text else {"name": blueprint})

    def query_parameters(self, inputs: tuple) -> list[dict[str, Any]]:
        """Describe the query parameters of the view's `use_args(..., location="query")`."""
        parameters = []
        for location, argmap in inputs:
            if location == "query":
                parameters += self.converter.schema2parameters(as_schema(argmap), location="query")
        return parameters

    def request_body(self, inputs: tuple) -> dict[str, Any] | None:
        """Describe the body the view's `use_args` read: JSON, form fields and files."""
        by_location = {location: as_schema(argmap) for location, argmap in inputs}
        if not any(location in BODY_LOCATIONS for location in by_location):
            return None
        content: dict[str, Any] = {}
        required = False
        if "json" in by_location or "json_or_form" in by_location:
            schema = by_location.get("json") or by_location["json_or_form"]
            content[JSON] = {"schema": self.ref(schema)}
            required = bool(self.json_schema(schema).get("required"))
        if "form" in by_location or "files" in by_location or "json_or_form" in by_location:
            form = self.form_schema(
                by_location.get("form") or by_location.get("json_or_form"),
                by_location.get("files"),
            )
            if "files" not in by_location:
                content[FORM] = {"schema": form}
            content[MULTIPART] = {"schema": form}
            required = required or bool(form.get("required"))
        return {"required": required, "content": content}

    def form_schema(self, form: Schema | None, files: Schema | None) -> dict[str, Any]:
        """Merge form fields and files into the one schema of a form body."""
        merged: dict[str, Any] = {"type": "object", "properties": {}}
        required: list[str] = []
        for schema, is_files in ((form, False), (files, True)):
            if schema is None:
                continue
            json_schema = self.json_schema(schema)
            for name, prop in json_schema.get("properties", {}).items():
                merged["properties"][name] = file_property(prop) if is_files else prop
            required += json_schema.get("required", [])
        if required:
            merged["required"] = required
        return merged

    def responses(
        self, rule: Rule, method: str, described: Described, has_body: bool, reads_files: bool
    ) -> dict[str, Any]:
        """Describe the success response and every other status the operation can answer."""
        if sends_file(described):
            responses = self.file_responses(described)
        else:
            responses = {str(described.status): self.success(described)}
        errors = error_statuses(rule, method, described, has_body, reads_files)
        for code, reasons in sorted(errors.items()):
            responses[str(code)] = {
                "description": " ".join([f"{HTTP_STATUS_CODES[code]}.", *reasons]),
                "content": {PROBLEM_JSON: {"schema": self.problem}},
            }
        if 429 in errors:
            responses["429"]["headers"] = {"Retry-After": RETRY_AFTER}
        if 415 in errors:
            responses["415"]["headers"] = {
                name: header("The media types of bodies this operation reads.", required=False)
                for name in ("Accept-Post", "Accept-Patch")
            }
        if 416 in errors:
            responses["416"]["headers"] = {
                "Content-Range": header("The file's length in bytes: `bytes */<length>`.")
            }
        return responses

    def success(self, described: Described) -> dict[str, Any]:
        """Describe the success response of an operation that answers JSON, or nothing."""
        success: dict[str, Any] = {"description": HTTP_STATUS_CODES[described.status]}
        if described.response is not None:
            shapes = described.response
            shapes = shapes if isinstance(shapes, tuple) else (shapes,)
            refs = [self.ref(shape) for shape in shapes]
            if described.page:
                refs = [self.page_schema(ref) for ref in refs]
            schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
            success["content"] = {described.media_type: {"schema": schema}}
        elif described.status != 204:
            success["content"] = {JSON: {"schema": {"type": "object"}}}
        if described.headers:
            success["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in described.headers.items()
            }
        return success

    def file_responses(self, described: Described) -> dict[str, Any]:
        """Describe a file download: its bytes, a part of them, or that the client's copy holds.

        The file is binary in each media type it may have, and in `application/octet-stream`,
        which clients that know no image type (generated ones) read as bytes.
        """
        media_types = [*self.file_media_types(described.media_type), OCTET_STREAM]
        content = {media_type: {"schema": BINARY} for media_type in media_types}
        max_age = self.app.config["FILE_CACHE_SECONDS"]
        cache_control = header(f"`private, max-age={max_age}`: kept by the client alone.")
        etag = header("The file's SHA-256, quoted; a thumbnail's adds `-<size>`.")
        sent = {
            "ETag": etag,
            "Last-Modified": header("When the image was uploaded."),
            "Cache-Control": cache_control,
            "Content-Disposition": header(
                "`inline`, with the file's name (a thumbnail's ends in `-<size>.webp`)."
            ),
            "Accept-Ranges": header("`bytes`: a `Range` may ask for part of the file."),
            "Content-Security-Policy": header(
                "`sandbox`: opened in a browser, the file runs no script."
            ),
        }
        listed = ", ".join(media_types[:-1])
        responses = {
            "200": {
                "description": f"The file, in its own media type ({listed}; a thumbnail is"
                " image/webp). application/octet-stream is listed for clients that read any"
                " binary body as bytes: the service always names the image's type.",
                "headers": sent,
                "content": content,
            },
            "206": {
                "description": "The range of bytes that `Range` asked for.",
                "headers": sent
                | {"Content-Range": header("The part sent: `bytes <first>-<last>/<length>`.")},
                "content": content,
            },
            "304": {
                "description": "The client's copy is the file (`If-None-Match`,"
                " `If-Modified-Since`): no body.",
                "headers": {"ETag": etag, "Cache-Control": cache_control},
            },
            "412": {
                "description": "The file is not the one `If-Match` names.",
                "content": {PROBLEM_JSON: {"schema": self.problem}},
            },
        }
        seconds = getattr(self.app.extensions.get("imagestore.storage"), "presign_seconds", 0)
        if seconds:
            responses["302"] = {
                "description": "The file is fetched from the object store: `Location` is a"
                f" presigned URL, valid {seconds} seconds, that answers as above.",
                "headers": {
                    "Location": header("The presigned URL of the file."),
                    "Cache-Control": header(f"`private, max-age={seconds}`: the URL's life."),
                },
            }
        return dict(sorted(responses.items()))

    def file_media_types(self, media_type: str) -> list[str]:
        """Return the media types a file response may have: those of the image formats
        accepted on upload and of thumbnails, for `image/*`."""
        if media_type != IMAGE_FILES:
            return [media_type]
        from ..images.imaging import stored_media_types  # the images package imports `doc`

        stored = stored_media_types(self.app.config["IMAGE_FORMATS"])
        return list(dict.fromkeys([*stored, THUMBNAIL_MEDIA_TYPE]))

    def page_schema(self, row: dict[str, Any]) -> dict[str, Any]:
        """Return a reference to the page envelope of rows of one schema."""
        name = f"{row['$ref'].rpartition('/')[2]}Page"
        if name not in self.spec.components.schemas:
            envelope = self.json_schema(PageSchema)
            envelope["properties"]["results"] = {"type": "array", "items": row}
            envelope["required"] = [*envelope["required"], "results"]
            self.spec.components.schema(name, envelope)
        return {"$ref": f"#/components/schemas/{name}"}


def sends_file(described: Described) -> bool:
    """Tell whether an operation answers with a file (a non-JSON body without a schema)."""
    return described.response is None and described.media_type != JSON


def error_statuses(
    rule: Rule, method: str, described: Described, has_body: bool, reads_files: bool
) -> dict[int, list[str]]:
    """Return every error status an operation can answer, with what makes the usual ones.

    This is where the rules live: the statuses that a view's `doc(errors=...)` names come with
    those that follow from its route, its method, its body, its security and its files.
    """
    errors: dict[int, list[str]] = {400: [], **{code: [] for code in described.errors}}

    def add(code: int, reason: str) -> None:
        errors.setdefault(code, []).append(reason)

    if not described.public:
        add(401, "Credentials are missing or wrong.")
        if "basicAuth" in described.schemes:
            add(429, "Basic logins from this client, or for this user, failed too often.")
    if described.page or ROUTE_VARIABLE.search(rule.rule):
        errors.setdefault(404, [])
    if has_body:
        add(413, "The body is larger than the upload limit.")
        add(415, "The body is in a media type this operation does not read.")
    if method != "GET":
        add(403, "A change that another site's page sends (Origin, Sec-Fetch-Site) is refused.")
        add(409, "A concurrent request changed the same data.")
    if sends_file(described):
        add(416, "The Range is past the end of the file, or not one range of bytes.")
    if reads_files or sends_file(described):
        # Only the file store does I/O in a request (errors.py): uploads stage and place files,
        # downloads read them and make thumbnails.
        add(503, "The file store failed; try again later.")
        add(507, "The file store is full.")
    return errors


def header(description: str, required: bool = True) -> dict[str, Any]:
    """Describe a response header of text."""
    return {"description": description, "required": required, "schema": {"type": "string"}}


def field_openapi_schema(
    converter: Any, field: fields.Field, ret: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    """Let a custom field class describe its values: `openapi_schema(inferred) -> property`."""
    describe = getattr(type(field), "openapi_schema", None)
    if describe is None:
        return {}
    described = describe(dict(ret))
    ret.clear()  # apispec merges what this returns into what it inferred: replace it instead
    return described


def as_schema(argmap: Any) -> Schema:
    """Return the schema of a `use_args` argmap: a schema, its class, or a dict of fields."""
    if isinstance(argmap, Schema):
        return argmap
    if isinstance(argmap, type) and issubclass(argmap, Schema):
        return argmap()
    return Schema.from_dict(dict(argmap))()


def file_property(prop: dict[str, Any]) -> dict[str, Any]:
    """Describe a files field as a file; a list of at most one file is one file."""
    if prop.get("type") == "array" and prop.get("maxItems") != 1:
        return {**prop, "items": BINARY}
    return BINARY | {key: prop[key] for key in ("description",) if key in prop}


def iter_success_responses(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every 2xx response of the document."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.startswith("2"):
                    yield response


def require_every_property(document: dict[str, Any], schema: dict[str, Any]) -> None:
    """Mark every property of a response schema required: the service always writes them all."""
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rpartition("/")[2]]
    properties = schema.get("properties", {})
    if properties:
        schema["required"] = list(properties)
    for prop in [*properties.values(), schema.get("items", {}), *schema.get("oneOf", [])]:
        if "$ref" in prop or "oneOf" in prop or prop.get("type") in ("object", "array"):
            require_every_property(document, prop)


def package_version() -> str:
    """Return the installed version of imagestore."""
    try:
        return version("imagestore")
    except PackageNotFoundError:
        return "0"


def build_document(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI document of an app's API."""
    return DocumentBuilder(app).build()
