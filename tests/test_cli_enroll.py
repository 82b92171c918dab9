"""twofa-enroll's enroll() and new_recovery_codes(): a real file store and policy, a scripted user.

The self-service path (a user through sudo) must never change an enrolled second factor on the
password alone: it asks for a current code, checked like a login (issue 12). Every change is told
to the user by syslog and mail. The terminal and sudo parts are tested end to end in
tests/e2e/test_enroll.py.
"""

from __future__ import annotations

import base64
import re
from email.message import EmailMessage
from types import SimpleNamespace

import pyotp
import pytest
from support.codes import code_not_in

from pam_twofa import policy
from pam_twofa.cli import UsageError
from pam_twofa.cli import enroll as cli
from pam_twofa.core.record import Record
from pam_twofa.core.recovery import new_codes
from pam_twofa.store.files import FileStore
from pam_twofa.system import mail
from pam_twofa.system.accounts import Account

NOW = 1_700_000_010.0
OLD_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
OLD_KEY = base64.b32decode(OLD_SECRET)
ALICE = Account("alice", 1001, 1001, {1001}, "/home/alice")
REAL_SEND = mail.send  # before the ``env`` fixture replaces it


def code_at(secret: str, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(int(NOW) + 30 * offset)


def wrong(secret: str = OLD_SECRET) -> str:
    return code_not_in({code_at(secret, k) for k in range(-2, 3)}, start=123456, stride=1111)


class User:
    """Answers prompts from a script: prompt substring -> list of answers (callables get the transcript)."""

    def __init__(self, answers: dict) -> None:
        self.answers = {key: list(value) for key, value in answers.items()}
        self.transcript: list[str] = []
        self.prompts: list[str] = []

    def out(self, text: str = "") -> None:
        self.transcript.append(text)

    def ask(self, prompt: str) -> str:
        self.prompts.append(prompt)
        for key, queue in self.answers.items():
            if key in prompt:
                if not queue:
                    raise AssertionError(f"no more answers for {prompt!r}")
                answer = queue.pop(0)
                return answer("\n".join(self.transcript)) if callable(answer) else answer
        raise AssertionError(f"unexpected prompt {prompt!r}")

    @property
    def text(self) -> str:
        return "\n".join(self.transcript)


def new_secret_code(transcript: str) -> str:
    """The current code of the new secret printed on the screen (groups of four)."""
    grouped = re.findall(r"^    ((?:[A-Z2-7]{4} ){7}[A-Z2-7]{4})$", transcript, re.M)[-1]
    return code_at(grouped.replace(" ", ""))


class FixedSession(cli.Session):
    def now(self) -> float:
        return NOW


@pytest.fixture
def env(make_policy, state_dir, monkeypatch, logs):
    """(policy, store, sent mails, log lines): mail.send captured, max_failures 3."""
    loaded = policy.load(make_policy("rate_limit:\n  max_failures: 3\n  per_seconds: 900\n"), use_cache=False)
    store = FileStore(state_dir)
    sent: list[EmailMessage] = []
    monkeypatch.setattr(mail, "send", lambda pol, message: sent.append(message))
    return SimpleNamespace(policy=loaded, store=store, sent=sent, logs=logs)


CODES: list[str] = []  # the plain recovery codes of the last enrolled_record()


def enrolled_record(**fields) -> Record:
    codes, salt, hashes = new_codes()
    CODES[:] = codes
    fields.setdefault("last_step", int(NOW) // 30 - 5)
    return Record(
        "alice", key=OLD_KEY, enrolled_at=int(NOW) - 86400, recovery_salt=salt, recovery_hashes=hashes, **fields
    )


def session(user: User, *argv, admin: bool = False) -> FixedSession:
    args = cli.parser().parse_args(list(argv))
    return FixedSession(args, ALICE, admin=admin, out=user.out, ask=user.ask, ask_secret=user.ask)


def run_enroll(env, user: User, *argv, admin: bool = False) -> int:
    return cli.enroll(session(user, *argv, admin=admin), env.policy, env.store)


def run_renew(env, user: User, admin: bool = False) -> int:
    return cli.new_recovery_codes(session(user, "--recovery-codes", admin=admin), env.policy, env.store)


# -- replacing an enrolled secret needs a current code ----------------------------------


def test_replacing_needs_the_current_code_and_wrong_ones_count_toward_the_lockout(env):
    old = enrolled_record()
    env.store.update("alice", lambda _r: old)
    user = User({"Replace": ["y"], "Current code": [wrong(), wrong(), wrong()]})
    with pytest.raises(UsageError, match="locked until .* twofa-admin unlock alice"):
        run_enroll(env, user)
    after = env.store.load("alice")
    assert after.key == OLD_KEY, "the secret must be unchanged"
    assert after.recovery_hashes == old.recovery_hashes
    assert len(after.failures) == 3 and after.locked_until == int(NOW) + 900
    assert "Scan this QR code" not in user.text, "no new secret before the current code"
    assert "twofa-admin disable alice" in user.text  # the way out for a lost phone
    assert env.sent == []


def test_wrong_current_codes_below_the_limit_refuse_and_are_saved(env, make_policy):
    env.policy = policy.load(make_policy("rate_limit:\n  max_failures: 5\n"), use_cache=False)
    env.store.update("alice", lambda _r: enrolled_record())
    user = User({"Replace": ["y"], "Current code": [wrong(), "12345x", "nonsense"]})
    with pytest.raises(UsageError, match="no valid current code after 3 tries; nothing was changed.*disable alice"):
        run_enroll(env, user)
    after = env.store.load("alice")
    assert after.key == OLD_KEY and len(after.failures) == 3 and not after.locked_until
    assert user.text.count("Wrong code.") == 2
    assert [line for line in env.logs if "result=refused: bad code" in line and "failure 3 of 5" in line]


def test_a_locked_account_cannot_replace_and_is_not_asked(env):
    env.store.update("alice", lambda _r: enrolled_record(locked_until=int(NOW) + 600))
    user = User({"Replace": ["y"]})
    with pytest.raises(UsageError, match=r"locked until \d{4}-\d\d-\d\d \d\d:\d\d \(UTC\).*twofa-admin unlock alice"):
        run_enroll(env, user)
    assert not [p for p in user.prompts if "Current code" in p]
    after = env.store.load("alice")
    assert after.key == OLD_KEY and after.locked_until == int(NOW) + 600


def test_a_used_code_cannot_prove_the_account(env):
    used_step = int(NOW) // 30
    env.store.update("alice", lambda _r: enrolled_record(last_step=used_step))
    user = User({"Replace": ["y"], "Current code": [code_at(OLD_SECRET)] * 3})
    with pytest.raises(UsageError, match="locked until"):  # replays are failures: the third locks (max 3)
        run_enroll(env, user)
    assert "already used" in user.text
    after = env.store.load("alice")
    assert after.key == OLD_KEY and len(after.failures) == 3


def test_the_current_code_replaces_the_secret_and_is_used_up(env):
    env.store.update("alice", lambda _r: enrolled_record(email="alice@example.org"))
    user = User(
        {"Replace": ["y"], "Current code": [wrong(), code_at(OLD_SECRET)], "Code from the app": [new_secret_code]}
    )
    assert run_enroll(env, user) == 0
    after = env.store.load("alice")
    assert after.key != OLD_KEY and after.enrolled
    assert after.failures == [] and after.email == "alice@example.org"
    # The old secret's code was consumed before the new secret was made: it cannot be reused.
    assert user.prompts.index(cli.CURRENT_PROMPT) < [i for i, p in enumerate(user.prompts) if "Code from" in p][0]
    assert [line for line in env.logs if "current code accepted: success" in line]
    [notice] = env.sent
    assert notice["To"] == "alice@example.org"


def test_a_recovery_code_proves_the_account_once(env):
    old = enrolled_record()
    env.store.update("alice", lambda _r: old)
    user = User({"Replace": ["y"], "Current code": [CODES[3]], "Code from the app": [new_secret_code]})
    assert run_enroll(env, user) == 0
    assert env.store.load("alice").key != OLD_KEY
    # the same recovery code is gone with the old set, and in between it was consumed (see the store test below)
    assert [line for line in env.logs if "current code accepted: success (recovery code)" in line]


def test_the_accepted_code_is_consumed_even_if_the_user_stops_later(env):
    old = enrolled_record()
    env.store.update("alice", lambda _r: old)

    def interrupt(_transcript):
        raise KeyboardInterrupt

    user = User({"Replace": ["y"], "Current code": [CODES[0]], "Code from the app": [interrupt]})
    with pytest.raises(KeyboardInterrupt):
        run_enroll(env, user)
    after = env.store.load("alice")
    assert after.key == OLD_KEY, "nothing new stored"
    assert len(after.recovery_hashes) == len(old.recovery_hashes) - 1, "the recovery code used to prove is used up"


def test_first_enrollment_needs_no_current_code_and_notifies(env):
    env.store.update("alice", lambda _r: Record("alice", email="alice@example.org"))  # address only
    user = User({"Code from the app": [new_secret_code]})
    assert run_enroll(env, user) == 0
    assert cli.CURRENT_PROMPT not in user.prompts
    assert env.store.load("alice").enrolled
    [notice] = env.sent
    assert notice["To"] == "alice@example.org" and "alice" in notice["Subject"]
    body = notice.get_content()
    assert "enrolled" in body and "twofa-admin disable alice" in body
    assert [line for line in env.logs if "user=alice result=enrolled (from " in line]


def test_admin_replaces_without_a_code_and_the_user_is_told(env):
    env.store.update("alice", lambda _r: enrolled_record(locked_until=int(NOW) + 600))
    secret = pyotp.random_base32(32)
    user = User({})
    assert run_enroll(env, user, "--secret", secret, "--code", code_at(secret), "--force", admin=True) == 0
    after = env.store.load("alice")
    assert base64.b32encode(after.key).decode().rstrip("=") == secret and not after.locked_until
    [notice] = env.sent
    assert notice["To"] == "alice@localhost"  # the policy's template: no recorded address
    assert "replacing the previous secret" in notice.get_content()
    assert [line for line in env.logs if "result=enrolled, replacing the previous secret (from " in line]


# -- renewing recovery codes needs a current code ------------------------------------


def test_renewing_recovery_codes_needs_a_current_code(env):
    old = enrolled_record()
    env.store.update("alice", lambda _r: old)
    user = User({"Current code": [wrong(), wrong(), wrong()]})
    with pytest.raises(UsageError, match="locked until"):
        run_renew(env, user)
    after = env.store.load("alice")
    assert after.recovery_hashes == old.recovery_hashes and after.recovery_salt == old.recovery_salt
    assert "Recovery codes:" not in user.text and env.sent == []


def test_renewing_with_the_current_code_makes_new_codes_and_notifies(env):
    old = enrolled_record()
    env.store.update("alice", lambda _r: old)
    user = User({"Current code": [code_at(OLD_SECRET)]})
    assert run_renew(env, user) == 0
    after = env.store.load("alice")
    assert after.recovery_salt != old.recovery_salt and after.last_step == int(NOW) // 30
    [notice] = env.sent
    assert "new recovery codes" in notice.get_content()
    shown = re.findall(r"\b[a-z2-9]{5}-[a-z2-9]{5}\b", user.text[user.text.index("Recovery codes:") :])
    assert len(shown) == 10 and not [c for c in shown if c in notice.get_content()]


def test_admin_renews_without_a_code(env):
    env.store.update("alice", lambda _r: enrolled_record())
    user = User({})
    assert run_renew(env, user, admin=True) == 0
    assert cli.CURRENT_PROMPT not in user.prompts and len(env.sent) == 1


# -- notifications ---------------------------------------------------------------------


def test_a_mail_failure_is_logged_and_does_not_undo_the_change(env, monkeypatch):
    def fail(_policy, _message):
        raise mail.MailError("SMTP localhost:25: Connection refused")

    monkeypatch.setattr(mail, "send", fail)
    env.store.update("alice", lambda _r: enrolled_record())
    assert run_renew(env, User({"Current code": [code_at(OLD_SECRET)]})) == 0
    assert env.store.load("alice").enrolled
    assert [line for line in env.logs if "notification mail failed" in line and "Connection refused" in line]


def test_no_mail_when_the_template_gives_no_valid_address(env, make_policy):
    env.policy = policy.load(make_policy('email:\n  address: "{user}@corp.example"\n'), use_cache=False)
    account = Account("x@evil.example", 1002, 1002, {1002}, "/home/x")
    secret = pyotp.random_base32(32)
    args = cli.parser().parse_args(["--secret", secret, "--code", code_at(secret)])
    user = User({})
    assert cli.enroll(FixedSession(args, account, admin=True, out=user.out, ask=user.ask), env.policy, env.store) == 0
    assert env.sent == []
    assert [line for line in env.logs if "notification not mailed" in line]


def test_the_notice_names_what_when_where_and_what_to_do_without_any_secret(env):
    message = mail.build_change_notice(
        env.policy, "alice", "alice@example.org", "new recovery codes", "run by bob (uid 1002)", NOW, "host1"
    )
    body = message.get_content()
    assert message["To"] == "alice@example.org" and message["From"] == "pam-twofa@host1"
    assert "host1" in message["Subject"]
    for part in ("alice", "host1", "new recovery codes", "2023-11-14 22:13:30 UTC", "run by bob (uid 1002)"):
        assert part in body, part
    assert "twofa-admin disable alice" in body and "administrator" in body


def test_origin_names_the_invoking_uid(monkeypatch):
    monkeypatch.setenv("SUDO_UID", "0")
    monkeypatch.setenv("SSH_CONNECTION", "203.0.113.9 50000 10.0.0.1 22")
    where = cli.origin()
    assert "run by root (uid 0)" in where and "ssh client 203.0.113.9 port 50000" in where


# -- a session parked at a prompt cannot act on a state it never saw (issue 24) ----------


NEW_SECRET = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA"  # someone else's enrollment, made while the session waits
NEW_KEY = base64.b32decode(NEW_SECRET)


def meanwhile(env, change, then=new_secret_code):
    """An answer that first changes the store (someone else, while this session waits at the prompt)."""

    def answer(transcript: str) -> str:
        env.store.update("alice", change)
        return then(transcript)

    return answer


def owner_enrolls(_old):
    return Record("alice", key=NEW_KEY, enrolled_at=int(NOW) - 60, last_step=int(NOW) // 30, email="alice@example.org")


@pytest.mark.parametrize("start", [None, "address only"])
def test_an_enrollment_made_while_the_session_was_open_is_not_replaced(env, start):
    """The race of issue 24: started unenrolled (no current code asked), parked at the code prompt; the owner
    enrolls meanwhile; the parked session's code from ITS app must not replace the owner's secret."""
    if start:
        env.store.update("alice", lambda _r: Record("alice", email="alice@example.org"))
    user = User({"Code from the app": [meanwhile(env, owner_enrolls)]})
    with pytest.raises(
        UsageError,
        match="^someone enrolled alice while this session was open; nothing was stored: start twofa-enroll again$",
    ):
        run_enroll(env, user)
    assert env.store.load("alice") == owner_enrolls(None), "the owner's enrollment must be untouched"
    assert cli.CURRENT_PROMPT not in user.prompts and "now on" not in user.text
    assert [line for line in env.logs if "user=alice result=refused: enrolled meanwhile (" in line]
    assert not [line for line in env.logs if "result=enrolled" in line]
    assert env.sent == []


def test_a_secret_replaced_after_the_current_code_is_not_replaced_again(env):
    env.store.update("alice", lambda _r: enrolled_record())
    user = User(
        {"Replace": ["y"], "Current code": [code_at(OLD_SECRET)], "Code from the app": [meanwhile(env, owner_enrolls)]}
    )
    with pytest.raises(UsageError, match="^the 2FA secret of alice was replaced while this session was open; nothing"):
        run_enroll(env, user)
    assert env.store.load("alice") == owner_enrolls(None)
    assert [line for line in env.logs if "result=refused: secret replaced meanwhile (" in line]
    assert env.sent == []


def test_2fa_turned_off_after_the_current_code_is_not_enrolled_again(env):
    env.store.update("alice", lambda _r: enrolled_record())
    user = User(
        {
            "Replace": ["y"],
            "Current code": [code_at(OLD_SECRET)],
            "Code from the app": [meanwhile(env, lambda _r: None)],
        }
    )
    with pytest.raises(UsageError, match="^2FA for alice was turned off while this session was open; nothing"):
        run_enroll(env, user)
    assert env.store.load("alice") is None


def test_logins_meanwhile_do_not_stop_a_first_enrollment(env):
    """Only the enrollment is compared: failures, mails sent, a new address recorded meanwhile are not one."""
    env.store.update("alice", lambda _r: Record("alice", email="old@example.org"))

    def logins(record):
        record.failures, record.email_sends, record.email = [int(NOW) - 5], [int(NOW) - 9], "new@example.org"
        return record

    user = User({"Code from the app": [meanwhile(env, logins)]})
    assert run_enroll(env, user) == 0
    after = env.store.load("alice")
    assert after.enrolled and after.email == "new@example.org", "the record as read under the lock is kept"
    assert [line for line in env.logs if "user=alice result=enrolled (from " in line]
    [notice] = env.sent
    assert notice["To"] == "new@example.org"


@pytest.mark.parametrize("force", [True, False])
def test_root_replaces_what_it_never_saw_only_with_force_and_says_so(env, force):
    secret = pyotp.random_base32(32)
    user = User({"Code from the app": [meanwhile(env, owner_enrolls, then=lambda _t: code_at(secret))]})
    argv = ["--secret", secret] + (["--force"] if force else [])
    if not force:
        with pytest.raises(UsageError, match="^someone enrolled alice while this session was open"):
            run_enroll(env, user, *argv, admin=True)
        assert env.store.load("alice") == owner_enrolls(None) and env.sent == []
        return
    assert run_enroll(env, user, *argv, admin=True) == 0
    assert env.store.load("alice").key == base64.b32decode(secret)
    # started unenrolled, yet what happened was a replacement: the syslog line, the screen and the mail say so
    assert [line for line in env.logs if "user=alice result=enrolled, replacing the previous secret (from " in line]
    assert "The previous secret no longer works." in user.text
    [notice] = env.sent
    assert notice["To"] == "alice@example.org" and "replacing the previous secret" in notice.get_content()


def test_a_first_enrollment_says_enrolled_and_no_replacement(env):
    user = User({"Code from the app": [new_secret_code]})
    assert run_enroll(env, user) == 0
    assert "The previous secret no longer works." not in user.text
    assert not [line for line in env.logs if "replacing" in line]


# -- every prompt gives up after PROMPT_TIMEOUT seconds, storing nothing -------------------


@pytest.fixture
def silent_stdin(monkeypatch):
    """stdin: a pipe nobody writes to (``write`` feeds it); PROMPT_TIMEOUT 1 s; the alarm state checked after."""
    import os
    import signal
    import sys

    read_end, write_end = os.pipe()
    stream = os.fdopen(read_end, "r")
    monkeypatch.setattr(sys, "stdin", stream)
    monkeypatch.setattr(cli, "PROMPT_TIMEOUT", 1)
    handler = signal.getsignal(signal.SIGALRM)
    yield lambda text: os.write(write_end, text.encode())
    assert signal.alarm(0) == 0, "an alarm was left armed"
    assert signal.getsignal(signal.SIGALRM) is handler, "the SIGALRM handler was not put back"
    os.close(write_end)
    stream.close()


def real_session(user: User, *argv, admin: bool = False) -> FixedSession:
    """The default prompts (input and getpass, with their timeout); output to ``user``'s transcript."""
    return FixedSession(cli.parser().parse_args(list(argv)), ALICE, admin=admin, out=user.out)


# where the session waits -> its prompt there
WAITS_AT = {
    "code": "Code from the app (6 digits): ",
    "replace": "Replace the secret (the old one stops working)? [y/N] ",
    "current": cli.CURRENT_PROMPT,
}


@pytest.mark.parametrize("where", sorted(WAITS_AT))
def test_an_unanswered_prompt_gives_up_and_stores_nothing(env, silent_stdin, capsys, where):
    import time

    if where != "code":
        env.store.update("alice", lambda _r: enrolled_record())
    before = env.store.load("alice")
    if where == "current":
        silent_stdin("y\n")  # replace: yes; then nothing more
    user = User({})
    started = time.monotonic()
    with pytest.raises(cli.PromptTimeout, match=r"^no answer within 1 s; nothing was changed\. Run twofa-enroll again"):
        cli.enroll(real_session(user), env.policy, env.store)
    assert 0.9 < time.monotonic() - started < 10
    assert env.store.load("alice") == before, "nothing stored, no failure counted"
    assert env.sent == []
    shown = capsys.readouterr()
    assert shown.out.endswith(WAITS_AT[where]), shown.out[-200:]
    assert shown.err == "\n"  # the error that follows starts on a line of its own


def test_a_timeout_is_logged(env, monkeypatch):
    def stop(_transcript):
        raise cli.PromptTimeout("no answer within 120 s; nothing was changed.")

    with pytest.raises(cli.PromptTimeout), cli.logged_timeout("alice"):
        run_enroll(env, User({"Code from the app": [stop]}))
    assert [line for line in env.logs if "user=alice result=gave up: no answer at a prompt (within 120 s" in line]
    assert env.store.load("alice") is None


PROMPT_CHILD = r"""
import sys, termios
from pam_twofa.cli import enroll as cli
cli.PROMPT_TIMEOUT = int(sys.argv[2])
ask = cli.timed(cli._getpass if sys.argv[1] == "password" else input)
try:
    ask("Answer me: ")
except cli.PromptTimeout as exc:
    print("TIMEOUT:", exc)
except KeyboardInterrupt:
    print("INTERRUPTED")
print("ECHO:", bool(termios.tcgetattr(0)[3] & termios.ECHO))
"""


@pytest.mark.parametrize("prompt", ["password", "code"])
@pytest.mark.parametrize("what", ["timeout", "ctrl-c"])
def test_prompts_on_a_real_terminal_time_out_and_still_take_ctrl_c(prompt, what):
    """On a pty: getpass and input give up after the timeout with the echo back on; Ctrl-C still interrupts."""
    import os
    import sys

    import pexpect

    root = os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__)))
    seconds = "1" if what == "timeout" else "60"
    child = pexpect.spawn(
        sys.executable,
        ["-c", PROMPT_CHILD, prompt, seconds],
        env={**os.environ, "PYTHONPATH": os.path.dirname(root)},
        encoding="utf-8",
        timeout=20,
    )
    try:
        child.expect_exact("Answer me: ")
        if what == "ctrl-c":
            child.sendintr()
            child.expect_exact("INTERRUPTED")
        else:
            child.expect_exact("TIMEOUT: no answer within 1 s; nothing was changed.")
        child.expect_exact("ECHO: True")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


