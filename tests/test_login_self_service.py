"""Self-service at login (issue 25): enrollment at the first login (``enforce.unenrolled: enroll``),
new-address alerts (``notify.new_address``) and clock-drift lines, through ``login.Login`` with a
scripted conversation, a scratch policy, a real file store and a real SMTP server (aiosmtpd)."""

import base64
import re
import time

import pytest
import test_login
from support.conversation import Conv
from support.mail import plain_server
from test_login import KEY, T, enroll, run

from pam_twofa.core import provisioning, totp
from pam_twofa.core.record import Record
from pam_twofa.login import flow as login
from pam_twofa.login.flow import FAIL, PASS

pytestmark = pytest.mark.unit
fake_accounts = test_login.fake_accounts  # the same users and groups as test_login's (an autouse fixture)
store = test_login.store

CODE_IN_MAIL = re.compile(r"Your one-time code is: (\d+)")
KEY_LINE = re.compile(r"^    ((?:[A-Z2-7]{4} ?)+)$", re.M)


@pytest.fixture
def smtp():
    with plain_server() as served:
        yield served


def enroll_policy(make_policy, port, extra=""):
    return make_policy(
        "enforce:\n  mode: all\n  unenrolled: enroll\n"
        f"email:\n  address: '{{user}}@example.com'\n  smtp: {{host: 127.0.0.1, port: {port}, timeout: 5}}\n" + extra
    )


class Dialog(Conv):
    """A conversation whose answers are functions of what was shown so far (the emailed code, the key)."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    def prompt(self, text, info=None, echo=False):
        super().prompt(text, info, echo)
        return self.answer(self, text)


def mailed_code(delivered, count=1):
    deadline = time.monotonic() + 10
    while len(delivered) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return CODE_IN_MAIL.findall(delivered[count - 1])[0]


def shown_key(conv) -> bytes:
    text = KEY_LINE.findall("\n".join(conv.infos))[0].replace(" ", "")
    return base64.b32decode(text + "=" * (-len(text) % 8))


def login_with(policy_path, user, answer, rhost="192.0.2.10", now=None):
    conv = Dialog(answer)
    clock = (lambda: now) if now is not None else time.time
    flow = login.Login(conv, user, rhost, "sshd", login.Options(["policy=" + str(policy_path)]), clock=clock)
    return flow.run(), conv


def enrolling(delivered, app_codes=None, saved=""):
    """Answers: the emailed code, then the app's codes (default: one right code), then Enter."""

    def answer(conv, text):
        if text.startswith("Code sent to"):
            return mailed_code(delivered)
        if text.startswith("Code from the app"):
            tries = sum(1 for kind, t in conv.transcript if t.startswith("Code from the app"))
            if app_codes is not None:
                return app_codes[tries - 1] if tries <= len(app_codes) else None
            return totp.totp(shown_key(conv), time.time())
        if text == login.PROMPT_SAVED:
            return saved
        return None

    return answer


# --- enrollment at login ---------------------------------------------------------------


def test_enrollment_at_login_mail_first_then_qr_then_code_then_recovery_codes(make_policy, store, smtp, logs):
    port, delivered = smtp
    path = enroll_policy(make_policy, port)
    result, conv = login_with(path, "bob", enrolling(delivered))
    assert result == PASS, conv.transcript
    kinds = [(kind, text.split(" (")[0].split(":")[0]) for kind, text in conv.transcript]
    # The mailbox first (its hint says the app comes next), then the setup with the QR code, then the codes.
    assert kinds[0] == ("info", login.MSG_SETUP_FIRST.split(":")[0])
    assert kinds[1][0] == "prompt" and kinds[1][1].startswith("Code sent to")
    setup = conv.infos[1]
    assert setup.startswith("Set up two-factor authentication for bob on ")
    assert provisioning.SCAN in setup and provisioning.CANNOT_SCAN in setup and "otpauth://totp/" in setup
    assert "\x1b" not in setup  # no escape sequence: OpenSSH would print it as text
    assert ("echo prompt", "Code from the app (6 digits): ") in conv.transcript
    record = store.load("bob")
    assert record.enrolled and record.key == shown_key(conv)
    assert record.last_step == totp.time_step(time.time())  # the code typed is used up
    assert len(record.recovery_hashes) == 10 and record.email_code_hash == b""
    codes = re.findall(r"\b[a-z2-9]{5}-[a-z2-9]{5}\b", conv.infos[-1])
    assert len(codes) == 10 and conv.transcript[-1] == ("echo prompt", login.PROMPT_SAVED)
    assert any("result=enrolled at login" in line for line in logs)
    assert not any(shown_key(conv).hex() in line or codes[0] in line for line in logs)
    # The notice mail comes from a detached process: wait for it.
    deadline = time.monotonic() + 10
    while len(delivered) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "enrolled at login" in delivered[1] and codes[0] not in delivered[1]
    # A recovery code shown works at the next login, as does the app.
    again = run(path, "bob", [codes[0]], now=time.time())[0]
    assert again == PASS


