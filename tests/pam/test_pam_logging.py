"""Syslog through the real PAM stack (docs/login.md): every outcome is logged, to
authpriv, and no code, secret or password is ever logged.

A module-scoped scenario drives every path once (success, wrong code,
replay, lockout and unlock, exempt network, wrong password, malformed codes,
unknown user, enforced-but-unenrolled, broken policy, enrollment) in both
stacks and collects every syslog line and every sensitive value it used; the
tests below assert over ALL of them. (Every other test of this folder also
checks its own lines, in the harness.)
"""

import pytest
from pam_harness import KEY, LOG_AUTHPRIV, PW, Scratch, leaks, syslog_facility

pytestmark = pytest.mark.pam


class Collected:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.typed: set[str] = set()  # answers typed at prompts: codes, passwords
        self.secrets: set[str] = set()  # TOTP secrets (base32, lower case, hex), enrollment and recovery codes
        self.passwords: set[str] = set()


@pytest.fixture(scope="module")
def collected(pam_env, tmp_path_factory) -> Collected:
    scratch = Scratch(pam_env, tmp_path_factory.mktemp("logging"), check_leaks=False)
    scratch.write_policy(mode="groups", groups=["staff"], unenrolled="deny", exempt_networks=["10.0.0.0/8"])
    out = Collected()
    out.passwords = set(scratch.passwords.values())
    typed = []

    def login(stack, user, code=None, password=None, rhost=None):
        result = scratch.login(stack, user, code, password=password, rhost=rhost)
        if isinstance(code, str):
            typed.append(code)
        if password is not None:
            typed.append(password)
        return result

    # enrollment (twofa-enroll logs too)
    alice, bob, peggy, trent, victor = (scratch.enroll(u) for u in ("alice", "bob", "peggy", "trent", "victor"))

    # success, wrong code, replay: one user per stack (a success uses up its step)
    for user, stack in ((alice, PW), (bob, KEY)):
        code = user.code()
        assert login(stack, user.user, code).ok
        assert login(stack, user.user, user.wrong_code()).denied
        assert login(stack, user.user, code).denied

    # lockout, refused correct code, admin unlock, accepted
    for attempt in range(3):
        login(PW, "peggy", peggy.wrong_code(salt=attempt))
    code = peggy.code()
    assert login(PW, "peggy", code).denied
    assert scratch.cli("unlock", "peggy").rc == 0
    assert login(PW, "peggy", code).ok

    # malformed codes (the account locks on the way: also logged)
    code = trent.code()
    for bad in ("", "abcdef", code + "0" * 9994, code.translate(str.maketrans("0123456789", "０１２３４５６７８９"))):
        assert login(KEY, "trent", bad).denied
    assert login(KEY, "trent", b"\xff" + code.encode()).denied

    # wrong password with a right code; exempt network with a right password
    assert login(PW, "victor", victor.code(), password="Wrong.Passw0rd.victor").denied
    assert login(PW, "victor", password=scratch.passwords["victor"], rhost="10.9.8.7").ok

    # unknown user, enforced-but-unenrolled
    assert login(KEY, "nosuchuser", "271828").denied
    assert login(KEY, "erin").denied

    # broken policy: the error names file:line; logins fail closed
    scratch.write_policy_text("version: 1\nenforce:\n  mode: all: groups\n")
    assert scratch.cli("check").rc != 0
    for stack in (PW, KEY):
        assert login(stack, "alice", alice.code()).denied

    out.lines = list(scratch.lines)
    out.typed = set(typed)
    out.secrets = scratch.sensitive - set(typed) - out.passwords
    return out


def test_capture_saw_every_outcome(collected):
    text = "\n".join(collected.lines)
    for outcome in (
        "result=enrolled",
        "result=success",
        "result=bad code",
        "replayed code",
        "now locked",
        "result=locked",
        "twofa-admin: unlock user=peggy",
        "10.0.0.0/8",
        "unknown user",
        "denied: not enrolled",
        "error: policy",
    ):
        assert outcome in text, f"no syslog line with {outcome!r}:\n{text}"


def test_syslog_never_contains_a_typed_code_or_password(collected):
    assert len(collected.typed) >= 15
    assert not leaks(collected.lines, collected.typed)


def test_syslog_never_contains_a_secret(collected):
    assert len(collected.secrets) >= 5 * 4  # base32, lower case, hex, enrollment code, per user
    assert not leaks(collected.lines, collected.secrets)


def test_syslog_never_contains_a_password(collected):
    assert not leaks(collected.lines, collected.passwords)


def test_lines_are_authpriv_and_name_user_rhost_service_result(collected):
    module_lines = [line for line in collected.lines if "pam_twofa(" in line]
    assert len(module_lines) >= 20
    for line in collected.lines:
        assert syslog_facility(line) == LOG_AUTHPRIV, line
    for line in module_lines:
        assert f"pam_twofa({PW}:auth)" in line or f"pam_twofa({KEY}:auth)" in line, line
        for field in ("user=", "rhost=", "result="):
            assert field in line, line
    assert any("rhost=10.9.8.7" in line for line in module_lines)


def test_leak_detector_finds_what_it_must():
    """The detector itself: a code, a secret or a password in a line is found; a timestamp is not a code."""
    lines = [
        "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=alice result=bad code (typed 492039)",
        "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=bob key JBSWY3DPEHPK3PXPJBSWY3DP",
        "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=carol password=Pw.carol.k7Qz-lorac",
        "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=dave until 1795817218",
        "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=erin answer 4920391111111111...",
    ]
    assert [v for v, _ in leaks(lines[:1], {"492039"})] == ["492039"]
    assert leaks(lines[1:2], {"JBSWY3DPEHPK3PXPJBSWY3DP"})
    assert leaks(lines[2:3], {"Pw.carol.k7Qz-lorac"})
    assert not leaks(lines[3:4], {"817218", "179581"})
    assert leaks(lines[4:5], {"4920391111111111" + "0" * 100})
