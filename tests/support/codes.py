"""Wrong codes: well-formed codes that no step a test's login would accept produces."""

from __future__ import annotations

from collections.abc import Iterable


def code_not_in(valid: Iterable[str], start: int = 0, stride: int = 104729, digits: int = 6) -> str:
    """The first of ``start``, ``start + stride``, ... (mod 10**digits, zero-padded) not in ``valid``.

    ``valid`` holds every code the login could accept (the window and a margin);
    a ``stride`` prime to 10 visits every code, so the search always ends.
    """
    valid = set(valid)
    modulus = 10**digits
    for k in range(modulus):
        text = f"{(start + k * stride) % modulus:0{digits}d}"
        if text not in valid:
            return text
    raise AssertionError("every code is valid: no wrong code exists")
