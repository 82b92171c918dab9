"""pam_module: the pam_python entry points, with a fake handle shaped like pam_python's."""

import sys
import syslog

import pytest
from support.records import stored

from pam_twofa import pam_module
from pam_twofa.core import recovery, totp
from pam_twofa.core.record import Record
from pam_twofa.login import adapter as pam_adapter
from pam_twofa.login import flow as login
from pam_twofa.store.files import FileStore
from pam_twofa.system import accounts, log
from pam_twofa.system.accounts import Account

KEY = bytes.fromhex("0a1b2c3d4e5f60718293a4b5c6d7e8f901234567")
T = 1_700_000_040.0
CODE = totp.totp(KEY, T)
WRONG = "%06d" % ((int(CODE) + 1) % 10**6)
MODULE = "/usr/lib/python3/dist-packages/pam_twofa/pam_module.py"


class PamException(Exception):
    pass


class Response:
    def __init__(self, resp):
        self.resp = resp
        self.resp_retcode = 0


class Handle:
    """What pam_python passes as ``pamh`` (only what the module uses)."""

    PAM_SUCCESS = 0
    PAM_AUTH_ERR = 7
    PAM_IGNORE = 25
    PAM_PROMPT_ECHO_OFF = 1
    PAM_PROMPT_ECHO_ON = 2
    PAM_ERROR_MSG = 3
    PAM_TEXT_INFO = 4
    exception = PamException

    def __init__(self, user="alice", answers=(), rhost="198.51.100.4", service="sshd"):
        self.user = user
        self.answers = list(answers)
        self.rhost = rhost
        self.service = service
        self.sent = []  # (style, text)

    class Message:
        def __init__(self, msg_style, msg):
            self.msg_style = msg_style
            self.msg = msg

    def get_user(self, prompt=None):
        if isinstance(self.user, BaseException):
            raise self.user
        return self.user

    def conversation(self, message):
        self.sent.append((message.msg_style, message.msg))
        if message.msg_style == self.PAM_PROMPT_ECHO_OFF:
            answer = self.answers.pop(0) if self.answers else None
            if isinstance(answer, BaseException):
                raise answer
            return Response(answer)
        return Response(None)


@pytest.fixture(autouse=True)
def system_python(monkeypatch):
    """The tests run in a venv (another sys.prefix): the module would refuse it as it refuses a copied tree."""
    monkeypatch.setattr(pam_adapter, "SYSTEM_PREFIXES", (*pam_adapter.SYSTEM_PREFIXES, sys.prefix, sys.exec_prefix))


@pytest.fixture(autouse=True)
def setup(monkeypatch):
    users = {
        "alice": Account("alice", 1001, 1001, {1001}, "/home/alice"),
        "bob": Account("bob", 1002, 1002, {1002}, "/home/bob"),
    }
    monkeypatch.setattr(accounts, "lookup", lambda name: users.get(name))
    monkeypatch.setattr(accounts, "group_ids", lambda names: {n: None for n in names})
    monkeypatch.setattr(login.Login, "now", lambda self: T)


@pytest.fixture
def policy_path(scratch_policy, state_dir):
    FileStore(state_dir).update("alice", lambda old: Record("alice", key=KEY))
    return scratch_policy


def auth(handle, *args):
    return pam_module.pam_sm_authenticate(handle, 0, [MODULE, *args])


def test_pass_maps_to_success(policy_path, logs):
    handle = Handle(answers=[CODE])
    assert auth(handle, "policy=" + policy_path) == 0
    assert handle.sent == [(1, login.PROMPT)]
    assert logs == ["pam_twofa(sshd:auth): user=alice rhost=198.51.100.4 result=success"]


def test_fail_maps_to_auth_err_and_the_error_is_shown(policy_path):
    handle = Handle(answers=[WRONG])
    assert auth(handle, "policy=" + policy_path) == 7
    assert handle.sent == [(1, login.PROMPT), (3, login.MSG_BAD)]


def test_ignore_maps_to_pam_ignore(policy_path):
    handle = Handle(user="bob")
    assert auth(handle, "policy=" + policy_path) == 25
    assert handle.sent == []


def test_info_messages_use_text_info(policy_path, state_dir):
    codes, salt, hashes = recovery.new_codes(2)
    FileStore(state_dir).update(
        "alice", lambda old: Record("alice", key=KEY, recovery_salt=salt, recovery_hashes=hashes)
    )
    handle = Handle(answers=[codes[0]])
    assert auth(handle, "policy=" + policy_path) == 0
    assert [style for style, _text in handle.sent] == [1, 4]