# -- turning your own 2FA off (--disable): only where the policy allows it, password + current code ----


def run_disable(env, user: User, account: Account = ALICE) -> int:
    args = cli.parse(["--disable"])
    return cli.disable(FixedSession(args, account, admin=False, out=user.out, ask=user.ask), env.policy, env.store)


def adm_member() -> Account:
    """alice, also in the host's group adm (a real group: the policy's groups are looked up through NSS)."""
    import grp

    return Account("alice", 1001, 1001, {1001, grp.getgrnam("adm").gr_gid}, "/home/alice")


@pytest.mark.parametrize(
    "body,account,rule",
    [
        ("enforce:\n  mode: all\n", ALICE, "enforced: enforce.mode is all"),
        ("enforce:\n  mode: groups\n  groups: [adm]\n", "adm", "enforced: member of group adm (supplementary)"),
        # a login from an exempt network is not asked, but a login may come from anywhere
        ("enforce:\n  mode: all\nexempt:\n  networks: [0.0.0.0/0, '::/0']\n", ALICE, "enforced: enforce.mode is all"),
        # membership unknown: fails closed
        ("enforce:\n  mode: groups\n  groups: [no-such-group-e2e]\n", ALICE, "enforce.groups no-such-group-e2e"),
    ],
    ids=["mode-all", "group-member", "exempt-network", "unresolved-group"],
)
def test_disable_is_refused_where_the_policy_requires_2fa(env, make_policy, body, account, rule):
    env.policy = policy.load(make_policy(body), use_cache=False)
    old = enrolled_record(email="alice@example.org")
    env.store.update("alice", lambda _r: old)
    user = User({})  # asked nothing: any prompt fails the test
    with pytest.raises(UsageError) as refused:
        run_disable(env, user, adm_member() if account == "adm" else account)
    message = str(refused.value)
    assert message.startswith("the policy requires 2FA for alice (") and rule in message, message
    assert "cannot be turned off; nothing was changed" in message
    assert "An administrator can turn it off: twofa-admin disable alice" in message
    assert env.store.load("alice") == old
    assert user.prompts == [] and env.sent == []
    [line] = [line for line in env.logs if "user=alice result=refused: turning 2FA off, the policy requires it" in line]
    assert rule in line


