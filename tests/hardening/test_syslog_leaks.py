"""Syslog never holds a secret (docs/login.md), over a broad run through the real PAM stack.

One module-scoped scenario drives every path that logs: enrollment (given
secret and google-authenticator import), success, wrong code, replay,
lockout, admin unlock/status/disable, recovery code, imported scratch code,
an emailed code (to a real SMTP server in this process), wrong password,
exempt network, unknown user, enforced-but-unenrolled, a broken policy and a
corrupted record. Every captured line is then audited (tests/pam/syslog_audit.py)
against every secret, typed code, recovery code, emailed code and password
of the run, and for the shape of one; pam-twofa must never log at
LOG_DEBUG. (The hardening session's pam_env also audits every line of the
whole session at its end, as tests/pam's does.)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from support.mail import plain_server
from syslog_audit import LOG_DEBUG, audit, own, split


class Run:
    lines: list
    sensitive: set
    mails: list


@pytest.fixture(scope="module")
def smtp():
    with plain_server() as served:
        yield served


@pytest.fixture(scope="module")
def run(pam_env, tmp_path_factory, smtp) -> Run:
    from pam_harness import KEY, PASSWORDS, PW, USERS, Scratch, current_step, new_secret, oath

    port, mails = smtp
    scratch = Scratch(pam_env, tmp_path_factory.mktemp("leaks"))
    out = Run()
    state = scratch.state_dir

    def policy_text(**over):
        settings = dict(mode="groups", unenrolled="email", networks="['10.0.0.0/8']", max_failures=3)
        settings.update(over)
        return f"""version: 1
enforce:
  mode: {settings["mode"]}
  groups: [staff]
  unenrolled: {settings["unenrolled"]}
exempt:
  networks: {settings["networks"]}
rate_limit:
  max_failures: {settings["max_failures"]}
  per_seconds: 900
email:
  address: "{{user}}@example.test"
  smtp: {{host: 127.0.0.1, port: {port}, timeout: 5}}
storage:
  state_dir: {state}