def test_argv0_is_the_module_path_and_is_skipped(make_policy, logs):
    broken = make_policy("enforce:\n  mode: sometimes\n")
    # on_error=allow in argv[0] must not count: argv[0] is the module path
    assert pam_module.pam_sm_authenticate(Handle(answers=[CODE]), 0, ["on_error=allow", "policy=" + broken]) == 7
    assert (
        pam_module.pam_sm_authenticate(Handle(answers=[CODE]), 0, [MODULE, "policy=" + broken, "on_error=allow"]) == 25
    )
    assert not any("ignored module arguments" in line for line in logs)


def test_argv_with_only_the_module_path_uses_the_default_policy(monkeypatch):
    seen = []

    def fake_load(path):
        seen.append(path)
        from pam_twofa.policy import PolicyError

        raise PolicyError([f"{path}: no such policy file"])

    from pam_twofa import policy

    monkeypatch.setattr(policy, "load", fake_load)
    assert pam_module.pam_sm_authenticate(Handle(answers=[CODE]), 0, [MODULE]) == 7
    assert seen == ["/etc/pam-twofa/policy.yaml"]


def test_conversation_raising_pam_exception_is_no_answer(policy_path, state_dir):
    handle = Handle(answers=[PamException("conversation failed")])
    assert auth(handle, "policy=" + policy_path) == 7
    assert stored(FileStore(state_dir), "alice").failures == []


def test_error_message_that_cannot_be_shown_still_fails(policy_path):
    class Mute(Handle):
        def conversation(self, message):
            if message.msg_style == self.PAM_ERROR_MSG:
                raise PamException("no terminal")
            return super().conversation(message)

    assert auth(Mute(answers=[WRONG]), "policy=" + policy_path) == 7


