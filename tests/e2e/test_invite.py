"""``twofa-admin invite`` in a real host (issue 25): who ``--unenrolled`` finds, and the mails it sends.

The test makes its own enforce group and users in the password host, so the
enforced users who have not enrolled are exactly the test's (the scenario's
users are in other groups): a supplementary and a primary member of the
group, and one whose address was recorded with ``twofa-admin email``; next
to them an enrolled member, an exempt member and a user outside the group,
who are never invited. Mails go to the session's SMTP server (``smtp_server``).
"""

from __future__ import annotations

import os
import re

import pytest
from e2e_harness import ALICE_SECRET, POLICY_PATH, email_settings

pytestmark = pytest.mark.e2e

ENROLL_TEXT = "you will be asked to set it up: first a code mailed to you, then a QR code for your authenticator app"


@pytest.fixture
def invite_group(scenario, password_host):
    """A new group in the password host and the scenario's policy saved; both restored after."""
    original = password_host.run(["cat", POLICY_PATH]).stdout
    group = "inv" + os.urandom(3).hex()
    password_host.run(["groupadd", group])
    yield group
    password_host.write_policy(original)
    password_host.run(["twofa-admin", "check"])
    # Users whose primary group it is are removed after this (make_user): force the removal now.
    password_host.run(["groupdel", "-f", group], check=False)


def per_user(out: str) -> dict[str, str]:
    """{user: the rest of the line} of invite's per-user lines."""
    found = {}
    for line in out.splitlines():
        if line.startswith("dry run:") or line[:1].isdigit():
            continue
        user, _colon, rest = line.partition(": ")
        found[user] = rest
    return found


def test_invite_unenrolled_lists_then_mails_exactly_the_enforced_unenrolled_users(
    password_host, make_user, enroll, smtp_server, invite_group
):
    host, group = password_host, invite_group
    supplementary, _ = make_user(host, groups=group)
    primary, _ = make_user(host)
    host.run(["usermod", "-g", group, primary])
    recorded, _ = make_user(host, groups=group)
    enrolled, _ = make_user(host, groups=group)
    exempt, _ = make_user(host, groups=group)
    outsider, _ = make_user(host)
    host.write_policy(
        "version: 1\n"
        f"enforce:\n  mode: groups\n  groups: [{group}]\n  unenrolled: enroll\n"
        f"exempt:\n  users: [bob, {exempt}]\n"
        "email:\n" + email_settings(smtp_server)
    )
    assert "OK" in host.run(["twofa-admin", "check"]).stdout
    enroll(host, enrolled, ALICE_SECRET)
    host.run(["twofa-admin", "email", recorded, f"{recorded}@corp.example"])
    hostname = host.run(["hostname"]).stdout.strip()
    smtp_server.clear()
    mark = host.syslog_mark()

    dry = host.run(["twofa-admin", "invite", "--unenrolled", "--dry-run"])
    assert dry.stderr == ""
    assert per_user(dry.stdout) == {
        supplementary: f"{supplementary}@example.com: would mail",
        primary: f"{primary}@example.com: would mail",
        recorded: f"{recorded}@corp.example: would mail",
    }, dry.stdout
    assert dry.stdout.splitlines()[-1] == "dry run: 3 would be mailed, 0 skipped (invited within a day)"
    # Named users outside the invitation say why, and make the exit code 1
    named = host.run(["twofa-admin", "invite", "--dry-run", enrolled, exempt, outsider, primary], check=False)
    assert named.returncode == 1, named
    lines = per_user(named.stdout)
    assert lines[enrolled].startswith("skipped: already enrolled")
    assert lines[exempt].startswith(f"skipped: not enforced (exempt: user {exempt} is listed in exempt.users")
    assert lines[outsider].startswith("skipped: not enforced (not asked")
    assert lines[primary] == f"{primary}@example.com: would mail"
    assert smtp_server.messages == []  # the dry runs sent nothing

    done = host.run(["twofa-admin", "invite", "--unenrolled"])
    assert done.stdout.splitlines()[-1] == "3 mailed, 0 skipped (invited within a day), 0 failed", done.stdout
    mails = smtp_server.wait_for(3)
    assert sorted(m.envelope_to[0] for m in mails) == sorted(
        [f"{supplementary}@example.com", f"{primary}@example.com", f"{recorded}@corp.example"]
    )
    for mail in mails:
        user = mail.envelope_to[0].split("@")[0]
        assert mail["Subject"] == f"Set up two-factor authentication for {user} on {hostname}"
        body = " ".join(mail.get_content().split())
        assert f"At your next SSH login to {hostname} {ENROLL_TEXT}" in body, body
    log = host.syslog()[mark:]
    for user in (supplementary, primary, recorded):
        assert f"twofa-admin: invite (mailed {user[0]}***@" in log and f"user={user} by=" in log, log
        assert f"{user}@" not in log  # the address is masked

    # Within the day: skipped, no mail
    again = host.run(["twofa-admin", "invite", "--unenrolled"])
    assert again.stdout.splitlines()[-1] == "0 mailed, 3 skipped (invited within a day), 0 failed", again.stdout
    assert sorted(per_user(again.stdout)) == sorted([supplementary, primary, recorded]), again.stdout
    assert all(
        re.search(r"skipped: invited \d+ min ago; --force to mail again$", r) for r in per_user(again.stdout).values()
    )
    forced = host.run(["twofa-admin", "invite", "--force", primary])
    assert per_user(forced.stdout) == {primary: f"{primary}@example.com: mailed"}
    assert len(smtp_server.wait_for(4)) == 4
