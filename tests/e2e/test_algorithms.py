"""TOTP with SHA-256 and SHA-512 (``totp.algorithm``): enroll, then log in over SSH, on every image.

The module computes HMAC over the interpreter's builtin hash modules, whose
names changed in Python 3.12 (``_sha256``/``_sha512`` became ``_sha2``):
Debian 12 has 3.11, Debian 13 has 3.13, so both are tried here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time

import pyotp
import pytest
from e2e_harness import PASSWORD_PORT, POLICY_PATH, ssh_login, wait_for_fresh_step

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA512"])
def test_enroll_and_log_in_with_algorithm(password_host, make_user, algorithm):
    original = password_host.run(["cat", POLICY_PATH]).stdout
    assert "totp:\n  window: 1\n" in original
    password_host.write_policy(
        original.replace("totp:\n  window: 1\n", f"totp:\n  window: 1\n  algorithm: {algorithm}\n")
    )
    try:
        user, password = make_user(password_host)
        secret = base64.b32encode(os.urandom(20)).decode()
        app = pyotp.TOTP(secret, digest=getattr(hashlib, algorithm.lower()))
        wait_for_fresh_step()
        done = password_host.run(
            ["twofa-enroll", "--user", user, "--secret", secret, "--code", app.at(int(time.time()) - 30), "--force"],
            check=False,
        )
        assert done.returncode == 0 and f"now on for {user}" in done.stdout, done.stdout + done.stderr

        wait_for_fresh_step()
        login = ssh_login(PASSWORD_PORT, user, password=password, code=lambda: app.now())
        assert login.ok and login.asked_code and login.output.strip() == user, login

        # a SHA-1 code for the same secret is not this account's code
        sha1 = pyotp.TOTP(secret).now()
        if sha1 not in {app.at(int(time.time()) + k * 30) for k in (-1, 0, 1)}:
            refused = ssh_login(PASSWORD_PORT, user, password=password, code=sha1)
            assert not refused.ok and refused.asked_code, refused
    finally:
        password_host.write_policy(original)