on_error: deny
"""

    scratch.write_policy_text(policy_text())
    recovery_seen: set[str] = set()

    def new_recovery_codes():
        found = {t for t in scratch.sensitive if re.fullmatch(r"[a-z0-9]{5}-[a-z0-9]{5}", t)} - recovery_seen
        recovery_seen.update(found)
        return sorted(found)

    # enrollment with given secrets (bob's by hand, to capture ALL his recovery codes: the
    # harness registers only those with a digit in them)
    from pam_harness import Enrolled, settle

    bob_secret = new_secret()
    scratch.sensitive.update({bob_secret, bob_secret.lower()})
    settle()
    step = current_step()
    code = oath(bob_secret, step - 1)
    enrolled = scratch._checked(
        scratch.env.run(
            [
                scratch.env.enroll,
                "--user",
                "bob",
                "--secret",
                bob_secret,
                "--code",
                code,
                "--policy",
                scratch.policy_path,
            ],
            scratch.env.nss_env(),
        ),
        [code],
    )
    assert enrolled.rc == 0, enrolled
    bob_recovery = re.findall(r"\b[a-z0-9]{5}-[a-z0-9]{5}\b", enrolled.output.split("ecovery codes", 1)[1])
    scratch.sensitive.update(bob_recovery)
    recovery_seen.update(bob_recovery)
    bob = Enrolled("bob", bob_secret, step - 1)
    peggy = scratch.enroll("peggy")
    new_recovery_codes()
    trent = scratch.enroll("trent")
    new_recovery_codes()
    assert len(bob_recovery) == 10

    # google-authenticator import for carol (uid 2003), with scratch codes
    uid, gid = USERS["carol"]
    home = Path(tempfile.mkdtemp(prefix="twofa-hard-leak-"))
    try:
        os.chmod(home, 0o755)
        os.chown(home, uid, gid)
        ga_secret = new_secret()
        scratch_codes = [f"{(int.from_bytes(os.urandom(4), 'big') % 90_000_000) + 10_000_000}" for _ in range(3)]
        ga_file = home / ".google_authenticator"
        ga_file.write_text(ga_secret + '\n" TOTP_AUTH\n' + "\n".join(scratch_codes) + "\n")
        os.chown(ga_file, uid, gid)
        os.chmod(ga_file, 0o400)
        scratch.sensitive.update({ga_secret, ga_secret.lower(), *scratch_codes})
        code = oath(ga_secret, current_step() - 1)
        imported = scratch._checked(
            scratch.env.run(
                [
                    scratch.env.enroll,
                    "--user",
                    "carol",
                    "--import-google-authenticator",
                    str(ga_file),
                    "--code",
                    code,
                    "--policy",
                    scratch.policy_path,
                ],
                scratch.env.nss_env(),
            ),
            [code],
        )
        assert imported.rc == 0, imported
        new_recovery_codes()
    finally:
        shutil.rmtree(home, ignore_errors=True)

    # success, wrong code, replay
    code = bob.code()
    assert scratch.login(KEY, "bob", code).ok
    assert scratch.login(KEY, "bob", bob.wrong_code()).denied
    assert scratch.login(KEY, "bob", code).denied
    # recovery code, imported scratch code
    assert scratch.login(KEY, "bob", bob_recovery[0]).ok
    assert scratch.login(KEY, "bob", bob_recovery[0].upper()).denied  # used up
    assert scratch.login(KEY, "carol", scratch_codes[0]).ok
    # lockout, refused right code, admin unlock and status, accepted
    for n in range(3):
        scratch.login(PW, "peggy", peggy.wrong_code(salt=n))
    code = peggy.code()
    assert scratch.login(PW, "peggy", code).denied
    assert scratch.cli("status", "--json").rc == 0
    assert scratch.cli("status", "peggy").rc == 0
    assert scratch.cli("unlock", "peggy").rc == 0
    assert scratch.login(PW, "peggy", code).ok
    # wrong password with the right code
    assert scratch.login(PW, "trent", trent.code(), password="Wrong.Passw0rd.trent").denied
    # exempt network
    assert scratch.login(PW, "frank", rhost="10.1.2.3").ok
    # emailed code (alice: staff, not enrolled): a wrong answer; the code itself arrives by mail
    mails_before = len(mails)
    result = scratch.login(KEY, "alice", "00000000")
    assert result.denied and "Code sent to" in result.output, result
    assert len(mails) == mails_before + 1, result
    mailed = re.search(r"one-time code is: (\d+)", mails[-1])
    assert mailed, mails[-1]
    scratch.sensitive.add(mailed.group(1))
    # enforced and unenrolled with deny; unknown user
    scratch.write_policy_text(policy_text(unenrolled="deny"))
    assert scratch.login(KEY, "erin").denied
    assert scratch.login(KEY, "nosuchuser", "314159").denied
    # broken policy
    scratch.write_policy_text("version: 1\nenforce:\n  mode: all: groups\n")
    assert scratch.login(KEY, "trent", trent.code()).denied
    assert scratch.cli("check").rc != 0
    scratch.write_policy_text(policy_text())
    # corrupted record, then admin disable of another user
    record = scratch.record_path("trent")
    saved = record.read_bytes()
    record.write_bytes(saved[: len(saved) // 2])
    assert scratch.login(KEY, "trent", trent.code()).denied
    record.write_bytes(saved)
    assert scratch.cli("disable", "peggy", "--yes").rc == 0

    out.lines = list(scratch.lines)
    out.sensitive = set(scratch.sensitive) | set(PASSWORDS.values())
    out.mails = list(mails)
    return out


def test_the_run_saw_every_path(run):
    text = "\n".join(run.lines)
    for outcome in (
        "result=enrolled",
        "imported from google-authenticator",
        "result=success",
        "result=bad code",
        "replayed code",
        "success (recovery code)",
        "now locked",
        "result=locked",
        "unlock user=peggy",
        "10.0.0.0/8",
        "code mailed",
        "emailed bad code",
        "unknown user",
        "denied: not enrolled",
        "error: policy",
        "corrupted record",
        "disable user=peggy",
    ):
        assert outcome in text, f"no syslog line with {outcome!r}:\n{text}"


def test_no_secret_code_or_password_in_any_line(run):
    kinds = {
        "recovery codes": [s for s in run.sensitive if re.fullmatch(r"[a-z0-9]{5}-[a-z0-9]{5}", s)],
        "emailed codes": [s for s in run.sensitive if re.fullmatch(r"\d{8}", s)],
        "secrets": [s for s in run.sensitive if re.fullmatch(r"[A-Z2-7]{32}", s)],
    }
    assert all(len(values) >= 1 for values in kinds.values()), kinds
    problems = audit(run.lines, run.sensitive)
    assert not problems, "\n".join(problems)


def test_never_at_debug_and_always_authpriv(run):
    ours = [line for line in run.lines if own(split(line)[2])]
    assert len(ours) >= 25
    for line in ours:
        priority = split(line)[0]
        assert priority is not None and priority & 7 != LOG_DEBUG and priority >> 3 == 10, line


def test_the_mail_holds_the_code_but_the_log_does_not(run):
    """Control: the emailed code really was sent (so the audit had something to miss)."""
    codes = re.findall(r"one-time code is: (\d+)", "\n".join(run.mails))
    assert codes and all(code in run.sensitive for code in codes)


@pytest.mark.parametrize(
    "line,found",
    [
        (
            "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=alice rhost=- result=bad code (typed 492039)",
            "code-like",
        ),
        (
            "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=bob rhost=- result=x (key JBSWY3DPEHPK3PXPJBSWY3DP)",
            "base32",
        ),
        (
            "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=bob rhost=- result=x (8f3a52c4e1d07b69a2f5c8e3b1d4a6f09e7c2b58)",
            "hex",
        ),
        ("<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=bob rhost=- result=x (k7m2x-9qp4t)", "recovery"),
        ("<87>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=bob rhost=- result=x", "LOG_DEBUG"),
        ("<13>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=bob rhost=- result=x", "authpriv"),
        (
            "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=dave rhost=- result=locked (until 1795817218)",
            None,
        ),
        ("<85>Nov 27 22:07:01 pamtester[492039]: pam_twofa(sshd:auth): user=dave rhost=10.0.0.1 result=success", None),
        (
            "<85>Nov 27 22:07:01 pamtester: pam_twofa(sshd:auth): user=AAAAAAAAAAAAAAAAAAAAAAAA rhost=- result=unknown user",
            None,
        ),
    ],
)
def test_the_audit_finds_what_it_must(line, found):
    problems = audit([line], {"492039x"})
    if found is None:
        assert problems == []
    else:
        assert len(problems) == 1 and found in problems[0], problems
    assert audit([line.replace("result=", "result=492039 ")], {"492039"})  # a registered code is always found


# --- the SMTP password file: a refused file is named in the log, its content never ------------


def _secret_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(
    "kind,says",
    [
        ("oversized", "more than 4096"),
        ("not-utf8", "is not UTF-8 text"),
        ("group-readable", "is mode 0640, readable by others"),
        ("user-owned", "must be owned by root (uid 0), not uid 65534"),
        ("symlink", "is a symbolic link"),
    ],
)
def test_a_refused_smtp_password_file_is_named_in_the_log_never_shown(scratch, smtp, kind, says):
    from pam_harness import KEY

    port, mails = smtp
    password = "Smtp.Relay.Passw0rd-" + kind
    scratch.sensitive.add(password)
    data = (password + "\n").encode()
    path = scratch.root / "smtp.pw"
    if kind == "oversized":
        _secret_file(path, data + b"#" * 4096)  # the old reader sent the first 4,096 bytes
    elif kind == "not-utf8":
        _secret_file(path, password.encode() + b"\xff\n")  # the old reader sent it with U+FFFD
    elif kind == "group-readable":
        _secret_file(path, data, 0o640)
    elif kind == "user-owned":
        os.chown(_secret_file(path, data), 65534, 65534)
    else:
        path.symlink_to(_secret_file(scratch.root / "real.pw", data))
    scratch.write_policy_text(
        f"""version: 1
