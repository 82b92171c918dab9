"""Trusted clients (``trust.seconds``): the record's trust for a client address (pure: no I/O, no clock).

A code accepted from an address trusts that address for the account until
``now + trust.seconds``. Only an asked-and-passed login grants or renews it: a
trusted login renewing itself would keep a user who logs in often trusted
forever. Addresses are stored in one canonical text, so ``::ffff:192.0.2.1``
and ``192.0.2.1`` share one entry (docs/policy.md, docs/threat-model.md).

An IPv6 link-local address (``fe80::/10``), and any address with a zone
(``fe80::1%eth0``), is never trusted: it names a host only together with its
link, and the same address on another interface is another machine. Keeping
the zone in the entry would not fix that: an interface name is local to one
host, while the record (and its trust) is read by every host of a fleet, where
``eth0`` is another link on each. Dropping the zone trusted ``fe80::1`` on
every link of every host.
"""

from pam_twofa.core.network import parse_address
from pam_twofa.core.primitives import address_functions
from pam_twofa.core.record import MAX_TRUSTED, Record

_AF_INET, AF_INET6, _inet_pton, inet_ntop = address_functions()
_LINK_LOCAL = 0xFE80 >> 6  # fe80::/10: the top 10 bits


def client_key(rhost: str | None) -> str | None:
    """The canonical text of the client's IP address; None when it is never trusted: no address
    (missing, empty, a hostname), an address with a zone, or an IPv6 link-local address.

    A hostname (sshd with ``UseDNS yes``) is never trusted: whoever controls
    the reverse DNS of their address would choose which entry they match.
    """
    address = parse_address(rhost)
    if address is None or rhost is None or "%" in rhost:
        return None
    bits, value = address
    if bits == 128 and value >> 118 == _LINK_LOCAL:
        return None
    if bits == 32:
        return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))
    return inet_ntop(AF_INET6, value.to_bytes(16, "big"))


def until(record: Record | None, rhost: str | None) -> int:
    """When the record's trust for this client ends (0: none)."""
    if record is None or not record.trusted:
        return 0
    key = client_key(rhost)
    return record.trusted.get(key, 0) if key is not None else 0


def applies(trusted_until: int, seconds: int, now: float) -> bool:
    """Whether a trust that ends at ``trusted_until`` lets a login at ``now`` in, under ``trust.seconds``.

    An entry that ends later than the policy now allows (``trust.seconds``
    was lowered, or the clock went back) is not honoured: lowering the
    setting, or setting it to 0, takes effect at once.
    """
    return seconds > 0 and now < trusted_until <= now + seconds


def renew(record: Record, rhost: str | None, now: float, seconds: int) -> None:
    """After a correct code from ``rhost``: trust it for ``seconds`` more, in ``record`` (changed in place).

    Entries that no longer apply are dropped first, so a stale entry never
    blocks a new one; when the record is still full, the entry that expires
    soonest goes. Without a client address nothing is granted.
    """
    trusted = record.trusted
    for address in [a for a, t in trusted.items() if not applies(t, seconds, now)]:
        del trusted[address]
    key = client_key(rhost)
    if seconds <= 0 or key is None:
        return
    trusted.pop(key, None)
    while len(trusted) >= MAX_TRUSTED:
        del trusted[min(trusted, key=lambda a: (trusted[a], a))]
    trusted[key] = int(now) + seconds
