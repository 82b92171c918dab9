"""Checking a code against a record: the pure state transition of a login.

``attempt`` takes the record as read under the user's lock, the typed code and
the time, and returns the result and the record to write back. No I/O, no
clock: the caller passes ``now``.
"""

from __future__ import annotations

from _operator import _compare_digest

from pam_twofa import totp
from pam_twofa.record import Record

SUCCESS = "success"
RECOVERY = "success (recovery code)"
BAD_CODE = "bad code"
REPLAYED = "replayed code"
LOCKED = "locked"

MAX_CODE_LENGTH = 64  # anything longer is rejected before any work is done
RECOVERY_ITERATIONS = 20000
_DUMMY_SALT = b"pam-twofa-no-recovery-codes"


class Limits:
    """The rate limit of the policy (``rate_limit.*``) and the TOTP window."""

    __slots__ = ("max_failures", "per_seconds", "window")

    def __init__(self, max_failures: int = 5, per_seconds: int = 900, window: int = 1) -> None:
        self.max_failures = max_failures
        self.per_seconds = per_seconds
        self.window = window


class Outcome:
    __slots__ = ("result", "record", "newly_locked")

    def __init__(self, result: str, record: Record, newly_locked: bool = False) -> None:
        self.result = result
        self.record = record
        self.newly_locked = newly_locked

    @property
    def ok(self) -> bool:
        return self.result in (SUCCESS, RECOVERY)


def normalize_code(typed: str) -> str:
    """What the user meant: ASCII spaces, tabs and dashes dropped, letters lowered.

    Only ASCII counts: full-width or other Unicode digits are not digits here
    (``str.isdigit`` would accept them).
    """
    if len(typed) > MAX_CODE_LENGTH:
        return ""
    cleaned = typed.strip(" \t\r\n").replace(" ", "").replace("-", "")
    if not cleaned.isascii() or not cleaned.isalnum():
        return ""
    return cleaned.lower()


def hash_recovery_code(code: str, salt: bytes) -> bytes:
    """Salted, slow hash of a normalized recovery code (only on the failure/recovery path)."""
    from _hashlib import pbkdf2_hmac

    return pbkdf2_hmac("sha256", code.encode("ascii"), salt, RECOVERY_ITERATIONS)


def is_locked(record: Record, now: float) -> bool:
    return record.locked_until > now


def attempt(record: Record, typed: str, now: float, limits: Limits) -> Outcome:
    """Verify ``typed`` for ``record`` at ``now``; return the result and the new record."""
    new = record.copy()
    new.failures = [t for t in new.failures if t > now - limits.per_seconds]
    if is_locked(new, now):
        # Nothing is verified while locked: the answer must not tell whether the code was right.
        return Outcome(LOCKED, new)
    if new.locked_until:
        new.locked_until = 0
    code = normalize_code(typed)
    result = BAD_CODE
    if code and code.isdigit() and new.enrolled:
        step = totp.match_step(
            new.key, code, now, new.digits, new.period, limits.window, new.algorithm
        )
        if step is not None:
            if step <= new.last_step:
                result = REPLAYED
            else:
                new.last_step = step
                result = SUCCESS
    if result == BAD_CODE:
        # Always hash, even with no recovery codes, so a wrong code costs the
        # same whether or not the account has any.
        salt = new.recovery_salt or _DUMMY_SALT
        digest = hash_recovery_code(code or "-", salt)
        match = None
        for index, stored in enumerate(new.recovery_hashes):
            if _compare_digest(digest, stored) and match is None:
                match = index
        if match is not None and code:
            del new.recovery_hashes[match]
            result = RECOVERY
    if result in (SUCCESS, RECOVERY):
        new.failures = []
        new.last_success_at = int(now)
        return Outcome(result, new)
    new.failures.append(int(now))
    newly_locked = False
    if len(new.failures) >= limits.max_failures:
        new.locked_until = int(now) + limits.per_seconds
        newly_locked = True
    return Outcome(result, new, newly_locked)
