"""Reading back what a test stored."""

from __future__ import annotations

from pam_twofa.core.record import Record
from pam_twofa.store import Store


def stored(store: Store, user: str) -> Record:
    """The record of ``user``, which the test expects to be there: a clear failure if it is not."""
    record = store.load(user)
    assert record is not None, f"no record is stored for {user}"
    return record
