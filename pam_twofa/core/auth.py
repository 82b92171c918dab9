"""Checking a code against a record: the pure state transition of a login.

``attempt`` takes the record as read under the user's lock, the typed code and
the time, and returns the result and the record to write back. No I/O, no
clock: the caller passes ``now``.
"""

from pam_twofa.core import totp
from pam_twofa.core.primitives import compare_digest as _compare_digest
from pam_twofa.core.record import Record

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
    """``drift``: for a refused TOTP code that matches an unused step outside the window (up to
    ``totp.DRIFT_REACH`` steps away), that step's offset from now (negative: the device is behind);
    0 otherwise. The code stays refused: the offset is for the admin's log only."""

    __slots__ = ("result", "record", "newly_locked", "drift")

    def __init__(self, result: str, record: Record, newly_locked: bool = False, drift: int = 0) -> None:
        self.result = result
        self.record = record
        self.newly_locked = newly_locked
        self.drift = drift

    @property
    def ok(self) -> bool:
        return self.result in (SUCCESS, RECOVERY)


def normalize_code(typed: str) -> str:
    """What the user meant: ASCII spaces, tabs and dashes dropped (anywhere, as docs/login.md, "Codes as typed", says:
    ``123<TAB>456`` from a paste is ``123456``), line ends trimmed, letters lowered.

    Only ASCII counts: full-width or other Unicode digits are not digits here
    (``str.isdigit`` would accept them).
    """
    if len(typed) > MAX_CODE_LENGTH:
        return ""
    cleaned = typed.strip(" \t\r\n").replace(" ", "").replace("\t", "").replace("-", "")
    if not cleaned.isascii() or not cleaned.isalnum():
        return ""
    return cleaned.lower()


def hash_recovery_code(code: str, salt: bytes) -> bytes:
    """Salted, slow hash of a normalized recovery code (only on the failure/recovery path)."""
    from pam_twofa.core.primitives import pbkdf2_sha256

    return pbkdf2_sha256(code.encode("ascii"), salt, RECOVERY_ITERATIONS)


def refusal_cost() -> None:
    """The one PBKDF2 of a wrong code, for refusals that verify nothing (locked account, unknown
    user), so the time of a refusal does not tell which case it was."""
    hash_recovery_code("-", _DUMMY_SALT)


def is_locked(record: Record, now: float) -> bool:
    return record.locked_until > now


def attempt(record: Record, typed: str, now: float, limits: Limits) -> Outcome:
    """Verify ``typed`` for ``record`` at ``now``; return the result and the new record."""
    new, locked = _prepare(record, now, limits)
    if locked:
        return locked
    code = normalize_code(typed)
    result = BAD_CODE
    if code and code.isdigit() and new.enrolled:
        step = totp.match_step(new.key, code, now, new.digits, new.period, limits.window, new.algorithm)
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
        return _succeed(new, result, now)
    outcome = _fail(new, result, now, limits)
    if result == BAD_CODE and code.isdigit() and new.enrolled:
        offset = totp.drift(new.key, code, now, new.digits, new.period, limits.window, new.algorithm)
        # A step already used is an old code typed again, not a clock that is off.
        if offset is not None and totp.time_step(now, new.period) + offset > new.last_step:
            outcome.drift = offset
    return outcome


def _succeed(new: Record, result: str, now: float) -> Outcome:
    new.failures = []
    new.last_success_at = int(now)
    return Outcome(result, new)


def _fail(new: Record, result: str, now: float, limits: Limits) -> Outcome:
    """Count a failure; the ``max_failures``-th in the window locks the account."""
    new.failures.append(int(now))
    newly_locked = False
    if len(new.failures) >= limits.max_failures:
        new.locked_until = int(now) + limits.per_seconds
        newly_locked = True
    return Outcome(result, new, newly_locked)


def _prepare(record: Record, now: float, limits: Limits) -> "tuple[Record, Outcome | None]":
    """(working copy with old failures dropped, the LOCKED outcome while locked or None).

    Nothing is verified while locked: the answer must not tell whether the
    code was right, and it costs what a refusal costs.
    """
    new = record.copy()
    new.failures = [t for t in new.failures if t > now - limits.per_seconds]
    if is_locked(new, now):
        refusal_cost()
        return new, Outcome(LOCKED, new)
    new.locked_until = 0
    return new, None


# -- emailed one-time codes (enforced users who have not enrolled) -------------

EXPIRED = "expired code"


def next_send_at(record: Record, now: float, max_sends: int, per_seconds: int) -> float:
    """0 if a code may be mailed now, else when the oldest send in the window leaves it."""
    recent = sorted(t for t in record.email_sends if t > now - per_seconds)
    if len(recent) < max_sends:
        return 0
    return recent[len(recent) - max_sends] + per_seconds


def issue_email_code(record: Record, code: str, salt: bytes, now: float, ttl: int, per_seconds: int) -> Record:
    """The record once ``code`` was mailed: it replaces any pending code (one valid code at a time)."""
    new = record.copy()
    new.email_sends = [t for t in new.email_sends if t > now - per_seconds] + [int(now)]
    new.email_code_salt = salt
    new.email_code_hash = hash_recovery_code(code, salt)
    new.email_code_expires = int(now) + ttl
    return new


def _clear_email_code(new: Record) -> None:
    new.email_code_salt = b""
    new.email_code_hash = b""
    new.email_code_expires = 0


def attempt_email(record: Record, typed: str, now: float, limits: Limits) -> Outcome:
    """Verify a typed emailed code: single use, until it expires; failures count toward the lockout."""
    new, locked = _prepare(record, now, limits)
    if locked:
        return locked
    code = normalize_code(typed)
    salt = new.email_code_salt or _DUMMY_SALT
    digest = hash_recovery_code(code or "-", salt)
    matches = bool(new.email_code_hash) and _compare_digest(digest, new.email_code_hash)
    if matches and code and now < new.email_code_expires:
        _clear_email_code(new)
        return _succeed(new, SUCCESS, now)
    if matches and code:
        _clear_email_code(new)
        return _fail(new, EXPIRED, now, limits)
    return _fail(new, BAD_CODE, now, limits)
