"""Self-service end to end (issue 25, docs/enrollment.md): ``twofa-enroll --disable`` and ``--forget-trusted``.

As in test_enroll.py, an unprivileged user runs ``twofa-enroll`` in the container on a real terminal
(``docker exec -it -u USER``, pexpect), through sudo and the installer's rule to the ``enroll-self``
helper. The scenario's policy enforces 2FA for the group ``twofa`` only; this file adds trusted
clients (``trust.seconds``) and mail to the test's SMTP server, and puts the policy back after.

- ``--disable`` is refused for a member of ``twofa`` (the message names the rule), and accepted
  for anyone else with the password and a current code; the record is gone and the next login asks
  no code. The password alone never removes a second factor.
- ``--forget-trusted`` needs the password only: afterwards a login from the trusted address is
  asked for the code again.
"""

from __future__ import annotations

import json

import pyotp
import pytest
from e2e_harness import (
    CODE_PROMPT,
    PASSWORD_PORT,
    POLICY_PATH,
    current_code,
    email_settings,
    ssh_login,
    totp_at,
    wait_for_fresh_step,
    wrong_code,
)
from e2e_terminal import PASSWORD_PROMPT, enroll_terminal, record_fingerprint, recovery_codes

pytestmark = pytest.mark.e2e

CURRENT_PROMPT = "Current code from your app, or a recovery code: "
WRONG_CURRENT = "Wrong code. Each wrong code counts toward locking the account."
TRUST = 600  # seconds: longer than the test


def login(user: str, password: str, code=None):
    return ssh_login(PASSWORD_PORT, user, password=password, code=code)


def enroll_as_root(host, user: str, secret: str) -> list:
    """Root's scripted enrollment with a known secret (the previous step's code: the current one stays
    free); returns the printed recovery codes."""
    wait_for_fresh_step()
    done = host.run(["twofa-enroll", "--user", user, "--secret", secret, "--code", totp_at(secret, -1)])
    assert f"Two-factor authentication is now on for {user}." in done.stdout, done.stdout
    return recovery_codes(done.stdout)


def enrolled(host, user: str) -> bool:
    [row] = json.loads(host.run(["twofa-admin", "status", user, "--json"]).stdout)["users"]
    return row["enrolled"]


def run_as_user(host, user: str, password: str, *args: str, answers=()) -> tuple[int | None, str]:
    """``twofa-enroll ARGS`` on a real terminal as ``user``: the password, then each (prompt, answer)."""
    term = enroll_terminal(host, user, *args)
    try:
        term.expect(PASSWORD_PROMPT.format(user=user))
        term.send_line(password)
        for prompt, answer in answers:
            term.expect(prompt)
            term.send_line(answer() if callable(answer) else answer)
        status = term.wait_exit()
    finally:
        term.close()
    return status, term.transcript


@pytest.fixture
def self_service(scenario, password_host, smtp_server):
    """The scenario's policy on the password host, with trusted clients and mail; restored after.

    Yields the SMTP server, cleared."""
    original = password_host.run(["cat", POLICY_PATH]).stdout
    assert "\ntrust:" not in original and "\nemail:" not in original
    password_host.write_policy(original + f"trust:\n  seconds: {TRUST}\nemail:\n" + email_settings(smtp_server))
    try:
        password_host.run(["twofa-admin", "check"])
        smtp_server.clear()
        yield smtp_server
    finally:
        password_host.write_policy(original)


def enroll_quietly(host, smtp, user: str, secret: str) -> list:
    """Root enrolls ``user``; the mail that tells them is read and cleared."""
    codes = enroll_as_root(host, user, secret)
    smtp.wait_for(1)
    smtp.clear()
    return codes


def test_disable_is_refused_where_the_policy_requires_2fa(password_host, make_user, self_service):
    host, smtp = password_host, self_service
    user, password = make_user(host, groups="twofa")
    secret = pyotp.random_base32(32)
    enroll_quietly(host, smtp, user, secret)
    before = record_fingerprint(host, user)
    mark = host.syslog_mark()

    status, screen = run_as_user(host, user, password, "--disable")
    assert status == 1, screen
    assert f"Turning off two-factor authentication for {user} on " in screen
    assert (
        f"the policy requires 2FA for {user} (enforced: member of group twofa (supplementary) matched"
        " enforce.groups), so it cannot be turned off; nothing was changed." in screen
    ), screen
    assert f"An administrator can turn it off: twofa-admin disable {user}" in screen
    assert CURRENT_PROMPT not in screen, "refused before any code is asked"
    assert record_fingerprint(host, user) == before
    assert enrolled(host, user)
    log = host.syslog()[mark:]
    assert f"twofa-enroll: user={user} result=refused: turning 2FA off, the policy requires it (enforced:" in log, log
    assert smtp.messages == [], "nothing changed, nothing to tell"

    # Nor another account's, nor through root's options.
    done = host.run(["twofa-enroll", "--disable", "--user", "alice"], user=user, check=False, input="")
    assert done.returncode == 1 and "--user: only root can use this" in done.stderr, done
    # Root is sent to its own tool.
    done = host.run(["twofa-enroll", "--disable", "--user", user], check=False)
    assert done.returncode == 1 and f"root turns it off with: twofa-admin disable {user}" in done.stderr, done
    assert record_fingerprint(host, user) == before

    still = login(user, password, lambda: current_code(secret))
    assert still.ok and still.asked_code, still


