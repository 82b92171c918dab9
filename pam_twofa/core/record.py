"""A user's 2FA record and its on-disk text form (pure: no I/O).

One record per user holds the TOTP secret, the hashed recovery codes and the
login state (replay memory, failures, lockout, trusted clients). The text
form is ``key value`` lines parsed with ``str`` methods only: ``json`` would
cost the login path more than its whole budget (docs/performance.md). The
class uses ``__slots__`` instead of ``dataclasses`` for the same reason
(``import dataclasses`` costs about 17 ms).

The format evolves through one table, ``FIELDS``: each field has a codec, a
default and the format version that introduced it. A record of version N
must hold exactly the fields of versions up to N; fields introduced later
take their defaults. So every older record keeps loading after an upgrade.
A record is written in the oldest version that holds its values, and never
older than ``WRITE_FLOOR``: a host not upgraded yet (a fleet is upgraded host
by host) keeps reading every record until a field it does not know is used
(docs/store.md).
"""

VERSION = 3
MAGIC_PREFIX = "pam-twofa-record "
MAGIC = MAGIC_PREFIX + str(VERSION)
WRITE_FLOOR = 2  # the oldest version written: the one before the current, what the last release reads
MAX_BYTES = 64 * 1024
MAX_TRUSTED = 16  # client addresses remembered per user (trust.seconds); the oldest expiry goes first
MAX_SEEN = 32  # client addresses of the last logins with a code (notify.remember is at most this)

# (name, codec, default, version that introduced it). The order is the order
# of the lines written. Codecs: int, hex (bytes), text (one printable line),
# hexlist (list of bytes), intlist (list of ints), addresses ({client address: time}).
FIELDS = (
    ("digits", "int", 6, 1),
    ("period", "int", 30, 1),
    ("enrolled_at", "int", 0, 1),
    ("last_step", "int", -1, 1),  # highest TOTP time step accepted: replay memory
    ("locked_until", "int", 0, 1),
    ("last_success_at", "int", 0, 1),
    ("email_code_expires", "int", 0, 1),
    ("key", "hex", b"", 1),  # the TOTP secret; b"" when not enrolled
    ("recovery_salt", "hex", b"", 1),
    ("email_code_salt", "hex", b"", 1),
    ("email_code_hash", "hex", b"", 1),  # the pending emailed code, only as a salted hash; b"" = none
    ("algorithm", "text", "SHA1", 1),
    ("last_success_rhost", "text", "", 1),
    ("email", "text", "", 1),  # per-user address for emailed codes, "" = the policy's template
    ("recovery_hashes", "hexlist", (), 1),  # salted hashes, never the codes
    ("failures", "intlist", (), 1),  # timestamps of failed codes in the window
    ("email_sends", "intlist", (), 1),  # timestamps of mails sent in the window
    ("trusted", "addresses", None, 2),  # {client address: trusted until}
    ("seen", "addresses", None, 3),  # {client address: last login with a code from it} (notify.new_address)
    ("invited_at", "int", 0, 3),  # when twofa-admin invite last mailed this user (0: never)
)
_NAMES = tuple(f[0] for f in FIELDS)
_READABLE = {str(v): v for v in range(1, VERSION + 1)}
_MUTABLE = {"hexlist": list, "intlist": list, "addresses": dict}


TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from typing import Any

# The Python type of each codec: the class declarations of ``Record`` follow FIELDS with these
# (tests/test_types.py checks that they match, name by name and in order).
CODEC_TYPES = {
    "int": int,
    "hex": bytes,
    "text": str,
    "hexlist": list[bytes],
    "intlist": list[int],
    "addresses": dict[str, int],
}


class RecordError(ValueError):
    """The text is not a valid record (corrupted, truncated or foreign)."""


class Record:
    """Everything the store keeps about one user."""

    __slots__ = ("user", *_NAMES)
    # The fields for mypy, one per row of FIELDS in its order, typed by its codec (CODEC_TYPES).
    # Declarations without a value: the slots above hold the values.
    user: str
    digits: int
    period: int
    enrolled_at: int
    last_step: int
    locked_until: int
    last_success_at: int
    email_code_expires: int
    key: bytes
    recovery_salt: bytes
    email_code_salt: bytes
    email_code_hash: bytes
    algorithm: str
    last_success_rhost: str
    email: str
    recovery_hashes: list[bytes]
    failures: list[int]
    email_sends: list[int]
    trusted: dict[str, int]
    seen: dict[str, int]
    invited_at: int

    def __init__(self, user: str, **fields: object) -> None:
        self.user = user
        for name, codec, default, _since in FIELDS:
            maker = _MUTABLE.get(codec)
            setattr(self, name, maker(default or ()) if maker else default)
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def enrolled(self) -> bool:
        return bool(self.key)

    def copy(self) -> "Record":
        new = Record(self.user)
        for name in _NAMES:
            value = getattr(self, name)
            setattr(new, name, value.copy() if isinstance(value, (list, dict)) else value)
        return new

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Record)
            and self.user == other.user
            and all(getattr(self, n) == getattr(other, n) for n in _NAMES)
        )

    def __repr__(self) -> str:  # never shows the secret or hashes
        return f"Record(user={self.user!r}, enrolled={self.enrolled}, failures={len(self.failures)})"


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


