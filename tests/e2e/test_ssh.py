"""SSH logins against real sshd + pam-twofa in Docker (the third test layer).

Users, policy and helpers: see conftest.py. Every login is a new SSH
connection. paramiko drives keyboard-interactive; one scenario uses the
OpenSSH client.
"""

from __future__ import annotations

import os
import shlex
import smtplib
import subprocess
from email.message import EmailMessage

import pytest
from e2e_harness import (
    ALICE_SECRET,
    CODE_PROMPT,
    DAVE_SECRET,
    KEY_PORT,
    PASSWORD_PORT,
    PASSWORDS,
    PROJECT,
    current_code,
    ssh_login,
    wait_for_fresh_step,
    wrong_code,
)

pytestmark = pytest.mark.e2e

MSG_BAD = "Wrong verification code."
MSG_REPLAYED = "already used"
MSG_LOCKED = "locked until"
MSG_NOT_WORKING = "not working on this host"
MSG_NOT_ENROLLED = "must use two-factor authentication"


def alice_login(**kwargs):
    kwargs.setdefault("password", PASSWORDS["alice"])
    return ssh_login(PASSWORD_PORT, "alice", **kwargs)


@pytest.fixture
def alice(password_host, enroll):
    enroll(password_host, "alice", ALICE_SECRET)
    return password_host


@pytest.fixture
def dave(key_host, enroll):
    enroll(key_host, "dave", DAVE_SECRET)
    return key_host


# --------------------------------------------------------------------------
# The harness itself


