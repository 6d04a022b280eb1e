"""Authentication: HTTP Basic (with a short per-process memory of verified passwords) or Bearer.

Views use `auth`, which accepts either: `Authorization: Basic ...` or `Authorization: Bearer ...`
with a token from `POST /api/tokens/`. Basic logins that must check a password are throttled
after failures (throttle.py).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from functools import cached_property
from typing import Any

from flask import Flask, Request, current_app, request
from flask_httpauth import HTTPBasicAuth, HTTPTokenAuth, MultiAuth
from sqlalchemy import select
from werkzeug.exceptions import Forbidden, Unauthorized
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

from .db import db, fetch_one
from .errors import problem_response
from .models import CurrentUser, Token, User, utcnow
from .throttle import LoginThrottle, init_throttle


class BearerAuth(HTTPTokenAuth):
    """Bearer tokens, whatever the case of the scheme's name (RFC 9110: it is case-insensitive)."""

    def is_compatible_auth(self, headers: Any) -> bool:
        scheme = headers.get("Authorization", "").partition(" ")[0]
        return scheme.lower() == "bearer"


basic_auth = HTTPBasicAuth(realm="imagestore")
token_auth = BearerAuth(scheme="Bearer", realm="imagestore")
# What views use: the scheme of the request's Authorization header picks one; Basic by default.
auth = MultiAuth(basic_auth, token_auth)
AUTH_METHODS = ("basic", "bearer")
# What a remembered credential is checked against, on every request.
USER_BY_ID = "SELECT id, username, password_hash, is_active, is_admin FROM users WHERE id = ?"


class CredentialCache:
    """Remembers which username and password pairs were verified, for a short while.

    Entries are keyed by an HMAC of the pair and the client address under the secret key, so no
    password is kept, and a pair verified for one address is checked again from another: a
    guesser whose address is throttled learns nothing from another client's remembered login.
    Each hit still loads the user row: a changed password hash or a deactivation (by any
    worker or host) makes the entry useless at once.
    """

    def __init__(self, secret: str, seconds: float, size: int) -> None:
        self.secret = secret.encode()
        self.seconds = seconds
        self.size = size
        self.entries: OrderedDict[bytes, tuple[int, str, float]] = OrderedDict()
        self.lock = threading.Lock()

    def key(self, username: str, password: str, address: str | None) -> bytes:
        message = f"{username}\0{password}\0{address}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def get(self, key: bytes) -> tuple[int, str] | None:
        """Return the user id and password hash remembered under a key, if still fresh."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            user_id, password_hash, expires = entry
            if expires < time.monotonic():
                del self.entries[key]
                return None
            return user_id, password_hash

    def put(self, key: bytes, user: CurrentUser) -> None:
        """Remember a verified pair, forgetting the oldest entries past the size limit."""
        if self.size <= 0:
            return
        with self.lock:
            self.entries[key] = (user.id, user.password_hash, time.monotonic() + self.seconds)
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


class Passwords:
    """Hashing settings of one app, and a hash to check against when a user is unknown."""

    def __init__(self, method: str) -> None:
        self.method = method

    def hash(self, password: str) -> str:
        return generate_password_hash(password, method=self.method)

    @cached_property
    def decoy(self) -> str:
        """A hash of nothing, checked for unknown users so they take as long as known ones."""
        return self.hash("")


def hash_password(password: str) -> str:
    """Hash a password with the configured method."""
    return current_app.extensions["imagestore.passwords"].hash(password)


def init_auth(app: Flask) -> None:
    """Set up the password hashing, the verified-credentials cache and the login throttle."""
    app.extensions["imagestore.passwords"] = Passwords(app.config["PASSWORD_HASH_METHOD"])
    app.extensions["imagestore.credentials"] = CredentialCache(
        app.config["SECRET_KEY"], app.config["AUTH_CACHE_SECONDS"], app.config["AUTH_CACHE_SIZE"]
    )
    init_throttle(app)


@basic_auth.verify_password
def verify_password(username: str, password: str) -> CurrentUser | None:
    """Return the active user these credentials belong to, or None.

    A pair remembered as verified is accepted without asking the throttle's storage, unless
    this worker saw its address locked; any other login is first checked against the throttle
    (429 while locked), and a failure is counted.
    """
    if not username:
        return None
    address = request.remote_addr
    cache: CredentialCache = current_app.extensions["imagestore.credentials"]
    throttle: LoginThrottle = current_app.extensions["imagestore.throttle"]
    key = cache.key(username, password, address)
    remembered = cache.get(key)
    if remembered is not None and not throttle.seen_locked(address):
        user = load_user(remembered[0])
        if user is not None and user.is_active and user.password_hash == remembered[1]:
            return user
    throttle.check(username, address)
    user = db.session.scalar(User.named(username))
    passwords: Passwords = current_app.extensions["imagestore.passwords"]
    if user is None:
        check_password_hash(passwords.decoy, password)
        throttle.failed(username, address)
        return None
    if not check_password_hash(user.password_hash, password) or not user.is_active:
        throttle.failed(username, address)
        return None
    current = CurrentUser.of(user)
    cache.put(key, current)
    return current


def load_user(user_id: int) -> CurrentUser | None:
    """Return a user read fresh from its row, or None.

    This runs on every request, so the row is read on the driver, not through the session: a
    fraction of the cost of a session query.
    """
    row = fetch_one(db.engine, USER_BY_ID, (user_id,))
    if row is None:
        return None
    user_id, username, password_hash, is_active, is_admin = row
    # SQLite answers 0 or 1 for booleans.
    return CurrentUser(user_id, username, password_hash, bool(is_active), bool(is_admin))


@token_auth.verify_token
def verify_token(token: str) -> CurrentUser | None:
    """Return the active user owning this unexpired bearer token, or None."""
    if not token:
        return None
    query = (
        select(User)
        .join(Token, Token.user_id == User.id)
        .where(Token.token_hash == Token.hash(token), Token.expires_at > utcnow())
    )
    user = db.session.scalar(query)
    return CurrentUser.of(user) if user is not None and user.is_active else None


def auth_method(req: Request) -> str | None:
    """Return how a request tried to authenticate: "basic", "bearer", or None.

    The scheme is read off the header (its case does not matter), not parsed with its
    credentials: this runs on every API call.
    """
    scheme = req.headers.get("Authorization", "").partition(" ")[0].lower()
    return scheme if scheme in AUTH_METHODS else None


@basic_auth.get_user_roles
@token_auth.get_user_roles
def get_user_roles(user: CurrentUser) -> list[str]:
    """Admins have the `admin` role."""
    return ["admin"] if user.is_admin else []


def ensure_may_change(owner_id: int | None, refusal: str) -> None:
    """Answer 403 with `refusal` unless the current user created the resource or is an admin."""
    if not auth.current_user().may_change(owner_id):
        raise Forbidden(refusal)


def auth_error(status: int) -> Response:
    """Answer failed authentication (401) or a missing role (403) with problem+json."""
    if status == 403:
        return problem_response(Forbidden("Only administrators may do this."))
    message = "Valid credentials are required (HTTP Basic, or a Bearer token)."
    return problem_response(Unauthorized(message))


# Registered apart: each scheme adds its own WWW-Authenticate challenge to a 401.
basic_auth.error_handler(auth_error)
token_auth.error_handler(auth_error)