def storable_address(value: str) -> bool:
    """Whether ``value`` can be a key of an address map (``trusted``, ``seen``): a key sits between
    "," and "=", so neither may occur in it; printable, at most 64 characters."""
    return 0 < len(value) <= 64 and value.isprintable() and not any(c in value for c in ", =")


def _clean_address(value: str) -> str:
    if not storable_address(value):
        raise RecordError("malformed client address")
    return value


def _encode(codec: str, value: "Any") -> str:
    if codec == "int":
        return str(int(value))
    if codec == "hex":
        return value.hex()
    if codec == "text":
        return _clean_text(value)
    if codec == "hexlist":
        return ",".join(h.hex() for h in value)
    if codec == "intlist":
        return ",".join(str(int(t)) for t in value)
    return ",".join(f"{_clean_address(a)}={int(t)}" for a, t in sorted(value.items()))


def _decode(codec: str, text: str) -> "Any":
    if codec == "int":
        return _parse_int(text)
    if codec == "hex":
        return _parse_hex(text)
    if codec == "text":
        return _clean_text(text)
    items = text.split(",") if text else []
    if codec == "hexlist":
        return [_parse_hex(h) for h in items]
    if codec == "intlist":
        return [_parse_int(t) for t in items]
    found: dict[str, int] = {}
    for item in items:
        address, sep, until = item.rpartition("=")
        if not sep or address in found:
            raise RecordError("malformed client address entry")
        found[_clean_address(address)] = _parse_int(until)
    return found


def written_version(record: Record) -> int:
    """The oldest format version that holds every value of ``record`` (at least ``WRITE_FLOOR``)."""
    version = WRITE_FLOOR
    for name, codec, default, since in FIELDS:
        if since > version:
            value = getattr(record, name)
            if (value != default) if codec not in _MUTABLE else bool(value):
                version = since
    return version


def dumps(record: Record) -> str:
    _check(record)  # never write what loads refuses: it would come back as a corrupted record
    version = written_version(record)
    lines = [MAGIC_PREFIX + str(version), "user " + _clean_text(record.user)]
    for name, codec, _default, since in FIELDS:
        if since <= version:
            lines.append(f"{name} {_encode(codec, getattr(record, name))}")
    lines.append("end")
    return "\n".join(lines) + "\n"


def loads(text: str, user: str) -> Record:
    """Parse a record of any version up to ``VERSION``; ``user`` must match the name stored inside it."""
    if len(text) > MAX_BYTES:
        raise RecordError("record too large")
    lines = text.split("\n")
    # A complete record ends with "end" and a newline: anything else is truncated.
    if len(lines) < 3 or not lines[0].startswith(MAGIC_PREFIX) or lines[-2] != "end" or lines[-1] != "":
        raise RecordError("not a complete pam-twofa record")
    version_text = lines[0][len(MAGIC_PREFIX) :]
    if version_text not in _READABLE:
        raise RecordError(
            f"record format {version_text!r} is not one this version reads (1 to {VERSION}): written by a newer pam-twofa?"
        )
    version = _READABLE[version_text]
    seen: dict[str, str] = {}
    for line in lines[1:-2]:
        name, sep, value = line.partition(" ")
        if not sep or name in seen:
            raise RecordError("malformed or repeated line")
        seen[name] = value
    expected = {"user"} | {name for name, _codec, _default, since in FIELDS if since <= version}
    if set(seen) != expected:
        raise RecordError("unknown or missing fields")
    if seen["user"] != user:
        raise RecordError("record belongs to another user")
    record = Record(user)
    for name, codec, _default, since in FIELDS:
        if since <= version:
            setattr(record, name, _decode(codec, seen[name]))
    _check(record)
    return record


def _check(record: Record) -> None:
    """What the codecs alone let through but no record may hold: refused by loads and dumps alike."""
    if record.algorithm not in ("SHA1", "SHA256", "SHA512"):
        raise RecordError("unknown TOTP algorithm")
    if not 6 <= record.digits <= 10 or not 1 <= record.period <= 3600:
        raise RecordError("TOTP digits or period out of range")
    if len(record.trusted) > MAX_TRUSTED:
        raise RecordError("too many trusted client addresses")
    if len(record.seen) > MAX_SEEN:
        raise RecordError("too many remembered client addresses")