def test_the_qr_code_in_the_prompt_is_the_uri_shown(make_policy, store, smtp):
    from pam_twofa.system import qr

    port, delivered = smtp
    result, conv = login_with(enroll_policy(make_policy, port), "bob", enrolling(delivered))
    assert result == PASS
    setup = conv.infos[1]
    found = re.search(r"otpauth://\S+", setup)
    assert found
    uri = found.group(0)
    assert f"secret={provisioning.base32(store.load('bob').key)}" in uri
    assert qr.render(uri, "plain").rstrip("\n") in setup


def test_three_wrong_app_codes_store_nothing_and_the_next_login_starts_over(make_policy, store, smtp, logs):
    port, delivered = smtp
    path = enroll_policy(make_policy, port)
    result, conv = login_with(path, "bob", enrolling(delivered, app_codes=["000000", "12", "999999"]))
    assert result == FAIL
    assert conv.errors[-1] == login.MSG_SETUP_GAVE_UP and conv.errors.count(login.MSG_SETUP_WRONG) == 2
    # The QR code is sent once, with the first prompt.
    assert sum(1 for text in conv.infos if provisioning.SCAN in text) == 1
    record = store.load("bob")
    assert not record.enrolled and record.email_code_hash == b""  # the emailed code is used up
    assert any("result=enrollment at login abandoned" in line for line in logs)
    # The next login mails a new code and shows a new secret.
    result2, conv2 = login_with(
        path, "bob", lambda c, t: mailed_code(delivered, 2) if t.startswith("Code sent") else None
    )
    assert result2 == FAIL and len(delivered) == 2 and store.load("bob").enrolled is False


def test_no_answer_at_the_app_prompt_stores_nothing(make_policy, store, smtp):
    port, delivered = smtp
    result, _conv = login_with(enroll_policy(make_policy, port), "bob", enrolling(delivered, app_codes=[]))
    assert result == FAIL and not store.load("bob").enrolled


def test_a_wrong_emailed_code_never_shows_a_secret(make_policy, store, smtp):
    port, delivered = smtp
    answers = lambda conv, text: "00000000" if text.startswith("Code sent") else "123456"  # noqa: E731
    result, conv = login_with(enroll_policy(make_policy, port), "bob", answers)
    assert result == FAIL
    assert not any(provisioning.SCAN in text or "otpauth" in text for text in conv.infos)
    assert len(store.load("bob").failures) == 1


def test_an_enrollment_made_meanwhile_wins(make_policy, store, smtp, logs):
    port, delivered = smtp
    other = Record("bob", key=b"\x07" * 20, enrolled_at=1)

    def answer(conv, text):
        if text.startswith("Code from the app"):
            store.update("bob", lambda old: other)  # twofa-enroll, or another login, finished first
        return enrolling(delivered)(conv, text)

    result, conv = login_with(enroll_policy(make_policy, port), "bob", answer)
    assert result == FAIL and conv.errors[-1] == login.MSG_SETUP_CHANGED
    assert store.load("bob").key == other.key
    assert any("enrolled meanwhile" in line for line in logs)


def test_an_enrolled_user_is_asked_for_the_app_code_not_enrolled_again(make_policy, store, smtp):
    port, _delivered = smtp
    enroll(store, "bob")
    result, conv = run(enroll_policy(make_policy, port), "bob", [totp.totp(KEY, T)])
    assert result == PASS and conv.prompts == ["Verification code: "]


def test_trust_never_skips_the_enrollment(make_policy, store, smtp):
    port, delivered = smtp
    path = enroll_policy(make_policy, port, "trust:\n  seconds: 3600\n")
    store.update("bob", lambda old: Record("bob", trusted={"192.0.2.10": int(time.time()) + 3000}))
    result, conv = login_with(path, "bob", enrolling(delivered))
    assert result == PASS and store.load("bob").enrolled  # asked and enrolled, not waved through


# --- new-address alerts ------------------------------------------------------------------


def alert_policy(make_policy, port, remember=2):
    return make_policy(
        f"notify:\n  new_address: true\n  remember: {remember}\n"
        f"email:\n  address: '{{user}}@example.com'\n  smtp: {{host: 127.0.0.1, port: {port}, timeout: 5}}\n"
    )


