"""core.provisioning: the URI and the key text an authenticator app is given (shared by twofa-enroll
and the enrollment at login)."""

import pytest

from pam_twofa.core.provisioning import (
    ADD_BY_HAND,
    CANNOT_SCAN,
    OPEN_URI,
    SCAN,
    base32,
    group4,
    provisioning_uri,
    setup_lines,
)

pytestmark = pytest.mark.unit
KEY = bytes(range(20))


def test_the_key_in_groups_of_four():
    assert base32(KEY) == "AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQT"
    assert group4(base32(KEY)) == "AAAQ EAYE AUDA OCAJ BIFQ YDIO B4IB CEQT"


def test_with_a_picture_scan_it_or_type_the_key():
    uri = provisioning_uri(KEY, "alice", "host", "host", 6, 30, "SHA1")
    lines = setup_lines(uri, KEY, "##\n##\n")
    assert lines == [SCAN, "##\n##", CANNOT_SCAN, "    " + group4(base32(KEY)), OPEN_URI, "    " + uri]


def test_without_a_picture_nothing_says_scan():
    """twofa-enroll --qr none printed "Scan this QR code" with no code under it (issue 25)."""
    uri = provisioning_uri(KEY, "alice", "host", "host", 6, 30, "SHA1")
    lines = setup_lines(uri, KEY, "")
    assert lines == [ADD_BY_HAND, "    " + group4(base32(KEY)), OPEN_URI, "    " + uri]
    assert not any("scan" in line.lower() for line in lines)
