"""Compare pam_twofa.core.totp with one pyotp release, in a process of its own.

Run as ``python -I pyotp_compare.py PYOTP_FOLDER REPO``: the pyotp in
PYOTP_FOLDER (``pip install --target``) comes first on sys.path, before the
system's. Prints one JSON object: the pyotp version and file that ran, the
number of cases and the first mismatches (empty when all agree).
"""

from __future__ import annotations

import sys

FOLDER, REPO = sys.argv[1], sys.argv[2]
sys.path[:0] = [FOLDER, REPO]

import base64  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402

import pyotp  # noqa: E402

from pam_twofa.core import totp  # noqa: E402

DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
CASES = 3000
# Recent pyotp (2.12.1, not 2.9.0) refuses TOTP intervals over 120 s (NIST SP 800-63B-4); pam_twofa
# accepts longer periods, so with such a release those cases compare HOTP only.
TOTP_MAX_INTERVAL = 120


class HOTP(pyotp.HOTP):
    # Recent pyotp (2.12.1) refuses secrets under 112 bits; pam_twofa accepts 80-bit ones
    # (Google Authenticator's). Older releases ignore the attribute.
    min_secret_length_bits = 0


class TOTP(pyotp.TOTP):
    min_secret_length_bits = 0


def cases():
    rng = random.Random(20261203)
    for i in range(CASES):
        key = rng.randbytes(rng.randint(10, 64))
        period = rng.choice([15, 30, 60]) if i % 2 else rng.randint(1, 600)
        step = rng.randint(0, 2**33 // period)
        # the first and the last second of a step, and any second within one
        now = step * period + rng.choice([0, period - 1, rng.randrange(period)])
        yield key, now, rng.randint(6, 8), period, rng.choice(totp.ALGORITHMS)


def main() -> None:
    mismatches: list = []
    counts = {"hotp": 0, "totp": 0}
    for key, now, digits, period, algorithm in cases():
        secret = base64.b32encode(key).decode()
        step = now // period
        ours = totp.totp(key, now, digits, period, algorithm)
        reference = {"hotp": HOTP(secret, digits=digits, digest=DIGESTS[algorithm]).at(step)}
        counts["hotp"] += 1
        try:
            generator = TOTP(secret, digits=digits, interval=period, digest=DIGESTS[algorithm])
        except ValueError:
            if period <= TOTP_MAX_INTERVAL:
                raise
        else:
            # A timezone-aware datetime makes pyotp use timegm, whatever the machine's TZ.
            reference["totp"] = generator.at(datetime.datetime.fromtimestamp(now, datetime.timezone.utc))
            counts["totp"] += 1
        got = {"totp": ours, "hotp": totp.hotp(key, step, digits, algorithm)}
        if any(got[kind] != code for kind, code in reference.items()) and len(mismatches) < 5:
            mismatches.append({"key": key.hex(), "now": now, "digits": digits, "period": period,
                               "algorithm": algorithm, "pyotp": reference, "ours": got})  # fmt: skip
    result = {
        "version": importlib.metadata.version("pyotp"),
        "file": pyotp.__file__,
        "cases": CASES,
        "compared": counts,
        "mismatches": mismatches,
    }
    print(json.dumps(result))


main()
