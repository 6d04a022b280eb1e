"""The `flask users ...` commands that operators use to manage accounts."""

import secrets
import unicodedata

import click
from flask.cli import AppGroup
from sqlalchemy.exc import IntegrityError

from .auth import hash_password
from .db import db
from .models import Token, User

users_cli = AppGroup("users", help="Create and manage user accounts.")


def find_user(username: str) -> User:
    """Return the user with this name (any case) or stop with a one-line error."""
    user = db.session.scalar(User.named(username))
    if user is None:
        raise click.ClickException(f"no user named {username!r}")
    return user


def check_password(password: str) -> str:
    """Refuse an empty password."""
    if not password:
        raise click.ClickException("the password must not be empty")
    return password


def refuse_taken(username: str) -> None:
    """Stop with a one-line error when a user has this name, whatever its case or Unicode form."""
    taken = db.session.scalar(User.named(username).with_only_columns(User.username))
    if taken == username:
        raise click.ClickException(f"a user named {username!r} already exists")
    if taken is not None:
        raise click.ClickException(
            f"a user named {taken!r} already exists: usernames differing only in case or"
            " Unicode form are the same name"
        )


def tokens_revoked(count: int) -> str:
    """Say how many tokens were revoked."""
    return f"{count} token{'' if count == 1 else 's'} revoked"


def commit_revoking_tokens(user: User) -> str:
    """Revoke every token of a user whose credentials changed, commit, and say how many."""
    revoked = Token.revoke_all_of(user.id)
    db.session.commit()
    return tokens_revoked(revoked)


password_option = click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="The password; asked twice, hidden, when absent.",
)


@users_cli.command("create")
@click.argument("username")
@password_option
@click.option("--admin", is_flag=True, help="Let the user read trackings and change anything.")
def create_user(username: str, password: str, admin: bool) -> None:
    """Create a user; the name is stored in NFC and must differ from others in more than case."""
    username = unicodedata.normalize("NFC", username)
    if not 1 <= len(username) <= 150 or username != username.strip() or ":" in username:
        raise click.ClickException("a username has 1 to 150 characters, no ':' and no outer spaces")
    refuse_taken(username)
    user = User(username=username, password_hash=hash_password(check_password(password)))
    user.is_admin = admin
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # created meanwhile by another command
        refuse_taken(username)
        raise
    click.echo(f"created {'admin' if admin else 'user'} {username}")


@users_cli.command("list")
def list_users() -> None:
    """List the users, one a line: name, role, state."""
    for user in db.session.scalars(db.select(User).order_by(User.username)):
        role = "admin" if user.is_admin else "user"
        state = "active" if user.is_active else "deactivated"
        click.echo(f"{user.username}\t{role}\t{state}")


@users_cli.command("set-password")
@click.argument("username")
@password_option
def set_password(username: str, password: str) -> None:
    """Give a user a new password, and revoke every token of theirs."""
    user = find_user(username)
    user.password_hash = hash_password(check_password(password))
    click.echo(f"password of {user.username} changed; {commit_revoking_tokens(user)}")


@users_cli.command("deactivate")
@click.argument("username")
def deactivate_user(username: str) -> None:
    """Refuse a user's credentials from now on and revoke their tokens; their images, tags and
    trackings stay."""
    user = find_user(username)
    user.is_active = False
    click.echo(f"{user.username} deactivated; {commit_revoking_tokens(user)}")


@users_cli.command("activate")
@click.argument("username")
def activate_user(username: str) -> None:
    """Accept a deactivated user's credentials again."""
    user = find_user(username)
    user.is_active = True
    db.session.commit()
    click.echo(f"{user.username} activated")


@users_cli.command("bootstrap")
def bootstrap() -> None:
    """Create an admin `admin` with a random password when there is no user at all."""
    if db.session.scalar(db.select(User.id).limit(1)) is not None:
        return
    password = secrets.token_urlsafe(18)
    db.session.add(User(username="admin", password_hash=hash_password(password), is_admin=True))
    db.session.commit()
    click.echo(f"created admin 'admin' with password: {password}")
    click.echo("it is shown only this once; change it with `flask users set-password admin`")
