"""The `flask tokens ...` commands: list and revoke the bearer tokens of any user."""

from __future__ import annotations

from typing import Any, cast

import click
from flask.cli import AppGroup
from sqlalchemy import delete, select
from sqlalchemy.engine import CursorResult

from .db import MAX_ID, db
from .models import Token
from .schemas import utc_text
from .users_cli import find_user, tokens_revoked

tokens_cli = AppGroup("tokens", help="List and revoke bearer tokens.")


@tokens_cli.command("list")
@click.option("--user", "username", help="Only this user's tokens (any case).")
def list_tokens(username: str | None) -> None:
    """List tokens, newest first, one a line: id, user, name, created, expires."""
    if username is not None:
        find_user(username)
    for token in db.session.scalars(Token.newest_first(username)):
        created, expires = utc_text(token.created_at), utc_text(token.expires_at)
        click.echo(f"{token.id}\t{token.user.username}\t{token.name}\t{created}\t{expires}")


@tokens_cli.command("revoke")
@click.argument("token_ids", metavar="[ID]...", nargs=-1, type=click.IntRange(1, MAX_ID))
@click.option("--user", "username", help="Revoke every token of this user (any case).")
def revoke_tokens(token_ids: tuple[int, ...], username: str | None) -> None:
    """Revoke tokens by id, or every token of one user; revoked tokens authenticate nobody."""
    if bool(token_ids) == (username is not None):
        raise click.UsageError("give token ids or --user, one of the two")
    if username is not None:
        user = find_user(username)
        revoked = Token.revoke_all_of(user.id)
        db.session.commit()
        click.echo(f"{tokens_revoked(revoked)} of {user.username}")
        return
    wanted = set(token_ids)
    found = set(db.session.scalars(select(Token.id).where(Token.id.in_(wanted))))
    if wanted - found:
        missing = ", ".join(str(token_id) for token_id in sorted(wanted - found))
        raise click.ClickException(f"no token with id {missing}; none was revoked")
    result = db.session.execute(delete(Token).where(Token.id.in_(found)))
    revoked = cast("CursorResult[Any]", result).rowcount  # a DELETE's result counts the rows
    db.session.commit()
    click.echo(tokens_revoked(revoked))