def test_disable_of_an_account_that_is_not_enrolled_has_nothing_to_turn_off(env):
    for start in (None, Record("alice", email="alice@example.org")):
        if start is not None:
            env.store.update("alice", lambda _r, start=start: start)
        user = User({})
        with pytest.raises(UsageError, match="^2FA is not on for alice: nothing to turn off$"):
            run_disable(env, user)
        assert env.store.load("alice") == start and user.prompts == []
    assert env.sent == []


@pytest.mark.parametrize(
    "body,email",
    [
        ("", ""),  # enforce.mode off (the default); no recorded address: the record goes
        ("enforce:\n  mode: all\nexempt:\n  users: [alice]\n", "alice@example.org"),  # exempt; address kept
    ],
    ids=["mode-off", "exempt-user"],
)
def test_disable_with_a_current_code_removes_the_2fa_and_notifies(env, make_policy, body, email):
    env.policy = policy.load(make_policy(body + "rate_limit:\n  max_failures: 3\n"), use_cache=False)
    env.store.update("alice", lambda _r: enrolled_record(email=email, trusted={"192.0.2.1": int(NOW) + 600}))
    user = User({"Current code": [code_at(OLD_SECRET)]})
    assert run_disable(env, user) == 0
    after = env.store.load("alice")
    if email:
        assert after == Record("alice", email=email), "only the admin-recorded address stays"
    else:
        assert after is None
    assert "To turn 2FA off, type a code" in user.text and "twofa-admin disable alice" in user.text
    assert "Two-factor authentication is now off for alice" in user.text
    assert "To turn it on again, run: twofa-enroll" in user.text
    assert [line for line in env.logs if "user=alice result=2FA turned off by the user (from " in line]
    [notice] = env.sent
    assert notice["To"] == (email or "alice@localhost")
    assert "2FA turned off by the user" in notice.get_content()


