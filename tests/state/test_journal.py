"""The journal RedisStore keeps while Redis is away: what replays, per key, and what is dropped."""

from __future__ import annotations

from chatbridge.state.journal import PRUNE_EVERY, Add, Delete, Journal, Put
from tests.state.helpers import FakeClock


def test_the_newest_write_per_key_wins_and_increments_fold() -> None:
    journal = Journal()
    journal.put("a", b"1", None)
    journal.put("a", b"2", None)
    journal.delete("b")
    journal.add("n", 2, b"2", 100.0)
    journal.add("n", 3, b"5", 200.0)
    journal.put("c", b"10", None)
    journal.add("c", 1, b"11", None)  # known outright after a put: replays as a put
    journal.delete("d")
    journal.add("d", 1, b"1", 50.0)
    assert journal.take() == {"a": Put(b"2", None), "b": Delete(), "n": Add(5, 100.0), "c": Put(b"11", None),
                              "d": Put(b"1", 50.0)}
    assert len(journal) == 0 and journal.take() == {}


def test_a_failed_replay_goes_back_under_newer_changes() -> None:
    journal = Journal()
    journal.put("a", b"old", None)
    journal.add("n", 2, b"2", None)
    journal.put("p", b"1", None)
    failed = journal.take()
    journal.put("a", b"new", None)  # written while the replay was failing
    journal.add("n", 3, b"5", None)
    journal.add("p", 1, b"2", None)
    journal.restore(failed, lambda key: {"p": (b"2", 9.0)}.get(key))
    assert journal.take() == {"a": Put(b"new", None), "n": Add(5, None), "p": Put(b"2", 9.0)}


def test_changes_to_expired_keys_are_pruned_so_a_long_outage_stays_bounded() -> None:
    clock = FakeClock(1000.0)
    journal = Journal(clock)
    journal.put("kept", b"1", None)
    journal.delete("gone")
    for i in range(PRUNE_EVERY * 3):
        journal.add(f"rate:{i}", 1, b"1", clock() + 60)
        clock.advance(0.1)
    assert len(journal) < PRUNE_EVERY * 2  # windows older than a minute were dropped
    changes = journal.take()
    assert changes["kept"] == Put(b"1", None) and changes["gone"] == Delete()
