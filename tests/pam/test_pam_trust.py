"""Trusted clients (``trust.seconds``, issue 16) through the real PAM stack (pamtester + pam_python).

A code accepted from client address A trusts A for the account for
``trust.seconds``. The clock of pamtester cannot be faked, so the tests about
expiry use a trust of a few seconds and wait for it to run out; the others use
a long trust. Codes come from oathtool; emailed codes from a real SMTP server
(the fixtures of test_pam_email.py).

The peer's failures this guards against (google-authenticator-libpam): trust
that never renews after its first period (#129, #193), and a stack that
behaves differently for a trusted login than for an asked one (#181).
"""

from __future__ import annotations

import json
import re
import time

import pytest
import test_pam_email
from pam_harness import KEY, MSG_LOCKED, PW, STACKS, current_step, new_secret, oath, settle
from test_pam_admin import enroll_with_recovery
from test_pam_email import email_policy, mail_login

smtp_server = test_pam_email.smtp_server  # the fixtures: a real SMTP server on 127.0.0.1
smtp = test_pam_email.smtp

pytestmark = pytest.mark.pam

A = "192.0.2.10"
B = "198.51.100.7"
SHORT = 5  # trust.seconds of the tests that wait for the trust to end
LONG = 3600
TRUSTED_LOG = "result=trusted client"


def trusted_in_record(scratch, user: str) -> dict:
    """{address: until} as the root-owned record holds it."""
    for line in scratch.record_path(user).read_text().split("\n"):
        if line.startswith("trusted "):
            body = line[len("trusted ") :]
            return {a: int(t) for a, _, t in (item.rpartition("=") for item in body.split(","))} if body else {}
    raise AssertionError(f"no trusted line in the record of {user}")


def next_code(enrolled, used: int) -> tuple[str, int]:
    """A code of a step after ``used`` that the module accepts now (window 1), and its step."""
    step = max(current_step(), used + 1, enrolled.enroll_step + 1)
    if step > current_step() + 1:
        time.sleep(30 - time.time() % 30 + 0.1)
    return oath(enrolled.secret, step), step


def asked_and_passed(result) -> None:
    assert result.ok and result.prompted, result


def trusted(result) -> None:
    assert result.ok and not result.prompted, result
    assert result.log_with(TRUSTED_LOG), result


def asked(result) -> None:
    """Asked for the code (no answer given: refused)."""
    assert result.denied and result.prompted, result
    assert not result.log_with(TRUSTED_LOG), result


def grant(scratch, stack, enrolled, rhost=A, used: int = -1) -> int:
    """An asked-and-passed login from ``rhost``; returns the step of the code used."""
    settle()
    code, step = next_code(enrolled, used)
    asked_and_passed(scratch.login(stack, enrolled.user, code, rhost=rhost))
    return step


# --- off by default -----------------------------------------------------------------------


def test_off_by_default_a_correct_code_trusts_nothing(scratch):
    alice = scratch.enroll("alice")
    grant(scratch, KEY, alice)
    assert trusted_in_record(scratch, "alice") == {}
    asked(scratch.login(KEY, "alice", rhost=A))


# --- within, after, renewed -------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_trusted_within_trust_seconds_asked_after_and_renewed_by_the_next_code(scratch, policy, stack):
    policy(trust_seconds=SHORT)
    alice = scratch.enroll("alice")
    step = grant(scratch, stack, alice)
    until = trusted_in_record(scratch, "alice")[A]
    assert SHORT - 2 <= until - time.time() <= SHORT, until - time.time()
    record = scratch.record_path("alice").read_bytes()

    result = scratch.login(stack, "alice", rhost=A)
    trusted(result)
    assert result.log_with("user=alice", f"rhost={A}", "trust.seconds (5 s)"), result
    assert scratch.record_path("alice").read_bytes() == record  # a trusted login neither renews nor writes
    if stack == PW:
        # The trust stands for the code, never for the password.
        assert scratch.login(PW, "alice", password="not-the-password", rhost=A).denied

    time.sleep(max(0.0, until - time.time()) + 0.5)
    asked(scratch.login(stack, "alice", rhost=A))

    # The peer's #129/#193: after the first period, a new code must trust the address again.
    code, step = next_code(alice, step)
    asked_and_passed(scratch.login(stack, "alice", code, rhost=A))
    renewed = trusted_in_record(scratch, "alice")[A]
    assert renewed > until, (renewed, until)
    trusted(scratch.login(stack, "alice", rhost=A))