def test_disable_with_a_recovery_code(env):
    env.store.update("alice", lambda _r: enrolled_record())
    assert run_disable(env, User({"Current code": [CODES[5]]})) == 0
    assert env.store.load("alice") is None
    assert [line for line in env.logs if "current code accepted: success (recovery code) (to turn 2FA off)" in line]


def test_disable_mails_the_recorded_address_through_a_real_smtp_server(env, make_policy, monkeypatch):
    from support.mail import plain_server

    monkeypatch.setattr(mail, "send", REAL_SEND)  # env captured it
    with plain_server() as (port, delivered):
        env.policy = policy.load(
            make_policy(f"email:\n  smtp:\n    host: 127.0.0.1\n    port: {port}\n    timeout: 10\n"), use_cache=False
        )
        env.store.update("alice", lambda _r: enrolled_record(email="alice@example.org"))
        assert run_disable(env, User({"Current code": [code_at(OLD_SECRET)]})) == 0
    [message] = delivered
    assert "To: alice@example.org" in message and "2FA turned off by the user" in message
    assert "set up 2FA again" in message and "twofa-admin disable" not in message  # advice for a removal
    assert OLD_SECRET not in message and code_at(OLD_SECRET) not in message
    assert env.store.load("alice") == Record("alice", email="alice@example.org")


