"""Merging a host's offline journal into the database's record on reconnect (pure: no I/O, no clock).

While the database is unreachable the host agent serves logins from its local
copy (SPEC §12a). For each user it then holds ``base``, the record at the row
version it last got from the database before its offline writes (None: no
row), ``local``, the record after its offline logins, and ``steps``, the TOTP
steps it accepted offline. On reconnect, in one locked section, it reads
``current`` (None: no row or a tombstone) and asks ``merge`` what to write.

The principle: ``local`` minus ``base`` is what this host did offline; it is
applied onto ``current``, never onto ``base``, so that nothing written
meanwhile elsewhere (another host's logins, ``twofa-admin unlock``,
``twofa-enroll --forget-trusted``) is undone by an unchanged value of
``local``. The rules:

1. Nothing written meanwhile (``current_version == base_version``): the result
   is a copy of ``local``; ``twice`` is empty.
2. Identity (``IDENTITY``: key, digits, period, algorithm, enrolled_at,
   recovery_salt, email). The journal is dropped (``record`` None, ``dropped``
   says why) when:
   - ``local``'s identity differs from ``base``'s (from an empty
     ``Record(user)``'s when ``base`` is None): enrolled or changed offline,
     which the agent refuses; checked first, even before rule 1;
   - ``base`` is not None and ``current`` is None: removed meanwhile (a
     tombstone, ``twofa-admin disable``): a tombstone wins over a journal;
   - ``base`` was enrolled and ``current``'s key or enrolled_at differ from
     ``base``'s: re-enrolled (or unenrolled) meanwhile, and the offline logins
     used the old secret;
   - ``base`` and ``current`` are None but the versions differ: removed meanwhile.
   ``base`` None with a ``current``, and an unenrolled ``base`` (the emailed-code
   state) with a ``current`` enrolled meanwhile, merge against that base
   (``Record(user)`` for None): ``current``'s identity is kept.
3. Otherwise the result is a copy of ``current`` (its identity kept) with:
   - last_step: the higher of ``current``'s and ``local``'s (replay memory only grows);
   - failures: ``current``'s plus those ``local`` added (the multiset
     ``local - base``), only those later than ``now - limits.per_seconds``,
     sorted. When their count reaches ``limits.max_failures`` the account is
     locked until the latest of them plus ``limits.per_seconds``, as
     ``auth._fail`` locks: failures on two hosts add up to a lockout;
   - locked_until: the latest of ``current``'s, ``local``'s when ``local``
     changed it (an unchanged base lockout does not undo an unlock meanwhile),
     and the lockout above: the later lockout wins;
   - last_success_at and last_success_rhost: the pair with the later
     last_success_at (``current``'s on a tie);
   - recovery_hashes: a code used offline is used everywhere. When
     recovery_salt is the same in ``base``, ``local`` and ``current``:
     ``current``'s minus the hashes ``base`` had and ``local`` no longer has;
     otherwise (new codes meanwhile) ``current``'s;
   - the emailed code (email_code_salt, email_code_hash, email_code_expires,
     one unit): ``current``'s if ``local``'s equals ``base``'s, else ``local``'s
     if ``current``'s equals ``base``'s. When both changed it: a side still
     holding ``base``'s pending code (same salt and non-empty hash) loses,
     since the other side consumed or replaced that code (no code is used
     twice); else the unit with the later expires wins (``current``'s on a
     tie), a consumed unit (all empty, expires 0) losing to any new code;
   - email_sends: ``current``'s plus those ``local`` added (``local - base``),
     only those later than ``now - send_window``, sorted;
   - trusted: ``current``'s entries and those ``local`` added or renewed
     (expiry differing from ``base``'s), the later expiry per address; entries
     ending at or before ``now`` dropped; then at most ``MAX_TRUSTED``, the
     smallest (expiry, address) going first, as trust.renew does. An entry
     ``local`` merely kept from ``base`` does not come back once removed
     meanwhile (``--forget-trusted``);
   - seen (the client addresses of logins with a code, notify.new_address):
     ``current``'s and ``local``'s, the later time per address; then the
     ``MAX_SEEN`` latest, as ``alert.remember`` keeps them;
   - invited_at: the later of ``current``'s and ``local``'s;
   - the result passes ``record.dumps`` (else the journal is dropped).
   ``twice``: the steps of ``steps`` above ``base``'s last_step (-1 when None)
   equal to ``current.last_step`` when that rose above ``base``'s too: the same
   step accepted on another host while both were cut off, a replay across
   hosts the merge cannot undo (for a WARNING). Only the highest step accepted
   elsewhere is stored, so a lower step used on both hosts goes unseen.
4. The inputs are never changed, and the result shares no list or dict with them.

Records of different users are a caller's error: ``ValueError``.
"""

from pam_twofa.core.record import MAX_SEEN, MAX_TRUSTED, Record, RecordError, dumps

TYPE_CHECKING = False  # True for mypy only: this module follows record.py's import discipline
if TYPE_CHECKING:
    from typing import TypeVar

    from pam_twofa.core.auth import Limits

    T = TypeVar("T")

IDENTITY = ("key", "digits", "period", "algorithm", "enrolled_at", "recovery_salt", "email")
# Every other field of FIELDS has its own rule in _merge_state (tests/test_reconcile.py checks the two cover FIELDS).
MERGED = (
    "last_step",
    "failures",
    "locked_until",
    "last_success_at",
    "last_success_rhost",
    "recovery_hashes",
    "email_code_salt",
    "email_code_hash",
    "email_code_expires",
    "email_sends",
    "trusted",
    "seen",
    "invited_at",
)
_EMAIL_UNIT = ("email_code_salt", "email_code_hash", "email_code_expires")

