"""TOTP (RFC 6238) over HOTP (RFC 4226): pure functions, no I/O, no clock.

Used on the login path, so it avoids the ``hmac``/``hashlib``/``base64``
modules, whose imports alone cost more than the login budget (docs/performance.md): HMAC
is a few lines over the interpreter's builtin ``_sha*`` modules. A test proves
the codes equal ``pyotp``'s for many random secrets, times and digit counts.
"""

from pam_twofa.core.primitives import compare_digest as _compare_digest
from pam_twofa.core.primitives import hash_constructor as _hash_ctor

ALGORITHMS = ("SHA1", "SHA256", "SHA512")
_BLOCK = 64  # block size of SHA-1 and SHA-256; SHA-512's is 128
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_digest(key: bytes, msg: bytes, algorithm: str = "SHA1") -> bytes:
    """HMAC (RFC 2104) with the named hash."""
    new, block = _hash_ctor(algorithm)
    if len(key) > block:
        key = new(key).digest()
    key = key.ljust(block, b"\0")
    inner = new(key.translate(_IPAD) + msg).digest()
    return new(key.translate(_OPAD) + inner).digest()


def hotp(key: bytes, counter: int, digits: int = 6, algorithm: str = "SHA1") -> str:
    """The HOTP value of ``counter`` as a zero-padded decimal string."""
    digest = hmac_digest(key, counter.to_bytes(8, "big"), algorithm)
    offset = digest[-1] & 0x0F
    value = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).rjust(digits, "0")


def time_step(now: float, period: int = 30) -> int:
    return int(now // period)


def totp(key: bytes, now: float, digits: int = 6, period: int = 30, algorithm: str = "SHA1") -> str:
    return hotp(key, time_step(now, period), digits, algorithm)


def match_step(
    key: bytes,
    code: str,
    now: float,
    digits: int = 6,
    period: int = 30,
    window: int = 1,
    algorithm: str = "SHA1",
) -> int | None:
    """The time step whose code equals ``code`` within ``window`` steps of now, or None.

    Every step of the window is computed and compared in constant time, so
    the time taken does not depend on which step (if any) matched.
    """
    if len(code) != digits:
        return None
    wanted = code.encode("ascii", "replace")
    current = time_step(now, period)
    found = None
    for step in range(current - window, current + window + 1):
        if step < 0:
            continue
        if _compare_digest(hotp(key, step, digits, algorithm).encode(), wanted) and found is None:
            found = step
    return found


DRIFT_REACH = 10  # steps on each side of now that a refused code is compared with, for the admin's log only


def drift(
    key: bytes,
    code: str,
    now: float,
    digits: int = 6,
    period: int = 30,
    window: int = 1,
    algorithm: str = "SHA1",
    reach: int = DRIFT_REACH,
) -> int | None:
    """For a code refused by ``match_step``: the step offset (negative: the device is behind) of the
    nearest step outside the window, up to ``reach`` steps away, whose code equals ``code``; None
    when none does. Only ever used to tell the admin that a device's clock is off: such a code
    stays refused. Called on the failure path only (twice ``reach - window`` HMACs)."""
    if len(code) != digits:
        return None
    wanted = code.encode("ascii", "replace")
    current = time_step(now, period)
    for distance in range(window + 1, reach + 1):
        for offset in (-distance, distance):
            step = current + offset
            if step >= 0 and _compare_digest(hotp(key, step, digits, algorithm).encode(), wanted):
                return offset
    return None
