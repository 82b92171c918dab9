"""More end to end scenarios (issue 6): the emailed code over SSH, and enrolling inside an SSH session.

- An enforced user who has not enrolled, under ``enforce.unenrolled: email``,
  gets a one-time code by mail (a real SMTP server: ``smtp_server``, on
  127.0.0.1, which the host-networked containers reach) and logs in with it
  over SSH; the same code does not work twice.
- A user logs in with the OpenSSH client on a real terminal, runs
  ``twofa-enroll`` at their shell prompt, and then logs in with the new
  secret's codes (pyotp).
"""

from __future__ import annotations

import pytest
from e2e_harness import (
    CODE_PROMPT,
    MAILED_CODE,
    PASSWORD_PORT,
    current_code,
    email_settings,
    mail_prompt,
    ssh_login,
    totp_at,
    wait_for_fresh_step,
    wrong_code,
)
from e2e_terminal import (
    CODE_PROMPT as ENROLL_CODE_PROMPT,
)
from e2e_terminal import (
    PASSWORD_PROMPT,
    SHELL_PROMPT,
    WRONG_CODE,
    decode_qr,
    parse_screen,
    qr_matrix_utf8,
    recovery_codes,
    ssh_terminal,
)
from support.mail import Received

pytestmark = pytest.mark.e2e

ENROLL_HINT = "To use an authenticator app instead, run twofa-enroll once you are logged in."
MSG_BAD = "Wrong verification code."


# --------------------------------------------------------------------------
# 7. The emailed code


@pytest.fixture
def email_policy(scenario, password_host, smtp_server):
    """The scenario's policy with ``unenrolled: email`` and mail to the test's SMTP server; restored after."""
    original = password_host.run(["cat", "/etc/pam-twofa/policy.yaml"]).stdout
    assert "unenrolled: deny" in original and "\nemail:" not in original
    password_host.write_policy(
        original.replace("unenrolled: deny", "unenrolled: email")
        + "email:\n"
        + email_settings(smtp_server)
        + "  code_digits: 8\n"
        + "  code_ttl: 600\n"
    )
    password_host.run(["twofa-admin", "check"])
    smtp_server.clear()
    yield smtp_server
    password_host.write_policy(original)
    password_host.run(["twofa-admin", "check"])


def test_enforced_unenrolled_user_logs_in_with_the_emailed_code(password_host, email_policy, make_user):
    smtp = email_policy
    user, password = make_user(password_host, groups="twofa")  # enforced (enforce.groups), not enrolled
    hostname = password_host.run(["hostname"]).stdout.strip()
    mails: list[Received] = []

    def read_the_mail(prompt):
        if not mail_prompt(prompt):
            return None
        mails[:] = smtp.wait_for(1)
        found = MAILED_CODE.search(mails[0].get_content())
        return found.group(1) if found else "no-code-in-the-mail"

    login = ssh_login(PASSWORD_PORT, user, password=password, answer=read_the_mail)
    assert login.ok, login
    assert len(login.prompts) == 2 and login.prompts[0] == "Password: ", login.prompts
    assert mail_prompt(login.prompts[1]), login.prompts
    hint = login.prompts[1].rsplit("\n", 1)[0].replace("\n", " ")
    assert ENROLL_HINT in hint and "A one-time code was emailed to you." in hint, login.prompts
    assert CODE_PROMPT not in login.prompts
    assert login.output.strip() == user

    [mail] = mails
    found = MAILED_CODE.search(mail.get_content())
    assert found is not None, mail.get_content()
    code = found.group(1)
    assert len(code) == 8
    assert mail["To"] == f"{user}@example.com" and mail.envelope_to == [f"{user}@example.com"]
    assert mail["From"] == f"pam-twofa@{hostname}"
    assert hostname in mail["Subject"]
    body = mail.get_content()
    assert f"as {user}" in body and "from 127.0.0.1" in body and "If this was not you" in body

    # The same code again: refused (a new login mails a new code, and the used one is spent).
    smtp.clear()
    again = ssh_login(
        PASSWORD_PORT, user, password=password, answer=lambda prompt: code if mail_prompt(prompt) else None
    )
    assert not again.ok, again
    assert len(again.prompts) == 2 and mail_prompt(again.prompts[1]), again.prompts
    assert MSG_BAD in again.text, again.messages
    [second] = smtp.wait_for(1)
    second_code = MAILED_CODE.search(second.get_content())
    assert second_code is not None and second_code.group(1) != code


# --------------------------------------------------------------------------
# 8. Enrolling inside an SSH session, then logging in with the new secret


def test_enroll_inside_an_ssh_session_then_log_in_with_the_new_secret(password_host, make_user, tmp_path):
    user, password = make_user(password_host)  # not enforced, not enrolled: the password alone logs in
    term = ssh_terminal(PASSWORD_PORT, user, password)
    try:
        term.send_line("twofa-enroll")
        term.expect(PASSWORD_PROMPT.format(user=user))
        term.send_line(password)
        term.expect(ENROLL_CODE_PROMPT)
        shown = parse_screen(term.transcript)
        assert decode_qr(qr_matrix_utf8(shown.qr_lines), tmp_path / "qr.png") == shown.uri
        assert f":{user}@" in shown.uri

        term.send_line(wrong_code(shown.secret))
        term.expect(WRONG_CODE)
        term.expect(ENROLL_CODE_PROMPT)
        wait_for_fresh_step()
        term.send_line(totp_at(shown.secret, -1))
        term.expect(f"Two-factor authentication is now on for {user}.")
        term.expect(SHELL_PROMPT)
        term.send_line("echo enroll-exit=$?")
        term.expect("enroll-exit=0")
        term.expect(SHELL_PROMPT)
        term.send_line("exit")
        assert term.wait_exit() == 0
    finally:
        term.close()
    assert len(recovery_codes(term.transcript)) == 10

    wrong = ssh_login(PASSWORD_PORT, user, password=password, code=wrong_code(shown.secret))
    assert not wrong.ok and wrong.asked_code, wrong
    login = ssh_login(PASSWORD_PORT, user, password=password, code=lambda: current_code(shown.secret))
    assert login.ok, login
    assert login.prompts == ["Password: ", CODE_PROMPT]
    assert login.output.strip() == user
