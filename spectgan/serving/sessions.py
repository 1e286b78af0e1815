"""Browser sessions of a server with an API token: what the spectgan page and OHIF present instead of the token.

A browser logs in once with the token (``monai_app``'s login route); the server then gives it an opaque random
session id (never the token, nor anything derived from it) that expires after a fixed lifetime or when the browser
logs out. Sessions live in the server's process: a restart asks every browser to log in again, and a changed token
takes effect at once for everything but the sessions already open (until they expire). No HTTP in here.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

SESSION_ID_BYTES = 32  # 256 random bits, URL-safe text of 43 characters
MAX_SESSIONS = 1000  # the oldest session ends when a new one would exceed this


@dataclass(frozen=True)
class Session:
    """One open browser session: its id (the cookie's value) and its lifetime in seconds from now."""

    id: str
    lifetime_s: int


class SessionStore:
    """Open sessions by id, each with its expiry; thread-safe.

    ``lifetime_s``: seconds a session lasts from its login; ``capacity``: the most sessions kept (the oldest ends
    first); ``clock``: seconds that only increase (``time.monotonic``).
    """

    def __init__(self, lifetime_s: int, capacity: int = MAX_SESSIONS, clock: Callable[[], float] = time.monotonic):
        if lifetime_s < 1 or capacity < 1:
            raise ValueError(f"a session lifetime and capacity must be positive, got {lifetime_s} s and {capacity}")
        self.lifetime_s = lifetime_s
        self.capacity = capacity
        self.clock = clock
        self._expiries: OrderedDict[str, float] = OrderedDict()  # by login order
        self._lock = threading.Lock()

    def open(self) -> Session:
        """A new session (after the token was checked by the caller)."""
        session = Session(secrets.token_urlsafe(SESSION_ID_BYTES), self.lifetime_s)
        with self._lock:
            self._drop_expired()
            self._expiries[session.id] = self.clock() + self.lifetime_s
            while len(self._expiries) > self.capacity:
                self._expiries.popitem(last=False)
        return session

    def is_open(self, session_id: str | None) -> bool:
        """True when ``session_id`` names a session that has neither expired nor ended."""
        if not session_id:
            return False
        with self._lock:
            expiry = self._expiries.get(session_id)
            if expiry is not None and expiry <= self.clock():
                del self._expiries[session_id]
                expiry = None
        return expiry is not None

    def end(self, session_id: str | None) -> None:
        """End a session (logout); nothing happens for an unknown one."""
        with self._lock:
            self._expiries.pop(session_id or "", None)

    def _drop_expired(self) -> None:
        now = self.clock()
        for session_id in [key for key, expiry in self._expiries.items() if expiry <= now]:
            del self._expiries[session_id]
