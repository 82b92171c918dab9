"""Every account name the system's user database returns works (docs/store.md, "Layout").

Directory-joined hosts hand out names that are no plain file names: winbind's
``CORP\\walter``, SSSD's ``wendy@corp.example``, non-ASCII ``josé``, names with
a space, and long ones. Each is looked up through nss_wrapper, enrolled, asked,
locked, exempted, listed and disabled through the real pam_python module and
the real commands, exactly like ``alice``.
"""

from __future__ import annotations

import json
import re

import pytest
from pam_harness import KEY, MSG_BAD, MSG_LOCKED, PW, STACKS, oath
from test_pam_email import email_policy, mail_login, smtp, smtp_server  # noqa: F401 (fixtures)

from pam_twofa.store.files import encode_name

NAMES = ["CORP\\walter", "wendy@corp.example", "jos\u00e9", "two words", "\u00fc" * 100]
IDS = ["winbind", "sssd-fqdn", "non-ascii", "space", "200-bytes"]


def enroll_with_recovery(scratch, user):
    enrolled = scratch.enroll(user)
    path = scratch.record_path(user)
    assert path.name == encode_name(user) + ".rec"
    return enrolled


def recovery_codes(scratch, user) -> list[str]:
    """New recovery codes, printed by ``twofa-enroll --user NAME --recovery-codes`` (root)."""
    result = scratch.env.run(
        [scratch.env.enroll, "--user", user, "--recovery-codes", "--policy", scratch.policy_path],
        scratch.env.nss_env(),
    )
    assert result.rc == 0, result
    codes = re.findall(r"\b[0-9a-z]{5}-[0-9a-z]{5}\b", result.output)
    assert len(codes) >= 2, result
    scratch.sensitive.update(codes)
    return codes


def status_row(scratch, user):
    result = scratch.cli("status", "--json", user)
    assert result.rc == 0, result
    rows = json.loads(result.output)["users"]
    assert [row["user"] for row in rows] == [user]
    return rows[0]


@pytest.mark.parametrize("user", NAMES, ids=IDS)
@pytest.mark.parametrize("stack", STACKS)
def test_enroll_log_in_replay_and_recovery(scratch, user, stack):
    enrolled = enroll_with_recovery(scratch, user)
    code = enrolled.code()
    first = scratch.login(stack, user, code)
    assert first.ok and first.prompted, first
    lines = first.log_with("result=success")
    assert len(lines) == 1, first
    # The user field of the syslog line is the name with nothing a log parser could trip on.
    field = lines[0].split(" user=", 1)[1].split(" rhost=", 1)[0]
    assert field.isprintable() and " " not in field and len(field) <= 128, field
    replay = scratch.login(stack, user, code)
    assert replay.denied and "already used" in replay.output, replay
    codes = recovery_codes(scratch, user)
    by_recovery = scratch.login(stack, user, codes[0])
    assert by_recovery.ok, by_recovery
    assert status_row(scratch, user)["recovery_codes_left"] == len(codes) - 1


@pytest.mark.parametrize("user", NAMES, ids=IDS)
def test_lockout_status_unlock_explain_and_disable(scratch, user):
    enrolled = enroll_with_recovery(scratch, user)  # policy: 3 failures lock
    for salt in range(3):
        scratch.login(KEY, user, enrolled.wrong_code(salt))
    locked = scratch.login(KEY, user, enrolled.code())
    assert locked.denied and MSG_LOCKED in locked.output, locked
    row = status_row(scratch, user)
    assert row["locked"] and row["enrolled"] and row["account"], row
    table = scratch.cli("status")
    assert table.rc == 0 and any(line.startswith(user + " ") for line in table.output.splitlines()), table
    assert scratch.cli("unlock", user).rc == 0
    assert not status_row(scratch, user)["locked"]
    explain = scratch.cli("explain", "--rhost", "192.0.2.1", user)
    assert explain.rc == 0 and f"user {user}," in explain.output and "enrolled" in explain.output, explain
    disable = scratch.cli("disable", "--yes", user)
    assert disable.rc == 0, disable
    assert not scratch.record_path(user).exists()
    after = scratch.login(KEY, user, enrolled.code())
    assert after.ok and not after.prompted, after  # mode off, not enrolled: not asked


@pytest.mark.parametrize("user", NAMES, ids=IDS)
def test_exempt_user_with_any_name(scratch, user):
    scratch.write_policy(mode="all", unenrolled="deny", exempt_users=[user])
    result = scratch.login(PW, user)
    assert result.ok and not result.prompted, result
    assert result.log_with("result=exempt"), result
    row = status_row(scratch, user)
    assert row["exempt"] and not row["enrolled"], row


@pytest.mark.parametrize("user", ["CORP\\walter", "jos\u00e9", "two words"], ids=["winbind", "non-ascii", "space"])
def test_emailed_code_for_any_name(scratch, smtp, user):  # noqa: F811 (fixture)
    port, box = smtp
    email_policy(scratch, port, mode="all", address="{user}@example.com")
    address = "person@example.com"
    assert scratch.cli("email", user, address).rc == 0
    attempt = mail_login(scratch, box, user)
    assert attempt.result.ok, attempt
    assert attempt.message["To"] == address
    assert user in attempt.message.get_content()  # the mail names the account as it is


def test_names_that_differ_only_in_case_are_separate_accounts_here(scratch):
    """nss_wrapper is case-sensitive: ``Jos\u00e9`` is no account, and its login is refused like any unknown user."""
    scratch.enroll("jos\u00e9")
    result = scratch.login(KEY, "JOS\u00c9", oath(scratch.enrolled["jos\u00e9"].secret, 0))
    assert result.denied and MSG_BAD in result.output, result
    assert result.log_with("result=unknown user"), result
