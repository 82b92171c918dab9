"""twofa-enroll run by root, as a real process (users from nss_wrapper): what it prints.

The self-service path (a user through sudo, on a terminal) is tested end to end
in tests/e2e/test_enroll.py.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

import pytest
from pam_harness import KEY, current_step, new_secret, oath, settle

HALF_BLOCKS = set("\u2580\u2584\u2588")


def enroll(scratch, *args):
    secret = new_secret()
    scratch.sensitive.update({secret, secret.lower(), base64.b32decode(secret + "=" * (-len(secret) % 8)).hex()})
    settle()
    code = oath(secret, current_step())
    scratch.sensitive.add(code)
    result = scratch.env.run(
        [
            scratch.env.enroll,
            "--user",
            "alice",
            "--secret",
            secret,
            "--code",
            code,
            *args,
            "--policy",
            scratch.policy_path,
        ],
        scratch.env.nss_env(),
    )
    return secret, result


def grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@pytest.mark.parametrize("style", ["utf8", "ansi"])
def test_explicit_qr_with_a_known_secret_prints_the_qr_uri_and_key(scratch, style):
    secret, result = enroll(scratch, "--qr", style)
    assert result.rc == 0, result
    output = result.output
    if style == "utf8":
        assert HALF_BLOCKS & set(output), output
    else:
        assert "\x1b[" in output, output
    uri = next(word for word in output.split() if word.startswith("otpauth://totp/"))
    assert parse_qs(urlparse(uri).query)["secret"] == [secret]
    assert grouped(secret) in output
    # and it enrolled: the next code logs in
    login = scratch.login(KEY, "alice", oath(secret, current_step() + 1))
    assert login.ok, login


def test_qr_none_prints_uri_and_key_without_a_picture(scratch):
    secret, result = enroll(scratch, "--qr", "none")
    assert result.rc == 0, result
    assert not HALF_BLOCKS & set(result.output) and "\x1b[" not in result.output, result.output
    assert "otpauth://totp/" in result.output and grouped(secret) in result.output


def test_a_known_secret_without_qr_is_not_printed(scratch):
    secret, result = enroll(scratch)
    assert result.rc == 0, result
    assert "otpauth://" not in result.output and grouped(secret) not in result.output and secret not in result.output