CHANGED_OFFLINE = "enrolled or changed offline (the agent refuses that): the journal does not match its base"
REMOVED = "the record was removed meanwhile (twofa-admin disable): a tombstone wins over the journal"
REENROLLED = "re-enrolled or unenrolled meanwhile: the offline logins used the old secret"
UNWRITABLE = "the merged record fails the record's own checks"


class Merged:
    """What to write after a merge: ``record`` (None: nothing, the journal is dropped), why it was
    ``dropped`` ("" when not), and the steps accepted ``twice`` (offline here and elsewhere)."""

    __slots__ = ("record", "dropped", "twice")
    record: "Record | None"
    dropped: str
    twice: list[int]

    def __init__(self, record: "Record | None", dropped: str = "", twice: "list[int] | None" = None) -> None:
        self.record = record
        self.dropped = dropped
        self.twice = twice if twice is not None else []

    def __repr__(self) -> str:  # Record's repr shows no secret
        return f"Merged(record={self.record!r}, dropped={self.dropped!r}, twice={self.twice!r})"


def merge(
    current: "Record | None",
    current_version: int,
    base: "Record | None",
    base_version: int,
    local: Record,
    steps: list[int],
    now: int,
    limits: "Limits",
    send_window: int,
) -> Merged:
    """The record to write for ``local``'s offline journal, given the database's ``current`` (module docstring)."""
    user = local.user
    if any(r is not None and r.user != user for r in (current, base)):
        raise ValueError("merge of records of different users")
    origin = base if base is not None else Record(user)
    if _identity(local) != _identity(origin):
        return Merged(None, CHANGED_OFFLINE)
    if current_version == base_version:
        return _checked(local.copy(), [])
    if current is None:
        return Merged(None, REMOVED)
    if origin.enrolled and (current.key != origin.key or current.enrolled_at != origin.enrolled_at):
        return Merged(None, REENROLLED)
    return _checked(_merge_state(current, origin, local, now, limits, send_window), _twice(current, origin, steps))


def _checked(record: Record, twice: list[int]) -> Merged:
    try:
        dumps(record)
    except RecordError:
        return Merged(None, UNWRITABLE)
    return Merged(record, "", twice)


def _identity(record: Record) -> tuple[object, ...]:
    return tuple(getattr(record, name) for name in IDENTITY)


def _minus(items: "list[T]", taken: "list[T]") -> "list[T]":
    """The multiset difference ``items - taken``, in ``items``' order."""
    left = list(taken)
    kept = []
    for item in items:
        if item in left:
            left.remove(item)
        else:
            kept.append(item)
    return kept


def _merge_state(current: Record, base: Record, local: Record, now: int, limits: "Limits", send_window: int) -> Record:
    new = current.copy()
    new.last_step = max(current.last_step, local.last_step)

    failures = current.failures + _minus(local.failures, base.failures)
    new.failures = sorted(t for t in failures if t > now - limits.per_seconds)
    locks = [current.locked_until]
    if local.locked_until != base.locked_until:
        locks.append(local.locked_until)
    if new.failures and len(new.failures) >= limits.max_failures:
        locks.append(new.failures[-1] + limits.per_seconds)
    new.locked_until = max(locks)

    if local.last_success_at > current.last_success_at:
        new.last_success_at = local.last_success_at
        new.last_success_rhost = local.last_success_rhost

    if base.recovery_salt == local.recovery_salt == current.recovery_salt:
        new.recovery_hashes = _minus(current.recovery_hashes, _minus(base.recovery_hashes, local.recovery_hashes))

    for name, value in zip(_EMAIL_UNIT, _email_unit(current, base, local)):
        setattr(new, name, value)

    sends = current.email_sends + _minus(local.email_sends, base.email_sends)
    new.email_sends = sorted(t for t in sends if t > now - send_window)

    trusted = dict(current.trusted)
    for address, until in local.trusted.items():
        if base.trusted.get(address) != until:  # granted or renewed offline
            trusted[address] = max(until, trusted.get(address, until))
    trusted = {a: t for a, t in trusted.items() if t > now}
    while len(trusted) > MAX_TRUSTED:
        del trusted[min(trusted, key=lambda a: (trusted[a], a))]
    new.trusted = trusted

    seen = dict(current.seen)
    for address, at in local.seen.items():
        seen[address] = max(at, seen.get(address, at))
    while len(seen) > MAX_SEEN:
        del seen[min(seen, key=lambda a: (seen[a], a))]
    new.seen = seen
    new.invited_at = max(current.invited_at, local.invited_at)
    return new


def _email_unit(current: Record, base: Record, local: Record) -> tuple[bytes, bytes, int]:
    def unit(r: Record) -> tuple[bytes, bytes, int]:
        return (r.email_code_salt, r.email_code_hash, r.email_code_expires)

    c, b, loc = unit(current), unit(base), unit(local)
    if loc == b:
        return c
    if c == b:
        return loc
    base_code = b[:2] if b[1] else None
    if base_code is not None and c[:2] == base_code:
        return loc  # local consumed or replaced the code current still holds
    if base_code is not None and loc[:2] == base_code:
        return c
    return loc if loc[2] > c[2] else c


def _twice(current: Record, base: Record, steps: list[int]) -> list[int]:
    # current.last_step above base's: a step accepted elsewhere meanwhile; also in steps: accepted here too
    if current.last_step > base.last_step and current.last_step in steps:
        return [current.last_step]
    return []