def test_disable_with_the_password_and_a_current_code_where_not_required(password_host, make_user, self_service):
    host, smtp = password_host, self_service
    user, password = make_user(host)  # not in twofa: not enforced
    secret = pyotp.random_base32(32)
    enroll_quietly(host, smtp, user, secret)
    mark = host.syslog_mark()

    status, screen = run_as_user(
        host,
        user,
        password,
        "--disable",
        answers=[(CURRENT_PROMPT, wrong_code(secret)), (CURRENT_PROMPT, lambda: current_code(secret))],
    )
    assert status == 0, screen
    assert screen.count(WRONG_CURRENT) == 1, screen  # the wrong code was told, and a new one asked
    assert "To turn 2FA off, type a code from the authenticator app you use now" in screen
    assert f"Two-factor authentication is now off for {user}" in screen
    assert "To turn it on again, run: twofa-enroll" in screen
    assert record_fingerprint(host, user) is None, "no admin-recorded address: the record is removed"
    assert not enrolled(host, user)
    log = host.syslog()[mark:]
    assert f"twofa-enroll: user={user} result=refused: bad code" in log, log
    assert f"twofa-enroll: user={user} result=2FA turned off by the user (from " in log, log
    [notice] = smtp.wait_for(1)
    assert notice["To"] == f"{user}@example.com" and notice.envelope_to == [f"{user}@example.com"]
    body = notice.get_content()
    assert "2FA turned off by the user" in body and secret not in body

    # The next login asks no code; the same command then has nothing to turn off.
    after = login(user, password)
    assert after.ok and not after.asked_code and after.output.strip() == user, after
    status, screen = run_as_user(host, user, password, "--disable")
    assert status == 1 and f"2FA is not on for {user}: nothing to turn off" in screen, screen


def test_forget_trusted_needs_only_the_password(password_host, make_user, self_service):
    host, smtp = password_host, self_service
    user, password = make_user(host)
    secret = pyotp.random_base32(32)
    codes = enroll_quietly(host, smtp, user, secret)

    first = login(user, password, lambda: current_code(secret))
    assert first.ok and first.asked_code, first
    trusted = login(user, password)
    assert trusted.ok and not trusted.asked_code, "127.0.0.1 is trusted for trust.seconds"
    assert f"{user}: trusted client 127.0.0.1 until " in host.run(["twofa-admin", "status", user]).stdout
    mark = host.syslog_mark()

    status, screen = run_as_user(host, user, password, "--forget-trusted")
    assert status == 0, screen
    assert f"Forgetting the trusted clients of two-factor authentication for {user} on " in screen
    assert "Forgot 1 trusted client address(es): the next login from each asks for a code." in screen
    assert CURRENT_PROMPT not in screen, "the password only: it takes access away"
    assert f"twofa-enroll: user={user} result=forgot 1 trusted client address(es) (from " in host.syslog()[mark:]
    [notice] = smtp.wait_for(1)
    assert notice["To"] == f"{user}@example.com" and "forgot 1 trusted client address(es)" in notice.get_content()
    smtp.clear()

    asked = login(user, password)  # no code given: asked, and refused
    assert not asked.ok and CODE_PROMPT in asked.prompts, asked
    assert enrolled(host, user), "2FA itself is untouched"

    status, screen = run_as_user(host, user, password, "--forget-trusted")
    assert status == 0 and "No trusted clients; nothing changed." in screen, screen
    assert smtp.messages == []

    # Root forgets them for a user, without a password.
    again = login(user, password, codes[0])
    assert again.ok and again.asked_code, again
    done = host.run(["twofa-enroll", "--forget-trusted", "--user", user])
    assert "Forgot 1 trusted client address(es)" in done.stdout, done
    asked = login(user, password)
    assert not asked.ok and CODE_PROMPT in asked.prompts, asked
