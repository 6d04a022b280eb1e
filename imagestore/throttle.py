"""Throttling of failed Basic logins, per username and per client address, with back-off.

Failures are counted in a storage of the `limits` library (the one flask-limiter keeps its
counters in): each worker's memory, or Redis, shared by every worker and host. A count lasts
LOGIN_FAILURE_WINDOW_SECONDS from the first failure of a series. Past the free failures, each
further failure locks its username and its address for LOGIN_LOCK_SECONDS, doubled with each
failure up to LOGIN_MAX_LOCK_SECONDS. The lock set by the nth failure is a key of its own,
`.../lock/n`, made with that lifetime: the storage sets a key's expiry only when it creates it.

flask-limiter's `Limiter` itself is not attached to the app: its request hooks would run on
every request (about 45 microseconds each), where a remembered login must cost nothing extra.

While an address is locked, logins from it are refused unchecked. While a username is locked,
logins for it are refused unchecked from addresses that failed recently; an address with no
recorded failure still gets its password checked, so the owner keeps logging in from elsewhere.
Only logins that the credential cache does not already know get here (see auth.py), and those
it knows from an address that this process saw locked.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from flask import Flask
from limits.storage import MemoryStorage, Storage, storage_from_string
from werkzeug.exceptions import TooManyRequests

from .models import fold_name

log = logging.getLogger(__name__)

T = TypeVar("T")
# A shared storage that does not answer within this many seconds is given up on for the call.
STORAGE_TIMEOUT_SECONDS = 1
# How often, at most, an unreachable shared storage is logged.
OUTAGE_LOG_SECONDS = 60
# One IPv6 client usually holds a whole /64: its addresses count as one.
IPV6_CLIENT_PREFIX = 64
# Locked addresses a process remembers having seen, at most.
SEEN_LOCKS_MAX = 4096


class LoginThrottle:
    """Counts failed logins and refuses, with 429, the logins that must wait."""

    def __init__(self, storage: Storage, prefix: str, settings: Mapping[str, Any]) -> None:
        self.storage = storage
        # Used while the shared storage is unreachable: throttled per process, never a 500.
        self.fallback = MemoryStorage()
        self.prefix = prefix
        self.free_per_user = settings["LOGIN_FREE_FAILURES_PER_USER"]
        self.free_per_address = settings["LOGIN_FREE_FAILURES_PER_ADDRESS"]
        self.window = settings["LOGIN_FAILURE_WINDOW_SECONDS"]
        self.first_lock = settings["LOGIN_LOCK_SECONDS"]
        self.max_lock = settings["LOGIN_MAX_LOCK_SECONDS"]
        self.outage_logged = -math.inf
        # Address keys this process saw locked, and until when (monotonic clock).
        self.seen_locks: dict[str, float] = {}

    def user_key(self, username: str) -> str:
        """Return the key of a username's failures: names that fold alike share it."""
        digest = hashlib.sha256(fold_name(username).encode(errors="replace")).hexdigest()
        return f"{self.prefix}/login-failures/user/{digest[:32]}"

    def address_key(self, address: str | None) -> str:
        """Return the key of a client address's failures (an IPv6 client's /64 as a whole)."""
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            client = address or "unknown"
        else:
            mapped = getattr(ip, "ipv4_mapped", None)
            if mapped is not None:
                client = str(mapped)
            elif ip.version == 6:
                client = str(ipaddress.IPv6Network((int(ip), IPV6_CLIENT_PREFIX), strict=False))
            else:
                client = str(ip)
        digest = hashlib.sha256(client.encode(errors="replace")).hexdigest()
        return f"{self.prefix}/login-failures/address/{digest[:32]}"

    def seen_locked(self, address: str | None) -> bool:
        """Tell, without asking the storage, whether this process saw the address locked.

        A remembered login from such an address is checked like any other (and refused):
        otherwise a guesser behind the owner's address (one NAT) would have the owner's
        remembered password accepted from memory, while its wrong guesses get 429.
        """
        if not self.seen_locks:
            return False  # the usual case, as cheap as can be
        until = self.seen_locks.get(self.address_key(address))
        return until is not None and until > time.monotonic()

    def note_lock(self, address_key: str, seconds: float) -> None:
        """Remember that an address is locked for this many more seconds."""
        if len(self.seen_locks) >= SEEN_LOCKS_MAX:
            self.seen_locks.clear()
        self.seen_locks[address_key] = time.monotonic() + seconds

    def check(self, username: str, address: str | None) -> None:
        """Raise 429 when this login must not be checked now: its address, or its username
        asked from an address that failed recently, is locked."""
        address_key = self.address_key(address)
        address_failures = self.call(lambda storage: storage.get(address_key))
        if address_failures > self.free_per_address:
            wait = self.lock_left(address_key, address_failures)
            if wait:
                self.note_lock(address_key, wait)
                refuse(wait, "from this address")
        if address_failures:
            user_key = self.user_key(username)
            user_failures = self.call(lambda storage: storage.get(user_key))
            if user_failures > self.free_per_user:
                wait = self.lock_left(user_key, user_failures)
                if wait:
                    refuse(wait, "for this username")

    def failed(self, username: str, address: str | None) -> None:
        """Count a failed login against its username and its address; lock what is past its
        free failures."""
        address_key = self.address_key(address)
        for key, free in (
            (address_key, self.free_per_address),
            (self.user_key(username), self.free_per_user),
        ):
            failures = self.incr(key, self.window)
            if failures > free:
                seconds = self.lock_seconds(failures - free)
                lock = f"{key}/lock/{failures}"
                self.incr(lock, seconds)
                if key == address_key:
                    self.note_lock(key, seconds)

    def lock_seconds(self, past_free: int) -> int:
        """Return how long the nth failure past the free ones locks: 1, 2, 4... times the first
        lock, capped."""
        return min(self.max_lock, self.first_lock * 2 ** min(past_free - 1, 32))

    def lock_left(self, key: str, failures: int) -> int:
        """Return the whole seconds left of the lock that the latest failure set, 0 for none."""
        lock = f"{key}/lock/{failures}"
        if not self.call(lambda storage: storage.get(lock)):
            return 0
        expiry = self.call(lambda storage: storage.get_expiry(lock))
        return max(1, math.ceil(expiry - time.time()))

    def incr(self, key: str, expiry: int) -> int:
        """Add one to a count that expires `expiry` seconds after it began; return the count."""
        return self.call(lambda storage: storage.incr(key, expiry))

    def call(self, operation: Callable[[Storage], T]) -> T:
        """Run a storage operation; on the memory fallback while the shared storage fails."""
        try:
            return operation(self.storage)
        except self.storage.base_exceptions:
            now = time.monotonic()
            if now - self.outage_logged >= OUTAGE_LOG_SECONDS:
                self.outage_logged = now
                log.exception("login throttle storage unreachable: counting in this process")
            return operation(self.fallback)


def refuse(seconds: int, what: str) -> NoReturn:
    """Answer 429 with Retry-After, saying when the next login will be checked."""
    at = datetime.fromtimestamp(time.time() + seconds, UTC).isoformat(timespec="seconds")
    raise TooManyRequests(
        f"Too many failed logins {what}. Retry in {seconds} seconds"
        f" (at {at.replace('+00:00', 'Z')}).",
        retry_after=seconds,
    )


def init_throttle(app: Flask) -> None:
    """Give the app its login throttle, on RATELIMIT_STORAGE_URL (empty: in memory)."""
    url = app.config["RATELIMIT_STORAGE_URL"] or "memory://"
    options: dict[str, Any] = {}
    if url.startswith(("redis://", "rediss://", "redis+unix://")):
        options = {
            "socket_timeout": STORAGE_TIMEOUT_SECONDS,
            "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
        }
    storage = storage_from_string(url, **options)
    if not isinstance(storage, Storage):
        raise ValueError("RATELIMIT_STORAGE_URL must name a storage without async+ in front")
    app.extensions["imagestore.throttle"] = LoginThrottle(
        storage,
        app.config["RATELIMIT_KEY_PREFIX"],
        app.config,  # the LOGIN_* settings, checked at startup (settings.py)
    )
