"""core.alert: which client addresses a user has used lately, and when a login from one is new."""

import pytest

from pam_twofa.core.alert import remember
from pam_twofa.core.record import MAX_SEEN, Record, dumps, loads, storable_address

pytestmark = pytest.mark.unit
T = 1_700_000_000


def test_no_history_remembers_without_an_alert():
    record = Record("alice")
    assert remember(record, "192.0.2.1", T, 10) is False
    assert record.seen == {"192.0.2.1": T}


def test_a_known_address_is_renewed_and_a_new_one_alerts():
    record = Record("alice", seen={"192.0.2.1": T})
    assert remember(record, "192.0.2.1", T + 5, 10) is False and record.seen == {"192.0.2.1": T + 5}
    assert remember(record, "2001:db8::7", T + 9, 10) is True
    assert record.seen == {"192.0.2.1": T + 5, "2001:db8::7": T + 9}


def test_only_the_most_recent_are_kept():
    record = Record("alice", seen={"a": T, "b": T + 1, "c": T + 2})
    assert remember(record, "d", T + 3, 2) is True
    assert record.seen == {"c": T + 2, "d": T + 3}
    assert remember(record, "a", T + 4, 2) is True  # forgotten: new again


def test_keep_is_bounded_by_what_a_record_holds():
    record = Record("alice", seen={"x": T})
    for i in range(MAX_SEEN + 5):
        remember(record, f"10.0.0.{i}", T + i + 1, 1000)
    assert len(record.seen) == MAX_SEEN
    assert loads(dumps(record), "alice") == record


@pytest.mark.parametrize("address", ["", "a,b", "a=b", "a b", "x" * 65, "bad\nline", None])
def test_what_the_record_cannot_hold_is_not_remembered(address):
    record = Record("alice", seen={"192.0.2.1": T})
    assert remember(record, address, T, 10) is False and record.seen == {"192.0.2.1": T}
    assert address is None or not storable_address(address)