def test_containers_use_host_networking_only(hosts):
    for host in hosts.values():
        mode = subprocess.run(
            ["docker", "inspect", "-f", "{{.HostConfig.NetworkMode}}", host.container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert mode == "host", host.service
    networks = subprocess.run(
        ["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [n for n in networks if n.startswith(PROJECT)], networks


def test_sshd_config_is_the_readme_one(hosts):
    """Both hosts run the stack the README prescribes (and no PasswordAuthentication)."""
    for stack, methods in (("password", "keyboard-interactive"), ("key", "publickey,keyboard-interactive:pam")):
        effective = hosts[stack].run(["/usr/sbin/sshd", "-T"]).stdout.lower().splitlines()
        assert "passwordauthentication no" in effective
        assert "kbdinteractiveauthentication yes" in effective
        assert "usepam yes" in effective
        assert f"authenticationmethods {methods}" in effective
        assert any(
            line.startswith("auth required") and "pam_python.so" in line
            for line in hosts[stack].run(["cat", "/etc/pam.d/sshd"]).stdout.splitlines()
        )


# --------------------------------------------------------------------------
# Password + code


def test_password_and_code_succeeds_and_runs_a_command(alice):
    login = alice_login(code=lambda: current_code(ALICE_SECRET), command="id -un; echo ran-$((6*7))")
    assert login.ok, login
    assert login.prompts == ["Password: ", CODE_PROMPT]
    assert login.exit_status == 0
    assert login.output.split() == ["alice", "ran-42"]


def test_wrong_code_fails(alice):
    login = alice_login(code=wrong_code(ALICE_SECRET))
    assert not login.ok, login
    assert login.asked_code, "the code prompt must come after a right password"
    assert MSG_BAD in login.text


def test_wrong_password_stops_before_the_code(alice):
    login = alice_login(password="not-her-password", code=lambda: current_code(ALICE_SECRET))
    assert not login.ok
    assert not login.asked_code, login.prompts


def test_replayed_code_fails(alice):
    wait_for_fresh_step()
    code = current_code(ALICE_SECRET)
    first = alice_login(code=code)
    assert first.ok, first
    second = alice_login(code=code)
    assert not second.ok, second
    assert second.asked_code
    assert MSG_REPLAYED in second.text, second.messages


def test_lockout_after_max_failures_then_admin_unlock(alice):
    # rate_limit.max_failures: 3 in the scenario policy.
    for attempt in range(1, 4):
        login = alice_login(code=wrong_code(ALICE_SECRET))
        assert not login.ok and login.asked_code, (attempt, login)
        assert (MSG_LOCKED in login.text) == (attempt == 3), (attempt, login.messages)
    # Locked: even the right code is refused.
    locked = alice_login(code=lambda: current_code(ALICE_SECRET))
    assert not locked.ok, locked
    assert MSG_LOCKED in locked.text, locked.messages

    status = alice.run(["twofa-admin", "status", "alice", "--json"]).stdout
    assert '"locked": true' in status
    unlock = alice.run(["twofa-admin", "unlock", "alice"])
    assert "unlocked" in unlock.stdout

    after = alice_login(code=lambda: current_code(ALICE_SECRET))
    assert after.ok, after
    assert after.asked_code


def test_unenrolled_user_not_enforced_is_not_asked(password_host, scenario):
    login = ssh_login(PASSWORD_PORT, "erin", password=PASSWORDS["erin"], code="000000", command="id -un")
    assert login.ok, login
    assert login.prompts == ["Password: "]
    assert login.output.strip() == "erin"


def test_enforced_unenrolled_user_is_refused(password_host, scenario):
    login = ssh_login(PASSWORD_PORT, "frank", password=PASSWORDS["frank"], code="000000")
    assert not login.ok, login
    assert not login.asked_code
    assert MSG_NOT_ENROLLED in login.text, login.messages


def test_admin_disable_then_policy_for_unenrolled(alice):
    before = alice_login(code=lambda: current_code(ALICE_SECRET))
    assert before.ok and before.asked_code, before

    done = alice.run(["twofa-admin", "disable", "alice", "--yes"])
    assert "2FA disabled" in done.stdout
    assert "no code is asked" in done.stdout  # not enforced: the policy skips her

    after = alice_login(code=lambda: current_code(ALICE_SECRET), command="id -un")
    assert after.ok, after
    assert after.prompts == ["Password: "], "her old code must no longer be asked"
    assert after.output.strip() == "alice"


@pytest.fixture
def broken_policy(scenario, password_host):
    original = password_host.run(["cat", "/etc/pam-twofa/policy.yaml"]).stdout
    password_host.write_policy(original + "exempt:\n  users: [alice\n")  # YAML syntax error
    assert password_host.run(["twofa-admin", "check"], check=False).returncode == 2
    yield
    password_host.write_policy(original)
    password_host.run(["twofa-admin", "check"])


def test_broken_policy_fails_closed(alice, broken_policy):
    login = alice_login(code=lambda: current_code(ALICE_SECRET))
    assert not login.ok, login
    assert MSG_NOT_WORKING in login.text, login.messages


# --------------------------------------------------------------------------
# Exempt users, in both stacks


def test_exempt_user_password_stack(password_host, scenario):
    login = ssh_login(PASSWORD_PORT, "bob", password=PASSWORDS["bob"], code="000000", command="id -un")
    assert login.ok, login
    assert login.prompts == ["Password: "]
    assert login.output.strip() == "bob"


def test_exempt_user_key_stack(key_host, scenario, user_key):
    login = ssh_login(KEY_PORT, "bob", pkey=user_key[0], code="000000", command="id -un")
    assert login.after_key == ["keyboard-interactive"] and not login.key_alone, login
    assert login.ok, login
    assert login.prompts == []
    assert login.output.strip() == "bob"


# --------------------------------------------------------------------------
# Key + code


def test_key_and_code_succeeds(dave, user_key):
    login = ssh_login(KEY_PORT, "dave", pkey=user_key[0], code=lambda: current_code(DAVE_SECRET))
    assert login.after_key == ["keyboard-interactive"], "sshd must answer the key with partial success"
    assert not login.key_alone
    assert login.ok, login
    assert login.prompts == [CODE_PROMPT], "no password prompt in the key stack"
    assert login.output.strip() == "dave"


def test_key_without_code_is_not_enough(dave, user_key):
    login = ssh_login(KEY_PORT, "dave", pkey=user_key[0], code=wrong_code(DAVE_SECRET))
    assert login.after_key == ["keyboard-interactive"]
    assert not login.ok, login
    assert login.asked_code


def test_code_without_key_is_not_enough(dave):
    login = ssh_login(KEY_PORT, "dave", password=PASSWORDS["dave"], code=lambda: current_code(DAVE_SECRET))
    assert not login.ok, login
    assert not login.asked_code, "keyboard-interactive is not offered before the key"


# --------------------------------------------------------------------------
# The OpenSSH client


def openssh(key_file, user, askpass_dir, code: str, command: str = "id -un"):
    """``ssh`` with the key, answering keyboard-interactive prompts through SSH_ASKPASS."""
    prompts_file = askpass_dir / "prompts"
    askpass = askpass_dir / "askpass"
    askpass.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$1\" >> {shlex.quote(str(prompts_file))}\n"
        'case "$1" in *"Verification code"*) ;; *) exit 1 ;; esac\n'
        f"echo {shlex.quote(code)}\n"
    )
    askpass.chmod(0o700)
    env = dict(os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    done = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(key_file),
            "-p",
            str(KEY_PORT),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=no",
            "-o",
            "PreferredAuthentications=publickey,keyboard-interactive",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "ConnectTimeout=10",
            f"{user}@127.0.0.1",
            command,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    prompts = prompts_file.read_text().splitlines() if prompts_file.exists() else []
    return done, prompts


def test_openssh_client_key_and_code(dave, user_key, tmp_path):
    wait_for_fresh_step()
    done, prompts = openssh(user_key[1], "dave", tmp_path, current_code(DAVE_SECRET))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "dave"
    assert len(prompts) == 1 and "Verification code" in prompts[0], prompts


def test_openssh_client_wrong_code_refused(dave, user_key, tmp_path):
    done, prompts = openssh(user_key[1], "dave", tmp_path, wrong_code(DAVE_SECRET))
    assert done.returncode == 255, (done.returncode, done.stdout, done.stderr)
    assert "Permission denied" in done.stderr
    assert done.stdout == ""
    assert prompts and "Verification code" in prompts[0], prompts


# --------------------------------------------------------------------------
# Syslog and SMTP


def test_syslog_records_outcomes_without_the_code(alice):
    mark = alice.syslog_mark()
    code = current_code(ALICE_SECRET)
    assert alice_login(code=code).ok
    bad = wrong_code(ALICE_SECRET)
    assert not alice_login(code=bad).ok
    lines = [line for line in alice.syslog()[mark:].splitlines() if "pam_twofa(" in line]
    assert any("user=alice" in line and "rhost=127.0.0.1" in line for line in lines), lines
    assert any("bad code" in line for line in lines), lines
    for line in lines:
        assert code not in line and bad not in line and PASSWORDS["alice"] not in line and ALICE_SECRET not in line


def test_smtp_server_reachable_from_the_containers(hosts, smtp_server):
    """The SMTP server of the email scenarios runs here; the containers reach it at 127.0.0.1."""
    smtp_server.clear()
    for host in hosts.values():
        host.run(
            [
                "python3",
                "-c",
                "import smtplib, sys\n"
                "from email.message import EmailMessage\n"
                "m = EmailMessage(); m['From'] = 'pam-twofa@' + sys.argv[3]; m['To'] = 'alice@example.com'\n"
                "m['Subject'] = 'hello from ' + sys.argv[3]; m.set_content('test')\n"
                "with smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=10) as s: s.send_message(m)\n",
                smtp_server.host,
                str(smtp_server.port),
                host.service,
            ]
        )
    # and from the test process itself
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "tests@localhost", "bob@example.com", "from pytest"
    message.set_content("test")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.send_message(message)
    received = smtp_server.wait_for(3)
    assert sorted(m["Subject"] for m in received) == ["from pytest", "hello from sshd-key", "hello from sshd-password"]
    assert received[0].envelope_to in (["alice@example.com"], ["bob@example.com"])