def wait_mails(delivered, count, seconds=5.0):
    deadline = time.monotonic() + seconds
    while len(delivered) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(delivered)


def test_alert_for_a_new_address_and_not_for_a_known_one(make_policy, store, smtp, logs):
    port, delivered = smtp
    path = alert_policy(make_policy, port)
    enroll(store, "alice")
    now = time.time()

    def login_from(rhost, offset):
        at = now + 30 * offset
        return run(path, "alice", [totp.totp(KEY, at)], rhost=rhost, now=at)[0]

    assert login_from("192.0.2.10", 0) == PASS  # no history yet: remembered, no mail
    assert login_from("192.0.2.10", 1) == PASS  # known
    assert wait_mails(delivered, 1, 1.5) == 0
    assert login_from("198.51.100.7", 2) == PASS  # new
    assert wait_mails(delivered, 1) == 1
    mail = delivered[0]
    assert "198.51.100.7" in mail and "alice" in mail and "If it was not you" in mail
    assert "To: alice@example.com" in mail
    assert login_from("198.51.100.7", 3) == PASS  # known now
    assert login_from("2001:db8::1", 4) == PASS  # new: pushes 192.0.2.10 out (remember: 2)
    assert login_from("192.0.2.10", 5) == PASS  # forgotten, so new again
    assert wait_mails(delivered, 3) == 3 and wait_mails(delivered, 4, 1.5) == 3
    assert set(store.load("alice").seen) == {"2001:db8::1", "192.0.2.10"}
    assert sum("result=new address alert mailed" in line for line in logs) == 3


def test_no_alert_when_the_feature_is_off(make_policy, store, smtp):
    port, delivered = smtp
    path = make_policy(f"email:\n  smtp: {{host: 127.0.0.1, port: {port}}}\n")
    enroll(store, "alice", seen={"192.0.2.99": int(T)})
    assert run(path, "alice", [totp.totp(KEY, T)], rhost="198.51.100.7")[0] == PASS
    assert wait_mails(delivered, 1, 1.5) == 0
    assert store.load("alice").seen == {"192.0.2.99": int(T)}  # not even remembered


def test_an_alert_that_cannot_be_sent_never_blocks_the_login(make_policy, store, logs):
    import socket

    with socket.socket() as sock:  # a server that accepts and never answers: the send would hang
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        path = make_policy(
            "notify:\n  new_address: true\n"
            f"email:\n  smtp: {{host: 127.0.0.1, port: {sock.getsockname()[1]}, timeout: 20}}\n"
        )
        enroll(store, "alice", seen={"192.0.2.99": int(T)})
        started = time.monotonic()
        assert run(path, "alice", [totp.totp(KEY, T)], rhost="198.51.100.7")[0] == PASS
        assert time.monotonic() - started < 10  # not the 20 s of email.smtp.timeout


def test_a_failed_code_from_a_new_address_sends_nothing(make_policy, store, smtp):
    port, delivered = smtp
    enroll(store, "alice", seen={"192.0.2.99": int(T)})
    assert run(alert_policy(make_policy, port), "alice", ["000000"], rhost="198.51.100.7")[0] == FAIL
    assert wait_mails(delivered, 1, 1.5) == 0 and store.load("alice").seen == {"192.0.2.99": int(T)}


# --- clock drift ---------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [-3, 3, -10])
def test_a_code_from_a_clock_that_is_off_is_refused_and_logged_for_the_admin(make_policy, store, logs, steps):
    path = make_policy("")
    enroll(store, "alice")
    result, conv = run(path, "alice", [totp.totp(KEY, T + 30 * steps)])
    assert result == FAIL and conv.errors == [login.MSG_BAD]  # the client sees the usual message only
    drift = [line for line in logs if "result=clock drift" in line]
    way = "behind" if steps < 0 else "ahead"
    assert len(drift) == 1 and f"seems {abs(steps) * 30} s {way}" in drift[0], logs
    assert store.load("alice").last_step == -1 and len(store.load("alice").failures) == 1


@pytest.mark.parametrize("steps", [-11, 11])
def test_no_drift_line_beyond_ten_steps(make_policy, store, logs, steps):
    enroll(store, "alice")
    assert run(make_policy(""), "alice", [totp.totp(KEY, T + 30 * steps)])[0] == FAIL
    assert not any("clock drift" in line for line in logs)


def test_an_old_used_code_is_no_drift(make_policy, store, logs):
    enroll(store, "alice", last_step=totp.time_step(T) - 1)
    assert run(make_policy(""), "alice", [totp.totp(KEY, T - 90)])[0] == FAIL
    assert not any("clock drift" in line for line in logs)
