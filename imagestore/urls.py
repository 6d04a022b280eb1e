"""Absolute URLs of API resources, built from templates instead of the router each time."""

from __future__ import annotations

from typing import Any

from flask import current_app, request, url_for

# Stand-ins for the values while a template is built: numbers no real URL part holds.
STAND_IN = 1_987_654_321
# Templates depend on the host and root path a request names; a client chooses those, so the
# memory of them is bounded.
MAX_TEMPLATES = 512


def url_template(endpoint: str, *names: str) -> str:
    """Return this request's absolute URL of `endpoint` as a `str.format` template of `names`.

    The router builds each shape (host, endpoint and value names) once; integers fill it in.
    """
    templates = current_app.extensions.setdefault("imagestore.url_templates", {})
    # Flask types the `request` proxy as the Request it stands for, without the proxy's methods.
    req = request._get_current_object()  # type: ignore[attr-defined]
    # What the router builds an external URL from (the same as `host_url`, which costs more).
    key = (req.scheme, req.host, req.root_path, endpoint, *names)
    template = templates.get(key)
    if template is None:
        stand_ins: dict[str, Any] = {name: STAND_IN + index for index, name in enumerate(names)}
        template = url_for(endpoint, _external=True, **stand_ins)
        template = template.replace("{", "{{").replace("}", "}}")
        for name, stand_in in stand_ins.items():
            template = template.replace(str(stand_in), "{" + name + "}")
        if len(templates) >= MAX_TEMPLATES:
            templates.clear()
        templates[key] = template
    return template


def external_url(endpoint: str, **values: Any) -> str:
    """Return `url_for(endpoint, **values, _external=True)` for integer values, quickly.

    A list of 100 images needs hundreds of URLs: only the first of each shape asks the router.
    """
    if not all(type(value) is int for value in values.values()):
        return url_for(endpoint, _external=True, **values)
    return url_template(endpoint, *values).format(**values)
