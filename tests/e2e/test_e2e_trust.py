"""Trusted clients over real sshd (issue 16): after a correct code from 127.0.0.1 (PAM_RHOST of every
login from the host), the next SSH login is not asked for the code, until ``trust.seconds`` has passed.

Both stacks: password + code (alice) and SSH key + code (dave). The password or the key is still
required: the trust stands for the code only.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from e2e_harness import (
    ALICE_SECRET,
    CODE_PROMPT,
    DAVE_SECRET,
    KEY_PORT,
    PASSWORD_PORT,
    PASSWORDS,
    current_code,
    ssh_login,
)

pytestmark = pytest.mark.e2e

TRUST = 8  # seconds: short, so the test waits for it to end


@pytest.fixture
def trust_policy(scenario):
    """The scenario's policy with ``trust.seconds: TRUST`` on both hosts; restored after."""
    originals = {}
    for stack, host in scenario.items():
        originals[stack] = host.run(["cat", "/etc/pam-twofa/policy.yaml"]).stdout
        assert "\ntrust:" not in originals[stack]
        host.write_policy(originals[stack] + f"trust:\n  seconds: {TRUST}\n")
        host.run(["twofa-admin", "check"])
    yield scenario
    for stack, host in scenario.items():
        host.write_policy(originals[stack])
        host.run(["twofa-admin", "check"])


@pytest.mark.parametrize("stack", ["password", "key"])
def test_trusted_address_is_not_asked_then_asked_after_the_period(trust_policy, enroll, user_key, stack):
    host = trust_policy[stack]
    if stack == "password":
        user, secret, port = "alice", ALICE_SECRET, PASSWORD_PORT
        first_factor: dict[str, Any] = {"password": PASSWORDS["alice"]}
        wrong_first_factor: dict[str, Any] = {"password": "not-her-password"}
    else:
        user, secret, port = "dave", DAVE_SECRET, KEY_PORT
        first_factor = {"pkey": user_key[0]}
        wrong_first_factor = {}  # no key: keyboard-interactive alone
    enroll(host, user, secret)
    mark = host.syslog_mark()

    first = ssh_login(port, user, code=lambda: current_code(secret), **first_factor)
    assert first.ok and first.asked_code and first.output.strip() == user, first
    granted = time.time()

    again = ssh_login(port, user, **first_factor)
    assert again.ok and not again.asked_code and again.output.strip() == user, again
    log = host.syslog()[mark:]
    assert f"user={user} rhost=127.0.0.1 result=trusted client" in log, log

    # The trust never stands for the first factor.
    refused = ssh_login(port, user, **wrong_first_factor)
    assert not refused.ok, refused

    status = host.run(["twofa-admin", "status", user]).stdout
    assert f"{user}: trusted client 127.0.0.1 until " in status, status

    time.sleep(max(0.0, granted + TRUST + 1 - time.time()))
    after = ssh_login(port, user, **first_factor)
    assert not after.ok and CODE_PROMPT in after.prompts, after  # asked again (no code given: refused)
