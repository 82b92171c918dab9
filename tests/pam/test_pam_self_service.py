"""Self-service through the real PAM stack (issue 25): enrollment at the first login
(``enforce.unenrolled: enroll``), new-address alerts and clock-drift lines.

pamtester runs under pam_wrapper with stdout unbuffered, driven as a dialog: the
test reads the emailed code from a real SMTP server (aiosmtpd), the key from the
text the module sent with the app's code prompt, computes the code with
``oathtool`` and types it, then the recovery codes are shown before the login
goes on.
"""

from __future__ import annotations

import re
import time

import pytest
import test_pam_email
from pam_harness import KEY, PW, current_step, oath, settle, wait_for
from test_pam_email import code_of, email_policy, rewrite_record

pytestmark = pytest.mark.pam
smtp_server = test_pam_email.smtp_server  # fixtures: a real SMTP server on 127.0.0.1
smtp = test_pam_email.smtp

CLIENT = "192.0.2.10"
APP_PROMPT = re.compile(r"Code from the app \(6 digits\): ")
KEY_LINE = re.compile(r"time-based\):\n    ((?:[A-Z2-7]{4} ?)+)\n")
SAVED_PROMPT = re.compile(r"Press Enter when you have saved them: ")
RECOVERY = re.compile(r"\b[a-z2-9]{5}-[a-z2-9]{5}\b")


def policy_with(scratch, port, extra: str, **settings) -> None:
    text = email_policy(scratch, port, **settings)
    scratch.write_policy_text(text + extra)
    check = scratch.cli("check")
    assert check.rc == 0, check


def enroll_steps(scratch, box, wrong_app_codes=0):
    """The answers of an enrollment at login: the mailed code, the app's code(s), Enter."""
    mark = box.mark()
    shown = {}

    def mailed(proc, output):
        message = box.wait_new(mark, proc, 15)
        if message is None:
            return None
        code = code_of(message, 8)
        scratch.sensitive.add(code)
        return code

    def app(proc, output, attempt):
        if wait_for(proc, output, APP_PROMPT) is None:
            return None
        found = KEY_LINE.search(output())
        assert found, output()
        secret = found.group(1).replace(" ", "")
        shown["secret"] = secret
        scratch.sensitive.update({secret, secret.lower()})
        if attempt < wrong_app_codes:
            # wait for this attempt's prompt to be the latest before typing
            while len(APP_PROMPT.findall(output())) <= attempt and proc.poll() is None:
                time.sleep(0.02)
            return "000000"
        while len(APP_PROMPT.findall(output())) <= attempt and proc.poll() is None:
            time.sleep(0.02)
        code = oath(secret, current_step())
        shown["step"] = current_step()
        return code

    def saved(proc, output):
        if wait_for(proc, output, SAVED_PROMPT) is None:
            return None
        codes = RECOVERY.findall(output().split("Recovery codes", 1)[-1])
        shown["recovery"] = codes
        scratch.sensitive.update(codes)
        return ""

    def app_try(attempt: int):
        return lambda proc, output: app(proc, output, attempt)

    steps = [mailed, *(app_try(attempt) for attempt in range(wrong_app_codes + 1)), saved]
    return steps, shown


@pytest.mark.parametrize("stack", [KEY, PW])
def test_enrollment_at_login_then_a_login_with_a_recovery_code(scratch, smtp, stack):
    port, box = smtp
    policy_with(scratch, port, "", unenrolled="enroll")
    settle(8)  # the app's code must stay valid while it is typed
    steps, shown = enroll_steps(scratch, box)
    if stack == PW:
        steps.insert(0, lambda proc, output: scratch.passwords["bob"])
    result = scratch.pamtester_dialog(stack, "bob", steps, rhost=CLIENT)
    assert result.ok, result
    assert "Set up two-factor authentication for bob" in result.output
    assert "\x1b" not in result.output  # plain text: OpenSSH shows a prompt's escapes as text
    assert result.log_with("result=enrolled at login"), result
    assert "key " in scratch.record_path("bob").read_text() and len(shown["recovery"]) == 10
    # the notice of the change, from the detached sender
    deadline = time.monotonic() + 10
    while not any("enrolled at login" in m.get_content() for m in box.since(0)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any("enrolled at login" in m.get_content() for m in box.since(0))
    # The secret is live: a recovery code shown logs in; the app's code of the next step too.
    again = scratch.login(KEY, "bob", code=shown["recovery"][0], rhost=CLIENT)
    assert again.ok, again


def test_three_wrong_app_codes_enroll_nothing(scratch, smtp):
    port, box = smtp
    policy_with(scratch, port, "", unenrolled="enroll")
    steps, _shown = enroll_steps(scratch, box, wrong_app_codes=3)
    result = scratch.pamtester_dialog(KEY, "bob", steps[:4], rhost=CLIENT)
    assert result.denied, result
    assert "nothing was set up" in result.output
    assert result.log_with("result=enrollment at login abandoned"), result
    text = scratch.record_path("bob").read_text()
    assert "\nkey \n" in text  # not enrolled


def test_alert_mail_for_a_new_address_only(scratch, smtp):
    port, box = smtp
    policy_with(scratch, port, "notify:\n  new_address: true\n  remember: 5\n", mode="off")
    enrolled = scratch.enroll("alice")
    settle(5)
    first = current_step()  # this step and the next are both inside the window now

    def login_from(rhost, step):
        while current_step() < step - 1:  # the window (1) reaches step from step - 1 on
            time.sleep(0.2)
        result = scratch.login(KEY, "alice", code=oath(enrolled.secret, step), rhost=rhost)
        assert result.ok, result
        return result

    mark = box.mark()
    login_from("192.0.2.10", first)  # no history: remembered, no mail
    login_from("192.0.2.10", first + 1)  # known
    assert box.wait_new(mark, None, 2) is None
    result = login_from("198.51.100.7", first + 2)  # new
    message = box.wait_new(mark, None, 15)
    assert message is not None and "198.51.100.7" in message.get_content(), result
    assert message["To"] == "alice@example.com" and "New login" in message["Subject"]
    assert result.log_with("result=new address alert mailed")


def test_a_code_from_three_steps_ago_is_refused_and_the_drift_is_logged(scratch):
    enrolled = scratch.enroll("alice")
    # Enrolled a while ago: the steps before the enrollment's were never used (an old used code is no drift).
    rewrite_record(scratch, "alice", last_step=str(current_step() - 100))
    settle(3)
    result = scratch.login(KEY, "alice", code=oath(enrolled.secret, current_step() - 3), rhost=CLIENT)
    assert result.denied, result
    assert "Wrong verification code." in result.output and "clock" not in result.output.lower()
    drift = result.log_with("result=clock drift", "90 s behind", "automatic time")
    assert len(drift) == 1, result
