"""pam_twofa.core.totp: RFC 4226/6238 vectors, equality with pyotp and stdlib hmac, match_step."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pam_twofa.core import totp

# RFC 6238 Appendix B: the seeds are the ASCII digits repeated to the hash's output length.
SEED = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}

RFC6238_VECTORS = [
    # (unix time, expected step, SHA1, SHA256, SHA512), 8 digits, period 30
    (59, 0x1, "94287082", "46119246", "90693936"),
    (1111111109, 0x23523EC, "07081804", "68084774", "25091201"),
    (1111111111, 0x23523ED, "14050471", "67062674", "99943326"),
    (1234567890, 0x273EF07, "89005924", "91819424", "93441116"),
    (2000000000, 0x3F940AA, "69279037", "90698825", "38618901"),
    (20000000000, 0x27BC86AA, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize("now, step, sha1, sha256, sha512", RFC6238_VECTORS)
def test_rfc6238_appendix_b(now, step, sha1, sha256, sha512):
    assert totp.time_step(now, 30) == step
    expected = {"SHA1": sha1, "SHA256": sha256, "SHA512": sha512}
    for algorithm, code in expected.items():
        assert totp.totp(SEED[algorithm], now, digits=8, period=30, algorithm=algorithm) == code
        assert totp.hotp(SEED[algorithm], step, digits=8, algorithm=algorithm) == code


# RFC 4226 Appendix D: secret "12345678901234567890", counters 0..9, 6 digits.
RFC4226_HOTP = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]
# ... and the truncated 31-bit values (Table "Truncated") the codes come from.
RFC4226_TRUNCATED = [
    1284755224,
    1094287082,
    137359152,
    1726969429,
    1640338314,
    868254676,
    1918287922,
    82162583,
    673399871,
    645520489,
]


@pytest.mark.parametrize("counter", range(10))
def test_rfc4226_hotp(counter):
    assert totp.hotp(SEED["SHA1"], counter) == RFC4226_HOTP[counter]
    # digits=10 exposes the whole truncated value (it is below 10**10)
    assert totp.hotp(SEED["SHA1"], counter, digits=10) == str(RFC4226_TRUNCATED[counter]).rjust(10, "0")


def test_rfc4226_hmac_sha1_intermediate():
    # RFC 4226 Appendix D, HMAC-SHA-1 value for count 0
    assert totp.hmac_digest(SEED["SHA1"], (0).to_bytes(8, "big")).hex() == ("cc93cf18508d94934c64b65d8ba7667fb7cde4b0")


def test_codes_are_zero_padded():
    # Counter 1 of RFC 6238's SHA1 seed at 8 digits starts with 0 in the table above
    # (1111111109 -> 07081804); a 6-digit code padded the same way:
    code = totp.totp(SEED["SHA1"], 1111111109, digits=8)
    assert code == "07081804" and len(code) == 8
    for counter in range(2000):
        value = totp.hotp(b"padding-check-key", counter, digits=6)
        assert len(value) == 6 and value.isdigit()


def test_unknown_algorithm_raises_value_error():
    with pytest.raises(ValueError):
        totp.hotp(SEED["SHA1"], 0, algorithm="MD5")
    with pytest.raises(ValueError):
        totp.hmac_digest(b"k", b"m", "sha1")  # names are exact


DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


@settings(max_examples=400, deadline=None)
@given(
    key=st.binary(min_size=10, max_size=64),
    now=st.integers(min_value=0, max_value=2**33),
    digits=st.integers(min_value=6, max_value=8),
    period=st.sampled_from([15, 30, 60]) | st.integers(min_value=1, max_value=600),
    algorithm=st.sampled_from(totp.ALGORITHMS),
)
def test_equal_to_pyotp(key, now, digits, period, algorithm):
    secret = base64.b32encode(key).decode()
    reference = pyotp.TOTP(secret, digits=digits, interval=period, digest=DIGESTS[algorithm])
    # A timezone-aware datetime makes pyotp use timegm, whatever the machine's TZ.
    when = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    expected = reference.at(when)
    assert totp.totp(key, now, digits, period, algorithm) == expected
    step = now // period
    assert totp.hotp(key, step, digits, algorithm) == expected
    assert pyotp.HOTP(secret, digits=digits, digest=DIGESTS[algorithm]).at(step) == expected


# The other pyotp releases the code must agree with (Debian 13's, the newest on
# PyPI), installed by scripts/test.sh into folders of their own; the one above is
# the system's (Debian 12: 2.6). Each runs in a child process of its own.
PYOTP_DIR = Path("/var/tmp/pam-twofa-pyotp")
SUPPORT = Path(__file__).resolve().parent / "support"
PYOTP_VERSIONS = [v for v in (line.split("#")[0].strip() for line in (SUPPORT / "pyotp-versions.txt").open()) if v]


@pytest.mark.parametrize("version", PYOTP_VERSIONS)
def test_equal_to_other_pyotp_releases(version):
    folder = PYOTP_DIR / version
    if not (folder / "pyotp" / "__init__.py").is_file():
        pytest.fail(f"pyotp {version} is not installed in {folder}: run scripts/test.sh, which installs it")
    child = subprocess.run(
        [sys.executable, "-I", str(SUPPORT / "pyotp_compare.py"), str(folder), str(SUPPORT.parents[1])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["version"] == version and result["file"].startswith(f"{folder}/"), result
    assert result["compared"]["hotp"] == result["cases"] >= 3000, result
    assert result["compared"]["totp"] >= 1500, result  # recent pyotp refuses periods over 120 s
    assert result["mismatches"] == [], result["mismatches"]


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=0, max_size=300),  # longer than both block sizes: key is hashed first
    msg=st.binary(max_size=200),
    algorithm=st.sampled_from(totp.ALGORITHMS),
)
def test_hmac_equal_to_stdlib(key, msg, algorithm):
    assert totp.hmac_digest(key, msg, algorithm) == hmac.new(key, msg, DIGESTS[algorithm]).digest()


@pytest.mark.parametrize("algorithm", totp.ALGORITHMS)
@pytest.mark.parametrize("size", [63, 64, 65, 127, 128, 129, 200])
def test_hmac_block_size_boundaries(algorithm, size):
    key = bytes(i % 256 for i in range(size))
    msg = b"boundary"
    assert totp.hmac_digest(key, msg, algorithm) == hmac.new(key, msg, DIGESTS[algorithm]).digest()


# --- match_step -------------------------------------------------------------

KEY = b"match-step-secret-0123"
NOW = 1_700_000_015.5  # step 56666667 at period 30
STEP = 56666667


def code_at(step, digits=6, algorithm="SHA1", key=KEY):
    return totp.hotp(key, step, digits, algorithm)


def test_now_is_the_step_assumed():
    assert totp.time_step(NOW, 30) == STEP


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_match_step_accepts_window_and_returns_the_step(offset):
    assert totp.match_step(KEY, code_at(STEP + offset), NOW, window=1) == STEP + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3, 100])
def test_match_step_rejects_outside_window(offset):
    code = code_at(STEP + offset)
    # guard: the code must not happen to equal one of the in-window codes
    assert code not in {code_at(STEP + d) for d in (-1, 0, 1)}
    assert totp.match_step(KEY, code, NOW, window=1) is None


@pytest.mark.parametrize("offset", [-2, 2])
def test_wider_window_accepts_more(offset):
    assert totp.match_step(KEY, code_at(STEP + offset), NOW, window=2) == STEP + offset
    assert totp.match_step(KEY, code_at(STEP + offset), NOW, window=1) is None


def test_window_zero_accepts_only_current_step():
    assert totp.match_step(KEY, code_at(STEP), NOW, window=0) == STEP
    assert totp.match_step(KEY, code_at(STEP - 1), NOW, window=0) is None
    assert totp.match_step(KEY, code_at(STEP + 1), NOW, window=0) is None


@pytest.mark.parametrize("algorithm", totp.ALGORITHMS)
@pytest.mark.parametrize("digits", [6, 7, 8])
@pytest.mark.parametrize("period", [30, 60])
def test_match_step_parameters(algorithm, digits, period):
    step = totp.time_step(NOW, period)
    code = code_at(step, digits, algorithm)
    assert totp.match_step(KEY, code, NOW, digits, period, 1, algorithm) == step
    # the same code checked with a different algorithm does not match
    other = next(a for a in totp.ALGORITHMS if a != algorithm)
    if code not in {code_at(step + d, digits, other) for d in (-1, 0, 1)}:
        assert totp.match_step(KEY, code, NOW, digits, period, 1, other) is None


def test_earliest_step_wins_when_codes_collide():
    # With 1 digit, codes of different steps collide easily: b"collide-11" gives
    # steps STEP-1 and STEP+1 the same code ("9") and STEP another one ("1").
    key = b"collide-11"
    now = 1_700_000_010
    step = now // 30
    assert [totp.hotp(key, step + d, 1) for d in (-1, 0, 1)] == ["9", "1", "9"]
    assert totp.match_step(key, "9", now, digits=1, window=1) == step - 1
    assert totp.match_step(key, "1", now, digits=1, window=1) == step


def test_wrong_length_code_is_none():
    code = code_at(STEP)
    assert totp.match_step(KEY, code[:-1], NOW) is None
    assert totp.match_step(KEY, code + "0", NOW) is None
    assert totp.match_step(KEY, "", NOW) is None
    assert totp.match_step(KEY, " " + code, NOW) is None
    # the 8-digit code is refused where 6 are expected, and vice versa
    assert totp.match_step(KEY, code_at(STEP, 8), NOW, digits=6) is None
    assert totp.match_step(KEY, code, NOW, digits=8) is None


def test_non_ascii_code_is_none_not_an_error():
    code = code_at(STEP)
    full_width = "".join(chr(ord(c) + 0xFF10 - 0x30) for c in code)
    assert totp.match_step(KEY, full_width, NOW) is None
    arabic = "".join(chr(ord(c) + 0x0660 - 0x30) for c in code)
    assert totp.match_step(KEY, arabic, NOW) is None
    assert totp.match_step(KEY, "é" * 6, NOW) is None


@pytest.mark.parametrize("now", [0, 0.5, 29.9, 30, 59, 75])
def test_negative_steps_never_matched(now):
    window = 5
    current = totp.time_step(now, 30)
    matched = set()
    # every code of steps 0..current+window is found, nothing raises near the epoch
    for step in range(0, current + window + 1):
        result = totp.match_step(KEY, code_at(step), now, window=window)
        assert result is not None and result >= 0
        matched.add(result)
    assert min(matched) == 0
    # a code that is not one of the non-negative window steps never matches
    valid = {code_at(s) for s in range(0, current + window + 1)}
    tried = 0
    for candidate in range(0, 1_000_000, 7919):
        code = str(candidate).rjust(6, "0")
        if code in valid:
            continue
        tried += 1
        assert totp.match_step(KEY, code, now, window=window) is None
    assert tried > 100


@settings(max_examples=150, deadline=None)
@given(
    key=st.binary(min_size=10, max_size=64),
    now=st.integers(min_value=0, max_value=2**33),
    offset=st.integers(min_value=-4, max_value=4),
    window=st.integers(min_value=0, max_value=3),
)
def test_match_step_property(key, now, offset, window):
    current = now // 30
    target = current + offset
    if target < 0:
        return
    code = totp.hotp(key, target, 6)
    result = totp.match_step(key, code, now, window=window)
    in_window = [s for s in range(max(0, current - window), current + window + 1)]
    codes = {s: totp.hotp(key, s, 6) for s in in_window}
    expected = next((s for s in in_window if codes[s] == code), None)
    assert result == expected
    if abs(offset) <= window:
        assert result is not None


def test_hash_constructors_work_without_the_pre_3_12_modules(monkeypatch):
    """Python 3.12 merged _sha256/_sha512 into _sha2 (Debian 13 has 3.13): the primitives fall back."""
    import sys
    import types

    from pam_twofa.core import primitives

    key = bytes(range(20))
    expected = {name: totp.hotp(key, 1, 8, name) for name in ("SHA256", "SHA512")}
    # A _sha2 as Python 3.12+ has it (made of this interpreter's own constructors), and no _sha256/_sha512.
    sha2 = types.ModuleType("_sha2")
    vars(sha2).update(sha256=primitives.hash_constructor("SHA256")[0], sha512=primitives.hash_constructor("SHA512")[0])
    monkeypatch.setitem(sys.modules, "_sha2", sha2)
    monkeypatch.setitem(sys.modules, "_sha256", None)
    monkeypatch.setitem(sys.modules, "_sha512", None)
    for name, code in expected.items():
        assert totp.hotp(key, 1, 8, name) == code
    assert primitives.sha256_hex(b"abc").startswith("ba7816bf")
    del sys.modules["_sha2"]  # and with neither, the failure is loud, not a wrong code
    monkeypatch.setitem(sys.modules, "_sha2", None)
    with pytest.raises(ImportError):
        primitives.hash_constructor("SHA256")


def test_drift_finds_the_nearest_step_outside_the_window():
    key, now = b"drift-test-key-0123", 1_700_000_015.0
    for offset in (-10, -4, -2, 2, 7, 10):
        code = totp.totp(key, now + 30 * offset)
        assert totp.match_step(key, code, now, window=1) is None
        assert totp.drift(key, code, now, window=1) == offset
    for offset in (-1, 0, 1):  # inside the window: a match, never drift
        assert totp.drift(key, totp.totp(key, now + 30 * offset), now, window=1) is None
    for offset in (-11, 11, 40):
        assert totp.drift(key, totp.totp(key, now + 30 * offset), now, window=1) is None
    assert totp.drift(key, "12345", now) is None  # wrong length
    assert totp.drift(key, totp.totp(key, now + 90), now, window=3) is None  # 3 is inside a window of 3