def test_disable_with_wrong_codes_counts_failures_and_changes_nothing_else(env, make_policy):
    env.policy = policy.load(make_policy("rate_limit:\n  max_failures: 5\n"), use_cache=False)
    old = enrolled_record()
    env.store.update("alice", lambda _r: old)
    user = User({"Current code": [wrong(), wrong(), "nonsense"]})
    with pytest.raises(UsageError, match="no valid current code after 3 tries; nothing was changed.*disable alice"):
        run_disable(env, user)
    after = env.store.load("alice")
    assert after.key == OLD_KEY and after.recovery_hashes == old.recovery_hashes
    assert len(after.failures) == 3 and not after.locked_until
    assert env.sent == [] and not [line for line in env.logs if "turned off by the user" in line]


def test_disable_of_a_locked_account_is_refused_without_asking(env):
    old = enrolled_record(locked_until=int(NOW) + 600)
    env.store.update("alice", lambda _r: old)
    user = User({})
    with pytest.raises(UsageError, match=r"locked until .*twofa-admin unlock alice"):
        run_disable(env, user)
    assert env.store.load("alice") == old and user.prompts == [] and env.sent == []


def locked_by_logins(record):
    record.failures, record.locked_until = [int(NOW)] * 3, int(NOW) + 900
    return record


