"""Alembic environment: migrations run against the app's own engine and metadata."""

import logging
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from flask import current_app

config = context.config
fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

db = current_app.extensions["migrate"].db
config.set_main_option(
    "sqlalchemy.url", db.engine.url.render_as_string(hide_password=False).replace("%", "%%")
)


def render_item(type_, obj, autogen_context):
    """Write the project's column types as imports of imagestore.models."""
    if type_ == "type" and obj.__class__.__module__ == "imagestore.models":
        autogen_context.imports.add("import imagestore.models")
        return f"imagestore.models.{obj.__class__.__name__}()"
    return False


def skip_empty_revision(context, revision, directives):
    """Write no script when autogenerate finds no change."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        logger.info("No changes in schema detected.")


def run_migrations_offline():
    """Write the SQL of the migrations instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=db.metadata,
        literal_binds=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def set_sqlite_foreign_keys(connection, on):
    """Turn SQLite's foreign key enforcement on or off (it only changes outside a transaction)."""
    connection.connection.dbapi_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def refuse_broken_references(ctx, step, **kwargs):
    """Roll back a SQLite migration that left a row referring to no row, naming them."""
    broken = ctx.connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        rows = "; ".join(f"{table} row {rowid} -> {parent}" for table, rowid, parent, _ in broken)
        raise CommandError(
            f"revision {step.up_revision} rolled back: rows would refer to no row: {rows}"
        )


def run_migrations_online():
    """Run the migrations on a connection of the app's engine.

    On SQLite foreign keys are off while they run, and checked before each one commits: a
    batch migration copies a table and drops the old one, and with them on, the drop deletes
    its rows first, which deletes or empties the rows referring to them (an image's tag links,
    a user's tokens and tracking rows).
    """
    configure_args = dict(current_app.extensions["migrate"].configure_args)
    configure_args.setdefault("process_revision_directives", skip_empty_revision)
    with db.engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            set_sqlite_foreign_keys(connection, on=False)
            configure_args["on_version_apply"] = refuse_broken_references
        try:
            context.configure(
                connection=connection,
                target_metadata=db.metadata,
                render_item=render_item,
                **configure_args,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if sqlite:
                set_sqlite_foreign_keys(connection, on=True)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