enforce: {{mode: all, unenrolled: email}}
email:
  address: "{{user}}@example.test"
  smtp: {{host: 127.0.0.1, port: {port}, timeout: 5, username: relay, password_file: {path}}}
storage: {{state_dir: {scratch.state_dir}}}
"""
    )
    mails_before = len(mails)
    result = scratch.login(KEY, "alice", "00000000")
    assert result.denied and len(mails) == mails_before, result
    lines = result.log_with("user=alice", "result=mail failed (", f"{path}: the SMTP password file ", says)
    assert len(lines) == 1, result
    if kind in ("group-readable", "user-owned"):
        assert lines[0].endswith(f"chown root:root {path}; chmod 0600 {path})"), lines[0]
    problems = audit(result.syslog, {password, password[:16]})
    assert not problems, "\n".join(problems)


# --- the one log cleaner (pam_twofa.system.log) and pam_module.py's copy of it -------------


def test_a_field_is_one_word_of_printable_characters_within_its_limit():
    from pam_twofa.system import log

    assert log.clean(None) == "-" and log.clean("") == "-"
    assert log.clean("jos\u00e9") == "jos\u00e9"
    assert log.clean("two words\nresult=success\x1b[2J\u2028x\ty") == "two?words?result=success?[2J?x?y"
    assert log.clean("a" * 128) == "a" * 128
    assert log.clean("a" * 129) == "a" * 125 + "..."
    assert log.clean("a" * 40, 32) == "a" * 29 + "..."


def test_free_text_keeps_spaces_and_cannot_start_a_new_line():
    from pam_twofa.system import log

    forged = "boom)\npam_twofa(sshd:auth): user=root rhost=- result=success (\r\x00\u2029"
    text = log.clean_text(forged)
    assert text == "boom)?pam_twofa(sshd:auth): user=root rhost=- result=success (???"
    assert log.clean_text("x" * 1001) == "x" * 997 + "..." and log.clean_text("x" * 1000) == "x" * 1000
    line = log.line("sshd", "alice", None, "error: policy", forged)
    assert line.isprintable() and line.count("result=") == 2 and line.endswith(f"({text})")
    assert line.startswith("pam_twofa(sshd:auth): user=alice rhost=- result=error: policy (boom)?")


def test_pam_module_cleans_as_the_package_does_when_the_package_does_not_load(monkeypatch):
    # pam_module.py cannot import pam_twofa.system.log when the package is broken: its inline
    # copy must give what the package's cleaner gives (the service also loses "/", as in adapter.py).
    import sys
    import syslog
    import types

    from pam_twofa import pam_module
    from pam_twofa.system import log

    broken = types.ModuleType("broken\nname\x1b[31m " + "z" * 300)  # has no authenticate: ImportError
    monkeypatch.setitem(sys.modules, "pam_twofa.login.adapter", broken)
    sent: list = []
    monkeypatch.setattr(syslog, "syslog", lambda priority, message: sent.append(message))

    class Handle:
        PAM_AUTH_ERR = 7
        service = "ss\th/d x" + "s" * 40

    assert pam_module.pam_sm_authenticate(Handle(), 0, []) == 7
    (line,) = sent
    service = log.clean(Handle.service, 32).replace("/", "?")
    assert line.startswith(f"pam_twofa({service}:auth): cannot load the pam_twofa package (ImportError: "), line
    detail = line.split(" package (", 1)[1].rsplit("):", 1)[0]
    assert detail.endswith("...") and len(detail) == 200, detail
    assert "\n" not in line and "\x1b" not in line and line.isprintable()
    with pytest.raises(ImportError) as info:
        from pam_twofa.login.adapter import authenticate  # noqa: F401
    assert detail == log.clean_text(f"ImportError: {info.value}", 200)