def logins(record):
    record.failures, record.trusted = [int(NOW)], {"198.51.100.7": int(NOW) + 60}
    return record


# what happens meanwhile -> (how it is changed, the refusal, the syslog result)
MEANWHILE = {
    "secret-replaced": (owner_enrolls, "the 2FA secret of alice was replaced", "secret replaced meanwhile"),
    "turned-off": (lambda _r: None, "2FA for alice was turned off", "2FA turned off meanwhile"),
    "locked": (locked_by_logins, "2FA for alice was locked after too many wrong codes", "locked meanwhile"),
}


@pytest.mark.parametrize("what", sorted(MEANWHILE))
def test_a_change_between_the_code_and_the_wipe_is_refused(env, monkeypatch, what):
    change, refusal, result = MEANWHILE[what]
    env.store.update("alice", lambda _r: enrolled_record())
    proven = cli.confirm_current_code

    def then_meanwhile(*args):
        record = proven(*args)
        env.store.update("alice", change)  # someone else, after the code was accepted
        return record

    monkeypatch.setattr(cli, "confirm_current_code", then_meanwhile)
    says = f"^{refusal} while this session was open; nothing was stored: start twofa-enroll --disable again$"
    with pytest.raises(UsageError, match=says):
        run_disable(env, User({"Current code": [code_at(OLD_SECRET)]}))
    after = env.store.load("alice")
    if what == "turned-off":
        assert after is None
    else:
        assert after.enrolled, "the change made meanwhile stays"
        assert after.key == (NEW_KEY if what == "secret-replaced" else OLD_KEY)
    assert env.sent == [] and not [line for line in env.logs if "turned off by the user" in line]
    assert [line for line in env.logs if f"user=alice result=refused: {result} (while this session" in line]


