"""New-address alert mails (``notify.new_address``) and clock-drift lines, end to end on Debian 12
and 13 (issue 25): real sshd, paramiko logins from two loopback client addresses, a real SMTP server.
"""

from __future__ import annotations

import time

import pytest
from e2e_harness import LOOPBACK, email_settings, ssh_login, totp_at, wait_for_fresh_step

pytestmark = pytest.mark.e2e

SECRET = "JBSWY3DPEHPK3PXPNVSXG5DFONSGKZLU"
OTHER = "127.0.0.2"  # a second client address on the loopback


@pytest.fixture
def alert_policy(scenario, password_host, smtp_server):
    """The scenario's policy with new-address alerts mailed to the test's SMTP server; restored after."""
    original = password_host.run(["cat", "/etc/pam-twofa/policy.yaml"]).stdout
    password_host.write_policy(
        original + "notify:\n  new_address: true\n  remember: 5\nemail:\n" + email_settings(smtp_server)
    )
    check = password_host.run(["twofa-admin", "check"])
    assert "OK" in check.stdout, check.stdout
    smtp_server.clear()
    yield smtp_server
    password_host.write_policy(original)


def login_at(host, user, password, step, source=None):
    """A login with the code of ``step`` (relative to the enrollment's), waiting until it is valid."""
    while time.time() // 30 < step - 1:
        time.sleep(0.2)
    login = ssh_login(host.port, user, password=password, code=totp_at(SECRET, 0, step * 30 + 1), source=source)
    assert login.ok, login
    return login


def test_a_mail_for_a_new_address_and_none_for_a_known_one(password_host, alert_policy, make_user, enroll):
    smtp = alert_policy
    user, password = make_user(password_host)
    enroll(password_host, user, SECRET)  # used the previous step's code
    first = int(time.time() // 30)
    login_at(password_host, user, password, first)  # 127.0.0.1: no history yet, remembered, no mail
    login_at(password_host, user, password, first + 1)  # known
    time.sleep(2)

    def alerts():  # twofa-enroll's own notice of the enrollment goes to the same server
        return [m for m in smtp.messages if m["Subject"].startswith("New login to ") and user in m["Subject"]]

    assert alerts() == []
    login_at(password_host, user, password, first + 2, source=OTHER)  # new
    deadline = time.monotonic() + 20
    while not alerts() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    mails = alerts()
    assert len(mails) == 1, [m.get_content() for m in smtp.messages]
    body = mails[0].get_content()
    assert OTHER in body and "If it was not you" in body and mails[0]["To"] == f"{user}@example.com"
    assert f"user={user} rhost={OTHER} result=new address alert mailed" in password_host.syslog()
    assert LOOPBACK in password_host.run(["cat", f"/var/lib/pam-twofa/users/{user}.rec"]).stdout


def test_a_code_from_three_steps_ago_is_refused_and_syslog_says_the_clock_is_off(
    password_host, scenario, make_user, enroll
):
    user, password = make_user(password_host)
    enroll(password_host, user, SECRET)
    # Enrolled long ago: the steps before the enrollment's were never used (an old used code is no drift).
    password_host.run(["sed", "-i", "s/^last_step .*/last_step 0/", f"/var/lib/pam-twofa/users/{user}.rec"])
    wait_for_fresh_step(5)
    mark = len(password_host.syslog())
    login = ssh_login(password_host.port, user, password=password, code=totp_at(SECRET, -3))
    assert not login.ok
    assert "Wrong verification code." in login.text and "clock" not in login.text.lower(), login
    lines = [line for line in password_host.syslog()[mark:].splitlines() if f"user={user}" in line]
    drift = [line for line in lines if "result=clock drift" in line]
    assert len(drift) == 1 and "90 s behind" in drift[0] and "automatic time" in drift[0], lines
    assert any("result=bad code" in line for line in lines)
