"""`flask db`: Flask-Migrate's commands, set up the first time the command line asks for them.

Flask-Migrate imports alembic and mako, about 11 MB in every process. gunicorn's workers never
migrate, so the app imports it only when `db` is looked up (or a script calls `init_migrations`).
"""

from __future__ import annotations

import os

import click
from flask import Flask
from flask.cli import AppGroup

from .db import db

MIGRATIONS_FOLDER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations")


def init_migrations(app: Flask) -> None:
    """Give the app Flask-Migrate: the `flask db` commands and `flask_migrate.upgrade()`."""
    from flask_migrate import Migrate

    Migrate(app, db, directory=MIGRATIONS_FOLDER)


class AppCommands(AppGroup):
    """The app's command group (`app.cli`), which sets up Flask-Migrate when `db` is asked for."""

    def __init__(self, app: Flask) -> None:
        super().__init__()
        self.app = app

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "db" and "migrate" not in self.app.extensions:
            init_migrations(self.app)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "db"})