# --- which client ----------------------------------------------------------------------------


def test_another_address_is_still_asked_and_the_same_address_in_any_spelling_is_trusted(scratch, policy):
    policy(trust_seconds=LONG)
    alice = scratch.enroll("alice")
    grant(scratch, KEY, alice, rhost=A)
    asked(scratch.login(KEY, "alice", rhost=B))
    trusted(scratch.login(KEY, "alice", rhost="::ffff:" + A))  # IPv4-mapped: the same client
    assert trusted_in_record(scratch, "alice") == {A: pytest.approx(time.time() + LONG, abs=5)}


@pytest.mark.parametrize("rhost", [None, ""])
def test_no_client_address_is_never_trusted(scratch, policy, rhost):
    policy(trust_seconds=LONG)
    alice = scratch.enroll("alice")
    step = grant(scratch, KEY, alice, rhost=rhost)
    assert trusted_in_record(scratch, "alice") == {}
    asked(scratch.login(KEY, "alice", rhost=rhost))
    grant(scratch, KEY, alice, rhost=A, used=step)
    asked(scratch.login(KEY, "alice", rhost=rhost))  # trusted from A, still asked without an address


@pytest.mark.parametrize("hostname", ["client.example.com", "localhost"])
def test_a_hostname_rhost_is_never_trusted(scratch, policy, hostname):
    """sshd with UseDNS yes passes a name: whoever controls their reverse DNS would pick the entry."""
    policy(trust_seconds=LONG)
    alice = scratch.enroll("alice")
    grant(scratch, KEY, alice, rhost=hostname)
    assert trusted_in_record(scratch, "alice") == {}
    asked(scratch.login(KEY, "alice", rhost=hostname))


# --- locked, disabled, re-enrolled -----------------------------------------------------------


def test_locked_user_is_asked_and_refused_from_a_trusted_address(scratch, policy):
    policy(trust_seconds=LONG, max_failures=3)
    bob = scratch.enroll("bob")
    grant(scratch, KEY, bob, rhost=A)
    for attempt in range(3):  # someone with bob's password, elsewhere
        assert scratch.login(KEY, "bob", bob.wrong_code(salt=attempt), rhost=B).denied
    locked = scratch.login(KEY, "bob", next_code(bob, current_step())[0], rhost=A)  # a correct code
    assert locked.denied and locked.prompted and not locked.log_with(TRUSTED_LOG), locked
    assert MSG_LOCKED in locked.output and locked.log_with("user=bob", "result=locked"), locked
    said = scratch.cli("explain", "bob", "--rhost", A)
    assert "decision: totp" in said.output and "but the account is locked" in said.output, said
    assert scratch.cli("unlock", "bob").rc == 0
    trusted(scratch.login(KEY, "bob", rhost=A))  # the trust itself was not the problem


def test_disable_clears_the_trust(scratch, smtp):
    """After disable, alice is enforced and emailed a code: a trust left behind would skip it."""
    port, box = smtp
    text = email_policy(scratch, port, mode="all")
    scratch.write_policy_text(text + f"trust:\n  seconds: {LONG}\n")
    alice = scratch.enroll("alice")
    grant(scratch, KEY, alice, rhost=A)
    trusted(scratch.login(KEY, "alice", rhost=A))
    done = scratch.cli("disable", "alice", "--yes")
    assert done.rc == 0 and "trusted clients" in done.output, done
    status = json.loads(scratch.cli("status", "alice", "--json").output)
    assert status["users"][0]["trusted"] == [], status
    attempt = mail_login(scratch, box, "alice", rhost=A)
    assert attempt.message is not None and attempt.result.ok, attempt  # asked by mail, not trusted
    assert not attempt.result.log_with(TRUSTED_LOG), attempt


