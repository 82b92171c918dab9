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
    assert "Scan this QR code" not in result.output  # no picture, so nothing to scan (issue 25)


def test_a_known_secret_without_qr_is_not_printed(scratch):
    secret, result = enroll(scratch)
    assert result.rc == 0, result
    assert "otpauth://" not in result.output and grouped(secret) not in result.output and secret not in result.output


def twofa_enroll(scratch, *args):
    return scratch._checked(
        scratch.env.run([scratch.env.enroll, *args, "--policy", scratch.policy_path], scratch.env.nss_env())
    )


def test_root_forgets_a_users_trusted_clients_and_the_next_login_is_asked(scratch):
    scratch.write_policy(trust_seconds=3600)
    alice = scratch.enroll("alice")
    settle(3)
    assert scratch.login(KEY, "alice", alice.code(), rhost="192.0.2.10").ok
    trusted = scratch.login(KEY, "alice", rhost="192.0.2.10")
    assert trusted.ok and not trusted.prompted, trusted
    result = twofa_enroll(scratch, "--user", "alice", "--forget-trusted")
    assert result.rc == 0 and "Forgot 1 trusted client address" in result.output, result
    asked = scratch.login(KEY, "alice", rhost="192.0.2.10")
    assert asked.prompted and asked.denied, asked
    again = twofa_enroll(scratch, "--user", "alice", "--forget-trusted")
    assert again.rc == 0 and "No trusted clients; nothing changed." in again.output, again


def test_root_is_sent_to_twofa_admin_to_turn_2fa_off(scratch):
    scratch.enroll("alice")
    result = twofa_enroll(scratch, "--user", "alice", "--disable")
    assert result.rc == 1 and "twofa-admin disable" in result.output, result
    assert (
        "\nkey " in scratch.record_path("alice").read_text()
        and "\nkey \n" not in scratch.record_path("alice").read_text()
    )
