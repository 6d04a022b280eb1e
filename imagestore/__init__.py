"""imagestore: a REST service for images, their tags and a log of every API call.

`create_app` builds the service. The server's modules are imported when it runs, so that
`imagestore.client` (scripts' side) loads none of them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; tests pass a dict that replaces instance and env config."""
    from . import api, health, images, tags, tokens, tracking
    from .app import ImageStore, answer_both_slashes, trust_proxies
    from .auth import init_auth
    from .db import db
    from .db_cli import AppCommands
    from .errors import register_error_handlers
    from .images.imaging import return_freed_memory
    from .logs import init_logging
    from .openapi import init_openapi
    from .security import init_security
    from .settings import load_settings
    from .storage import init_storage
    from .storage.cli import storage_cli
    from .tokens_cli import tokens_cli
    from .tracking.cli import trackings_cli
    from .users_cli import users_cli

    instance_path = os.environ.get("IMAGESTORE_INSTANCE_PATH") or None
    app = ImageStore(
        __name__,
        instance_path=instance_path and os.path.abspath(instance_path),
        instance_relative_config=True,
        static_folder=None,
    )
    app.cli = AppCommands(app)
    load_settings(app, test_config)
    return_freed_memory()
    trust_proxies(app)
    init_logging(app)  # first: its hooks wrap every other one

    db.init_app(app)
    init_auth(app)
    init_storage(app)
    register_error_handlers(app)
    tracking.init_tracking(app)
    init_security(app)  # after tracking: its response headers are the ones recorded
    for blueprint in (api.bp, health.bp, images.bp, tags.bp, tokens.bp, tracking.bp):
        app.register_blueprint(blueprint)
    init_openapi(app)
    answer_both_slashes(app)
    for commands in (users_cli, storage_cli, trackings_cli, tokens_cli):
        app.cli.add_command(commands)
    return app
