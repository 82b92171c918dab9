"""A user's 2FA record and its on-disk text form (pure: no I/O).

One record per user holds the TOTP secret, the hashed recovery codes and the
login state (replay memory, failures, lockout). The text form is ``key value``
lines parsed with ``str`` methods only: ``json`` would cost the login path
more than its whole budget (SPEC §11). The classes use ``__slots__`` instead
of ``dataclasses`` for the same reason (``import dataclasses`` costs ~17 ms).
"""

MAGIC = "pam-twofa-record 1"
MAX_BYTES = 64 * 1024


class RecordError(ValueError):
    """The text is not a valid record (corrupted, truncated or foreign)."""


class Record:
    """Everything the store keeps about one user."""

    __slots__ = (
        "user",
        "key",  # TOTP secret as bytes; b"" when not enrolled
        "algorithm",
        "digits",
        "period",
        "enrolled_at",
        "recovery_salt",  # bytes
        "recovery_hashes",  # list of bytes (salted hashes, never the codes)
        "last_step",  # highest TOTP time step accepted: replay memory
        "failures",  # list of int timestamps of failed codes in the window
        "locked_until",
        "last_success_at",
        "last_success_rhost",
        "email",  # per-user address for emailed codes, "" = policy template
        "email_code_salt",  # bytes; the pending emailed code, stored only as a salted hash
        "email_code_hash",  # bytes; b"" = no pending code
        "email_code_expires",
        "email_sends",  # list of int timestamps of mails sent in the window
    )

    def __init__(self, user: str, **fields) -> None:
        self.user = user
        self.key = b""
        self.algorithm = "SHA1"
        self.digits = 6
        self.period = 30
        self.enrolled_at = 0
        self.recovery_salt = b""
        self.recovery_hashes = []
        self.last_step = -1
        self.failures = []
        self.locked_until = 0
        self.last_success_at = 0
        self.last_success_rhost = ""
        self.email = ""
        self.email_code_salt = b""
        self.email_code_hash = b""
        self.email_code_expires = 0
        self.email_sends = []
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def enrolled(self) -> bool:
        return bool(self.key)

    def copy(self) -> "Record":
        new = Record(self.user)
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(new, name, list(value) if isinstance(value, list) else value)
        return new

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:  # never shows the secret or hashes
        return f"Record(user={self.user!r}, enrolled={self.enrolled}, failures={len(self.failures)})"


_INT_FIELDS = (
    "digits",
    "period",
    "enrolled_at",
    "last_step",
    "locked_until",
    "last_success_at",
    "email_code_expires",
)
_HEX_FIELDS = ("key", "recovery_salt", "email_code_salt", "email_code_hash")
_TEXT_FIELDS = ("algorithm", "last_success_rhost", "email")


def _parse_int(text: str) -> int:
    # int() alone would accept "+1", " 1", "1_0" and non-ASCII digits
    body = text[1:] if text.startswith("-") else text
    if not body or not (body.isascii() and body.isdigit()) or len(body) > 20:
        raise RecordError("not an integer")
    return int(text)


def _parse_hex(text: str) -> bytes:
    # bytes.fromhex alone would skip whitespace ("12 34", " 1234", "12\t34")
    if text.strip("0123456789abcdefABCDEF"):
        raise RecordError("not hexadecimal")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise RecordError("not hexadecimal") from None


def _clean_text(value: str) -> str:
    if not value.isprintable() or len(value) > 1024:
        raise RecordError("text field with control characters or too long")
    return value


def dumps(record: Record) -> str:
    lines = [MAGIC, "user " + _clean_text(record.user)]
    for name in _INT_FIELDS:
        lines.append(f"{name} {int(getattr(record, name))}")
    for name in _HEX_FIELDS:
        lines.append(f"{name} {getattr(record, name).hex()}")
    for name in _TEXT_FIELDS:
        lines.append(f"{name} {_clean_text(getattr(record, name))}")
    lines.append("recovery_hashes " + ",".join(h.hex() for h in record.recovery_hashes))
    lines.append("failures " + ",".join(str(int(t)) for t in record.failures))
    lines.append("email_sends " + ",".join(str(int(t)) for t in record.email_sends))
    lines.append("end")
    return "\n".join(lines) + "\n"


def loads(text: str, user: str) -> Record:
    """Parse a record; ``user`` must match the name stored inside it."""
    if len(text) > MAX_BYTES:
        raise RecordError("record too large")
    lines = text.split("\n")
    # A complete record ends with "end" and a newline: anything else is truncated.
    if len(lines) < 3 or lines[0] != MAGIC or lines[-2] != "end" or lines[-1] != "":
        raise RecordError("not a complete pam-twofa record")
    seen = {}
    for line in lines[1:-2]:
        name, sep, value = line.partition(" ")
        if not sep or name in seen:
            raise RecordError("malformed or repeated line")
        seen[name] = value
    expected = {"user", "recovery_hashes", "failures", "email_sends", *_INT_FIELDS, *_HEX_FIELDS, *_TEXT_FIELDS}
    if set(seen) != expected:
        raise RecordError("unknown or missing fields")
    if seen["user"] != user:
        raise RecordError("record belongs to another user")
    record = Record(user)
    for name in _INT_FIELDS:
        setattr(record, name, _parse_int(seen[name]))
    for name in _HEX_FIELDS:
        setattr(record, name, _parse_hex(seen[name]))
    for name in _TEXT_FIELDS:
        setattr(record, name, _clean_text(seen[name]))
    hashes = seen["recovery_hashes"]
    record.recovery_hashes = [_parse_hex(h) for h in hashes.split(",")] if hashes else []
    fails = seen["failures"]
    record.failures = [_parse_int(t) for t in fails.split(",")] if fails else []
    sends = seen["email_sends"]
    record.email_sends = [_parse_int(t) for t in sends.split(",")] if sends else []
    if record.algorithm not in ("SHA1", "SHA256", "SHA512"):
        raise RecordError("unknown TOTP algorithm")
    if not 6 <= record.digits <= 10 or not 1 <= record.period <= 3600:
        raise RecordError("TOTP digits or period out of range")
    return record
