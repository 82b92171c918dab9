"""Module arguments (login.Options): a mistyped or malformed argument is a configuration error, never a default."""

import pytest
from support.conversation import Conv

from pam_twofa import policy
from pam_twofa.login import flow as login
from pam_twofa.login.flow import FAIL, IGNORE, Login, Options, normalized_absolute
from pam_twofa.system import accounts
from pam_twofa.system.accounts import Account

ALICE = Account("alice", 1001, 1001, {1001}, "/home/alice")


@pytest.fixture(autouse=True)
def fake_accounts(monkeypatch):
    monkeypatch.setattr(accounts, "lookup", lambda name: ALICE if name == "alice" else None)
    monkeypatch.setattr(accounts, "group_ids", lambda names: dict.fromkeys(names))


@pytest.fixture
def loads(monkeypatch):
    """Every policy path the login loads (the real loader still runs)."""
    seen = []
    real = policy.load

    def spy(path, *args, **kwargs):
        seen.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(policy, "load", spy)
    return seen


def run(argv, user="alice"):
    conv = Conv(["123456"])
    return Login(conv, user, "192.0.2.10", "sshd", Options(argv)).run(), conv


# -- parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["policy=/etc/x.yaml"],
        ["on_error=allow"],
        ["on_error=deny", "policy=/etc/pam-twofa/other policy.yaml"],  # [ ... ] in a PAM line keeps spaces
    ],
)
def test_valid_arguments_are_not_bad(argv):
    assert Options(argv).bad == []


@pytest.mark.parametrize(
    "argv, named",
    [
        (["polcy=/etc/x.yaml"], "polcy=/etc/x.yaml"),
        (["policy=relative/path"], "policy=relative/path"),
        (["policy", "=", "/etc/x.yaml"], "policy"),  # "policy = /etc/x.yaml": pam splits it in three
        (["on_error=maybe"], "on_error=maybe"),
        (["debug"], "debug"),
        (["policy="], "policy="),
        (["policy=/etc/../tmp/x.yaml"], "policy=/etc/../tmp/x.yaml"),
        (["policy=/etc//x.yaml"], "policy=/etc//x.yaml"),
        (["policy=/etc/x.yaml/"], "policy=/etc/x.yaml/"),
        (["policy=/etc/x.yaml", "policy=/etc/y.yaml"], "policy=/etc/y.yaml"),
        (["on_error"], "on_error"),
    ],
)
def test_bad_arguments_are_collected(argv, named):
    options = Options(argv)
    assert named in [arg for arg, _reason in options.bad]
    assert all(
        f"module argument '{arg}' is not valid: " in text for (arg, _r), text in zip(options.bad, options.problems())
    )


def test_spaces_around_equals_are_three_bad_arguments():
    assert [arg for arg, _reason in Options(["policy", "=", "/etc/x.yaml"]).bad] == ["policy", "=", "/etc/x.yaml"]


def test_on_error_is_deny_unless_clearly_given():
    assert Options(["on_error=maybe"]).on_error == "deny"
    assert Options(["on_error=allow", "on_error=deny"]).on_error == "deny"
    assert Options(["on_error=allow", "polcy=/x"]).on_error == "allow"


@pytest.mark.parametrize(
    "path, ok",
    [
        ("/etc/x.yaml", True),
        ("/x", True),
        ("/", False),
        ("", False),
        ("etc/x.yaml", False),
        ("//etc/x.yaml", False),
        ("/etc/./x.yaml", False),
        ("/etc/../x.yaml", False),
        ("/etc/x\n.yaml", False),
    ],
)
def test_normalized_absolute(path, ok):
    assert normalized_absolute(path) is ok


def test_problems_are_cleaned_of_control_characters():
    (text,) = Options(["pol\ncy=/x\x1b[31m"]).problems()
    assert "\n" not in text and "\x1b" not in text and "'pol?cy=/x?[31m'" in text


# -- the login ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["polcy=/etc/x.yaml"], ["policy=relative/path"], ["policy", "=", "/etc/x.yaml"], ["on_error=maybe"]],
)
def test_bad_argument_refuses_without_reading_any_policy(argv, loads, logs):
    result, conv = run(argv)
    assert result == FAIL
    assert conv.errors == [login.MSG_ERROR] and conv.prompts == []
    assert loads == []  # in particular not the default policy
    assert len(logs) == 1
    assert "result=error: module arguments" in logs[0]
    assert f"module argument '{argv[0]}' is not valid" in logs[0]
    assert "/etc/pam.d/sshd" in logs[0]


def test_bad_argument_with_a_valid_on_error_allow_is_allowed_and_logged(loads, logs):
    result, conv = run(["on_error=allow", "polcy=/etc/x.yaml"])
    assert result == IGNORE
    assert conv.errors == [] and conv.prompts == []
    assert loads == []
    assert "module argument 'polcy=/etc/x.yaml' is not valid" in logs[0]
    assert "allowed without a code" in logs[1]


def test_bad_on_error_with_a_bad_argument_is_deny(loads, logs):
    result, conv = run(["on_error=alow", "polcy=/etc/x.yaml"])
    assert result == FAIL and loads == []
    assert "'on_error=alow'" in logs[0] and "'polcy=/etc/x.yaml'" in logs[0]


def test_control_characters_in_an_argument_do_not_reach_syslog(logs):
    result, _conv = run(["policy=/etc/x.yaml\nresult=success"])
    assert result == FAIL
    assert len(logs) == 1 and "\n" not in logs[0]


def test_valid_arguments_load_the_named_policy(make_policy, loads, logs):
    path = make_policy("")
    result, _conv = run(["policy=" + path, "on_error=deny"])
    assert result == IGNORE  # not enrolled, not enforced
    assert loads == [path]