def test_logins_between_the_code_and_the_wipe_do_not_stop_it(env, monkeypatch):
    """Only the enrollment is compared: a failure and a trusted address recorded meanwhile are not a change."""
    env.store.update("alice", lambda _r: enrolled_record())
    proven = cli.confirm_current_code

    def then_logins(*args):
        record = proven(*args)
        env.store.update("alice", logins)
        return record

    monkeypatch.setattr(cli, "confirm_current_code", then_logins)
    assert run_disable(env, User({"Current code": [code_at(OLD_SECRET)]})) == 0
    assert env.store.load("alice") is None


# -- forgetting trusted clients (--forget-trusted): the password only -------------------


def run_forget(env, user: User) -> int:
    args = cli.parse(["--forget-trusted"])
    return cli.forget_trusted(FixedSession(args, ALICE, admin=False, out=user.out, ask=user.ask), env.policy, env.store)


def test_forget_trusted_clears_the_trusted_clients_and_notifies(env):
    trusted = {"192.0.2.1": int(NOW) + 600, "2001:db8::7": int(NOW) + 60, "198.51.100.9": int(NOW) - 5}
    old = enrolled_record(email="alice@example.org", trusted=trusted)
    env.store.update("alice", lambda _r: old)
    user = User({})
    assert run_forget(env, user) == 0
    assert user.text == "Forgot 2 trusted client address(es): the next login from each asks for a code."
    after = env.store.load("alice")
    assert after.trusted == {}
    after.trusted = trusted
    assert after == old, "nothing else changed"
    assert [line for line in env.logs if "user=alice result=forgot 2 trusted client address(es) (from " in line]
    [notice] = env.sent
    assert notice["To"] == "alice@example.org" and "forgot 2 trusted client address(es)" in notice.get_content()


