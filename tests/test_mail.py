"""pam_twofa.system.mail.valid_address: what may reach ``RCPT TO`` (issue 12: exactly one ``@``)."""

from __future__ import annotations

import pytest

from pam_twofa.system.mail import valid_address


@pytest.mark.parametrize(
    "address", ["alice@example.com", "a.b+tag@mail-1.example.org", "root@localhost", "x_y@corp.example"]
)
def test_plain_addresses_are_valid(address):
    assert valid_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "x@evil.example@corp.example",  # {user}@corp.example for the account x@evil.example
        "a@@b.example",
        "@example.com",
        "alice@",
        "alice",
        "",
        '"a@b"@example.com',
        "a b@example.com",
        "alice@exa mple.com",
        "alice@[192.0.2.1]",
        "alice@example..com",
        "a..b@example.com",
        ".alice@example.com",
        "alice.@example.com",
        "a(comment)@example.com",
        "alice@example.com:25",
        "<alice@example.com>",
        "alice@example.com,bob@example.com",
        "al\u00efce@example.com",
        "alice@example.com\n",
        "a" * 250 + "@x.example",
    ],
)
def test_anything_else_is_refused(address):
    assert not valid_address(address)
