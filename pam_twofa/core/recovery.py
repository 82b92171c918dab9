"""Single-use recovery codes: made once, shown once, stored only as salted hashes."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable

from pam_twofa.core.auth import hash_recovery_code, normalize_code

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper
COUNT = 10
LENGTH = 10


def new_codes(count: int = COUNT) -> tuple[list[str], bytes, list[bytes]]:
    """(codes as shown, e.g. ``k7m2x-9qp4t``; salt; hashes to store)."""
    salt = os.urandom(16)
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        codes.append(raw[:5] + "-" + raw[5:])
    return codes, salt, hashes_for(codes, salt)


def hashes_for(codes: Iterable[str], salt: bytes) -> list[bytes]:
    return [hash_recovery_code(normalize_code(code), salt) for code in codes]
