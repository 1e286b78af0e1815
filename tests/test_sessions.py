"""Browser sessions of a server with a token (``spectgan.serving.sessions``): opaque ids that end at logout, expire
after their lifetime, and make room by ending the oldest. The server's use of them: test_server_security.py and
test_workstation_token.py."""
import pytest

from spectgan.serving.sessions import SessionStore


class Clock:
    """Seconds that advance only when a test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_is_open_until_logout_or_its_lifetime_ends():
    clock = Clock()
    store = SessionStore(lifetime_s=60, clock=clock)
    first, second = store.open(), store.open()
    assert first.id != second.id and len(first.id) >= 43 and first.lifetime_s == 60
    assert store.is_open(first.id) and store.is_open(second.id)
    assert not store.is_open(None) and not store.is_open("") and not store.is_open(first.id + "x")
    store.end(first.id)
    store.end("never-opened")
    assert not store.is_open(first.id) and store.is_open(second.id)
    clock.now += 59.9
    assert store.is_open(second.id)
    clock.now += 0.1
    assert not store.is_open(second.id)


def test_the_oldest_session_ends_when_the_store_is_full():
    store = SessionStore(lifetime_s=60, capacity=2, clock=Clock())
    oldest, middle, newest = store.open(), store.open(), store.open()
    assert [store.is_open(session.id) for session in (oldest, middle, newest)] == [False, True, True]


def test_a_lifetime_or_capacity_below_one_is_refused():
    for lifetime, capacity in ((0, 10), (60, 0)):
        with pytest.raises(ValueError, match="must be positive"):
            SessionStore(lifetime, capacity)
