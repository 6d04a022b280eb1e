"""Blueprint "tokens": /api/tokens/, bearer tokens for scripts: create, list and revoke."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, abort

from .auth import auth, basic_auth
from .extensions import begin_writes, db
from .models import Token, utcnow
from .openapi import doc
from .pagination import paginate
from .schemas import PageArgs, TokenInput, new_token_schema, token_schema, use_args

bp = Blueprint("tokens", __name__, url_prefix="/api/tokens")

# A prefix makes a leaked token easy to recognize (secret scanners, logs).
TOKEN_PREFIX = "ims_"
MAX_ID = 2**31 - 1


@bp.post("/")
@doc(new_token_schema, status=201, schemes=("basicAuth",))
@basic_auth.login_required  # a token cannot mint another one and outlive its own expiry
@use_args(TokenInput(), location="json")
def create_token(json_args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Create a bearer token for the caller; its secret is in this response only."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    user_id = basic_auth.current_user().id
    begin_writes()
    token = Token(
        user_id=user_id,
        name=json_args["name"],
        token_hash=Token.hash(secret),
        expires_at=utcnow() + timedelta(days=json_args["expires_in_days"]),
    )
    db.session.add(token)
    db.session.commit()
    return new_token_schema.dump(token) | {"token": secret}, 201


@bp.get("/")
@doc(token_schema, page=True)
@auth.login_required
@use_args(PageArgs(), location="query")
def list_tokens(query_args: dict[str, Any]) -> dict[str, Any]:
    """Return one page of the caller's tokens, newest first, without their secrets."""
    return paginate(Token.owned_by(auth.current_user()), token_schema, query_args)


@bp.delete("/<int:token_id>/")
@doc(status=204)
@auth.login_required
def delete_token(token_id: int) -> Response:
    """Revoke one of the caller's tokens; from now on it authenticates nobody."""
    user_id = auth.current_user().id
    begin_writes()
    token = db.session.get(Token, token_id) if token_id <= MAX_ID else None
    if token is None or token.user_id != user_id:
        abort(404, description=f"You have no token with the id {token_id}.")
    db.session.delete(token)
    db.session.commit()
    return Response(status=204)