@pytest.mark.parametrize("trusted", [None, {}, {"192.0.2.1": int(NOW) - 1}], ids=["no-record", "none", "expired"])
def test_forget_trusted_with_nothing_to_forget_says_so(env, trusted):
    old = None if trusted is None else enrolled_record(trusted=trusted)
    if old is not None:
        env.store.update("alice", lambda _r: old)
    user = User({})
    assert run_forget(env, user) == 0
    assert user.text == "No trusted clients; nothing changed."
    assert env.store.load("alice") == old
    assert env.sent == [] and not [line for line in env.logs if "forgot" in line]


def test_root_forgets_the_trusted_clients_of_another_account_without_a_password(env, scratch_policy, monkeypatch):
    import time

    def no_prompt(prompt):
        raise AssertionError(f"root was asked {prompt!r}")

    monkeypatch.setattr("builtins.input", no_prompt)
    monkeypatch.setattr(cli, "_getpass", no_prompt)
    monkeypatch.setattr(cli.pam, "pam", lambda: no_prompt("a password"))
    env.store.update("root", lambda _r: Record("root", trusted={"192.0.2.1": int(time.time()) + 600}))
    assert cli.run_admin(cli.parse(["--forget-trusted", "--user", "root", "--policy", scratch_policy])) == 0
    assert env.store.load("root").trusted == {}
    assert [line for line in env.logs if "user=root result=forgot 1 trusted client address(es)" in line]


# -- who may use which option --------------------------------------------------------


@pytest.mark.parametrize("user", [None, "alice"])
def test_root_is_sent_to_twofa_admin_disable(env, user):
    argv = ["--disable"] + (["--user", user] if user else [])
    with pytest.raises(UsageError, match=f"root turns it off with: twofa-admin disable {user or 'root'}$"):
        cli.run_admin(cli.parse(argv))
    assert env.store.users() == []


@pytest.mark.parametrize(
    "argv,says",
    [
        (["--disable", "--recovery-codes"], "not allowed with argument"),
        (["--disable", "--forget-trusted"], "not allowed with argument"),
        (["--forget-trusted", "--recovery-codes"], "not allowed with argument"),
        (["--disable", "--qr", "none"], "^--qr: not with --disable"),
        (["--disable", "--secret", OLD_SECRET, "--code", "123456"], "^--secret, --code: not with --disable"),
        (["--forget-trusted", "--force"], "^--force: not with --forget-trusted"),
        (["--forget-trusted", "--import-google-authenticator", "/x"], "^--import-google-authenticator: not with"),
    ],
)
def test_disable_and_forget_trusted_take_no_other_mode_or_enrollment_option(argv, says):
    with pytest.raises(UsageError, match=says):
        cli.parse(argv)
    cli.parse(argv[:1])  # alone: accepted