def test_new_enrollment_clears_the_trust(scratch, policy):
    policy(trust_seconds=LONG)
    alice = scratch.enroll("alice")
    grant(scratch, KEY, alice, rhost=A)
    settle()
    secret = new_secret()
    scratch.sensitive.add(secret)
    step = current_step()
    done = scratch.env.run(
        [scratch.env.enroll, "--user", "alice", "--secret", secret, "--code", oath(secret, step - 1), "--force"]
        + ["--policy", scratch.policy_path],
        scratch.env.nss_env(),
    )
    assert done.rc == 0, done
    assert trusted_in_record(scratch, "alice") == {}
    asked(scratch.login(KEY, "alice", rhost=A))
    asked_and_passed(scratch.login(KEY, "alice", oath(secret, step), rhost=A))


# --- what grants trust --------------------------------------------------------------------------


def test_a_recovery_code_login_grants_trust(scratch, policy):
    policy(trust_seconds=LONG)
    _alice, codes = enroll_with_recovery(scratch, "alice")
    result = scratch.login(KEY, "alice", codes[0], rhost=A)
    asked_and_passed(result)
    assert result.log_with("success (recovery code)"), result
    trusted(scratch.login(KEY, "alice", rhost=A))


def test_an_emailed_code_login_grants_trust(scratch, smtp):
    port, box = smtp
    text = email_policy(scratch, port, mode="all")
    scratch.write_policy_text(text + f"trust:\n  seconds: {LONG}\n")
    first = mail_login(scratch, box, "alice", rhost=A)
    assert first.message is not None and first.result.ok, first
    mark = box.mark()
    result = scratch.login(KEY, "alice", rhost=A)
    trusted(result)
    assert box.since(mark) == [], "a trusted client was mailed a code"
    assert result.log_with("enforce.unenrolled: email"), result  # the rule says what it stands for
    other = mail_login(scratch, box, "alice", rhost=B)
    assert other.message is not None and other.result.ok, other  # another address: mailed and asked


# --- status and explain -----------------------------------------------------------------------


def test_status_and_explain_show_the_trust_of_real_logins(scratch, policy):
    policy(trust_seconds=LONG)
    alice = scratch.enroll("alice")
    step = grant(scratch, KEY, alice, rhost=A)
    grant(scratch, KEY, alice, rhost=B, used=step)
    record = trusted_in_record(scratch, "alice")
    assert set(record) == {A, B}

    doc = json.loads(scratch.cli("status", "alice", "--json").output)
    entries = doc["users"][0]["trusted"]
    iso = {a: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for a, t in record.items()}
    assert sorted(entries, key=lambda e: e["address"]) == sorted(
        ({"address": a, "until": u} for a, u in iso.items()), key=lambda e: e["address"]
    ), entries

    table = scratch.cli("status")
    assert table.rc == 0, table
    lines = table.output.splitlines()
    header, row = lines[0], next(line for line in lines if line.startswith("alice "))
    assert header.split()[-1] == "TRUSTED" and row.split()[-1] == "2", table
    for address, until in iso.items():
        assert f"alice: trusted client {address} until {until}" in table.output, table

    said = scratch.cli("explain", "alice", "--rhost", A)
    assert re.search(r"^decision: trusted: no code is asked", said.output, re.M), said
    assert re.search(r"^rule: trusted client: a code was accepted from 192\.0\.2\.10 ", said.output, re.M), said
    assert f"trust: {A} is trusted until {iso[A]}" in said.output, said
    trusted(scratch.login(KEY, "alice", rhost=A))  # as explain said

    for rhost, note in (
        ("203.0.113.77", "trust: 203.0.113.77 is not trusted"),
        ("client.example.com", "the client is not an IP address: never trusted"),
        ("fe80::1%eth0", "trust: a link-local or zoned address is never trusted"),
        (None, "no client address: never trusted"),
    ):
        said = scratch.cli("explain", "alice", *(["--rhost", rhost] if rhost else []))
        assert re.search(r"^decision: totp: ", said.output, re.M) and note in said.output, said
        asked(scratch.login(KEY, "alice", rhost=rhost))  # as explain said
