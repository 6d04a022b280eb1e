"""Blueprint "tokens": /api/tokens/, bearer tokens for scripts: create, list and revoke."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, request

from .auth import auth, auth_method
from .db import MAX_ID, db, writes
from .models import Token, fold_name, utcnow
from .openapi import doc
from .pagination import paginate
from .schemas import TokenFilters, TokenInput, new_token_schema, token_schema, use_args

bp = Blueprint("tokens", __name__, url_prefix="/api/tokens")

# A prefix makes a leaked token easy to recognize (secret scanners, logs).
TOKEN_PREFIX = "ims_"


@bp.post("/")
@doc(new_token_schema, status=201, schemes=("basicAuth",), errors=(403,))
@auth.login_required
@writes
@use_args(TokenInput(), location="json_or_form")
def create_token(json_or_form_args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Create a bearer token for the caller (with a password: a token cannot create one).

    The token's secret is in this response only.
    """
    if auth_method(request) == "bearer":  # a token could otherwise outlive its own expiry
        abort(403, description="A token cannot create tokens: authenticate with a password.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    user_id = auth.current_user().id
    token = Token(
        user_id=user_id,
        name=json_or_form_args["name"],
        token_hash=Token.hash(secret),
        expires_at=utcnow() + timedelta(days=json_or_form_args["expires_in_days"]),
    )
    db.session.add(token)
    db.session.commit()
    return new_token_schema.dump(token) | {"token": secret}, 201


@bp.get("/")
@doc(token_schema, page=True, errors=(403,))
@auth.login_required
@use_args(TokenFilters(), location="query")
def list_tokens(query_args: dict[str, Any]) -> dict[str, Any]:
    """Return one page of the caller's tokens, newest first, without their secrets.

    An admin may list any user's tokens with `user`; anyone else naming another user gets 403.
    """
    caller = auth.current_user()
    username = query_args.get("user", caller.username)
    if fold_name(username) != fold_name(caller.username) and not caller.is_admin:
        abort(403, description="Only administrators may list another user's tokens.")
    return paginate(Token.newest_first(username), token_schema, query_args)


@bp.delete("/<int:token_id>/")
@doc(status=204)
@auth.login_required
@writes
def delete_token(token_id: int) -> tuple[str, int]:
    """Revoke a token of the caller (an admin: any token); from now on it authenticates nobody."""
    caller = auth.current_user()
    token = db.session.get(Token, token_id) if token_id <= MAX_ID else None
    if token is None or not (caller.is_admin or token.user_id == caller.id):
        abort(404, description=f"You have no token with the id {token_id}.")
    db.session.delete(token)
    db.session.commit()
    return "", 204