@pytest.mark.parametrize(
    "breakage",
    [
        "conversation-runtime-error",
        "conversation-unicode-error",
        "conversation-keyboard-interrupt-like",
        "get_user-runtime-error",
        "message-constructor",
        "response-without-resp",
        "lookup-raises",
        "store-raises",
    ],
)
@pytest.mark.parametrize("on_error", ["deny", "allow"])
def test_exception_anywhere_is_auth_err_and_never_propagates(policy_path, monkeypatch, logs, breakage, on_error):
    handle = Handle(answers=[CODE])
    if breakage == "conversation-runtime-error":
        handle.answers = [RuntimeError("boom")]
    elif breakage == "conversation-unicode-error":
        handle.answers = [UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")]
    elif breakage == "conversation-keyboard-interrupt-like":
        handle.answers = [ValueError("strange")]
    elif breakage == "get_user-runtime-error":
        handle.user = RuntimeError("no user")
    elif breakage == "message-constructor":

        def bad_message(*args):
            raise TypeError("bad message")

        monkeypatch.setattr(handle, "Message", bad_message)
    elif breakage == "response-without-resp":
        monkeypatch.setattr(handle, "conversation", lambda message: object())
    elif breakage == "lookup-raises":
        monkeypatch.setattr(accounts, "lookup", lambda name: {}[name])
    elif breakage == "store-raises":

        def broken_load(self, user):
            raise MemoryError("out of memory")

        monkeypatch.setattr(FileStore, "load", broken_load)
    rc = auth(handle, "policy=" + policy_path, "on_error=" + on_error)
    if breakage == "conversation-unicode-error":
        assert rc == 7  # not decodable: a wrong code, or an internal error: refused either way
        return
    assert rc == 7
    assert any("internal error" in line and "login refused" in line for line in logs)
    assert all(CODE not in line for line in logs)


def test_get_user_raising_pam_exception_is_an_unknown_user(policy_path, logs):
    handle = Handle(user=PamException("no user"), answers=[CODE])
    assert auth(handle, "policy=" + policy_path) == 7
    assert handle.sent == [(1, login.PROMPT), (3, login.MSG_BAD)]  # same as a wrong code
    assert "result=unknown user" in logs[-1]


def test_rhost_and_service_that_cannot_be_read(policy_path, logs):
    class Odd(Handle):
        @property
        def rhost(self):
            raise PamException("no rhost")

        @rhost.setter
        def rhost(self, value):
            pass

    handle = Odd(answers=[CODE], service=b"sshd")  # bytes, not a text: treated as unknown
    assert auth(handle, "policy=" + policy_path) == 0
    assert logs == ["pam_twofa(-:auth): user=alice rhost=- result=success"]


def test_other_entry_points_ignore(policy_path):
    for name in (
        "pam_sm_setcred",
        "pam_sm_acct_mgmt",
        "pam_sm_open_session",
        "pam_sm_close_session",
        "pam_sm_chauthtok",
    ):
        handle = Handle(answers=[CODE])
        assert getattr(pam_module, name)(handle, 0, [MODULE, "policy=" + policy_path]) == 25, name
        assert handle.sent == []


def test_internal_error_when_logging_also_fails(policy_path, monkeypatch):
    def no_syslog(priority, message):
        raise OSError("syslog gone")

    monkeypatch.setattr(log, "emit", no_syslog)
    handle = Handle(answers=[RuntimeError("boom")])
    assert auth(handle, "policy=" + policy_path) == 7


# -- the pam_python PATH hole: the module refuses outside a system Python in a non-setuid program --------


@pytest.fixture
def syslog_lines(monkeypatch):
    """(priority, message) of what the entry and its guard send to syslog themselves (not through log.emit)."""
    sent = []
    monkeypatch.setattr(syslog, "syslog", lambda priority, message: sent.append((priority, message)))
    return sent


@pytest.fixture
def no_flow(monkeypatch):
    """Fail the test if the login flow runs at all."""

    def never(pamh, argv):
        raise AssertionError("the login flow ran")

    monkeypatch.setattr(pam_adapter, "run", never)


def crit(sent):
    return [message for priority, message in sent if priority == syslog.LOG_AUTHPRIV | syslog.LOG_CRIT]


@pytest.mark.parametrize("ids", ["setuid", "setgid"])
def test_setuid_or_setgid_caller_is_refused_with_one_crit_line(monkeypatch, syslog_lines, no_flow, policy_path, ids):
    if ids == "setuid":
        monkeypatch.setattr(pam_adapter.os, "getuid", lambda: 1000)
        monkeypatch.setattr(pam_adapter.os, "geteuid", lambda: 0)
    else:
        monkeypatch.setattr(pam_adapter.os, "getgid", lambda: 1000)
        monkeypatch.setattr(pam_adapter.os, "getegid", lambda: 0)
    handle = Handle(answers=[CODE], service="su")
    assert auth(handle, "policy=" + policy_path) == 7
    assert handle.sent == []  # nothing asked
    (line,) = crit(syslog_lines)
    assert len(syslog_lines) == 1
    assert line.startswith("pam_twofa(su:auth): refusing to run: loaded by a setuid or setgid program")
    assert "remove the pam_python line from /etc/pam.d/su" in line and "only safe in sshd" in line


@pytest.mark.parametrize("attr", ["prefix", "base_prefix", "exec_prefix"])
def test_interpreter_outside_the_system_prefix_is_refused(monkeypatch, syslog_lines, no_flow, policy_path, attr):
    monkeypatch.setattr(sys, attr, "/home/u/evil")
    assert auth(Handle(answers=[CODE], service="chsh"), "policy=" + policy_path) == 7
    (line,) = crit(syslog_lines)
    assert "'/home/u/evil'" in line and "/etc/pam.d/chsh" in line


@pytest.mark.parametrize("prefix", ["/usr/local", "/usr/", "/home/u/evil/usr", "/tmp", ""])
def test_only_the_system_prefixes_are_accepted(monkeypatch, prefix):
    monkeypatch.setattr(sys, "prefix", prefix)
    assert pam_adapter.unsafe() is not None


def test_system_prefixes_and_same_ids_are_accepted(monkeypatch):
    for prefix in ("/usr", "/"):
        for attr in ("prefix", "base_prefix", "exec_prefix"):
            monkeypatch.setattr(sys, attr, prefix)
        assert pam_adapter.unsafe() is None


def test_service_name_in_the_crit_line_is_cleaned(monkeypatch, syslog_lines, policy_path):
    monkeypatch.setattr(pam_adapter.os, "geteuid", lambda: pam_adapter.os.getuid() + 1)
    auth(Handle(service="su\nx ../y"), "policy=" + policy_path)
    (line,) = crit(syslog_lines)
    assert line.startswith("pam_twofa(su?x?..?y:auth)") and "\n" not in line


def test_failing_import_of_the_package_is_logged_once_at_err(monkeypatch, syslog_lines, policy_path):
    monkeypatch.setitem(sys.modules, "pam_twofa.login.adapter", None)  # the next import raises ImportError
    assert auth(Handle(answers=[CODE]), "policy=" + policy_path) == 7
    assert len(syslog_lines) == 1
    priority, line = syslog_lines[0]
    assert priority == syslog.LOG_AUTHPRIV | syslog.LOG_ERR
    assert line.startswith("pam_twofa(sshd:auth): cannot load the pam_twofa package (ModuleNotFoundError")
    assert "login refused" in line and "Traceback" not in line and CODE not in line
