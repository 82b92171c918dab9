"""New-address alerts (``notify.new_address``): is this login's client address one the user has
not used lately? Pure: the caller passes the record about to be written and the time.

``Record.seen`` maps the client addresses of the user's logins with a code to the time of the
latest; only the ``keep`` (``notify.remember``) most recent stay. An empty map is a user with no
history (just enrolled, or the feature just turned on): nothing to compare with, so no alert,
and the address is remembered.
"""

from pam_twofa.core.record import MAX_SEEN, Record, storable_address


def remember(record: Record, address: str | None, now: float, keep: int) -> bool:
    """Note ``address`` in ``record.seen`` (changed in place) at ``now``, keeping the ``keep`` most
    recent; True when an alert is due: the address was not among them and there were some."""
    if address is None or not storable_address(address):
        return False
    due = bool(record.seen) and address not in record.seen
    record.seen[address] = int(now)
    keep = max(1, min(keep, MAX_SEEN))
    while len(record.seen) > keep:
        del record.seen[min(record.seen, key=lambda a: (record.seen[a], a))]
    return due
