"""Real SSH clients answering the password and code prompts (issue 25): sftp, scp, plink, ControlMaster.

paramiko drives the other e2e tests; here the programs users run do, on a
pseudo-terminal (pexpect), each typing the password and then the
verification code of a freshly enrolled user of the password + code host:

- OpenSSH ``sftp`` (``-b`` would turn keyboard-interactive off: the commands
  are typed at its ``sftp>`` prompt instead) and ``scp`` (SFTP protocol, the
  default since OpenSSH 9.0, and the legacy protocol with ``-O``);
- PuTTY's ``plink`` (Debian's putty-tools), host key pinned with
  ``-hostkey``, with PuTTY's "Press Return to begin session" step;
- a second OpenSSH session through a ``ControlMaster`` connection, which
  must ask nothing and must not even reach PAM.

Every client runs with LC_ALL=C.UTF-8, ``-F /dev/null`` (no ssh_config of
this machine) and the container's host key pinned in a known_hosts file of
the test (``StrictHostKeyChecking=yes``): a wrong key fails the test instead
of being accepted. Each test has users of its own (``make_user``): TOTP replay
protection lets one code step log in once per user.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pexpect
import pyotp
import pytest
from e2e_harness import CODE_PROMPT, LOOPBACK, Host, current_code, wrong_code
from e2e_terminal import (
    PLINK,
    PLINK_ANTISPOOF,
    ClientTerminal,
    Terminal,
    client_env,
    host_key_fingerprint,
    host_public_key,
    openssh_options,
    plink_terminal,
    write_known_hosts,
)

pytestmark = pytest.mark.e2e

PASSWORD_PROMPT = "Password: "  # pam_unix's; OpenSSH shows it as "(user@host) Password: "
MSG_BAD = "Wrong verification code."
SFTP_PROMPT = "sftp> "


@dataclass
class Account:
    """An enrolled user of the password host, with what it takes to log in."""

    host: Host
    name: str
    password: str
    secret: str

    @property
    def target(self) -> str:
        return f"{self.name}@{LOOPBACK}"

    def home(self, path: str = "") -> str:
        return f"/home/{self.name}/{path}"

    def pam_lines(self, mark: int) -> list:
        """The module's syslog lines about this user since ``mark``."""
        return [
            line
            for line in self.host.syslog()[mark:].splitlines()
            if "pam_twofa(" in line and f"user={self.name} " in line
        ]


@pytest.fixture
def new_account(password_host, make_user, enroll):
    """``new_account()``: a new user of the password host, enrolled with a secret of its own."""

    def make() -> Account:
        name, password = make_user(password_host)
        secret = pyotp.random_base32()
        enroll(password_host, name, secret)
        return Account(password_host, name, password, secret)

    return make


@pytest.fixture
def account(new_account) -> Account:
    return new_account()


@pytest.fixture
def known_hosts(password_host, tmp_path) -> Path:
    return write_known_hosts(password_host, tmp_path / "known_hosts")


@pytest.fixture
def env(tmp_path) -> dict:
    return client_env(tmp_path / "home")


def answer(term: Terminal, account: Account, code: str | None = None) -> None:
    """Type the password, then the code (the current one unless given) when the client asks."""
    term.expect(PASSWORD_PROMPT)
    term.send_line(account.password)
    term.expect(CODE_PROMPT)
    # computed when asked for, so that the code is the one of the step the module checks
    term.send_line(code if code is not None else current_code(account.secret))


def owner_and_text(host: Host, path: str) -> tuple[str, str]:
    done = host.run(["bash", "-c", 'stat -c %U "$1" && cat "$1"', "-", path])
    owner, _, text = done.stdout.partition("\n")
    return owner, text


def assert_nothing_within(term: Terminal, text: str, seconds: float) -> None:
    """``text`` must not arrive within ``seconds`` (the client is waiting for the user)."""
    index = term.child.expect_exact([text, pexpect.EOF, pexpect.TIMEOUT], timeout=seconds)
    assert index == 2, f"expected nothing for {seconds} s; terminal so far:\n{term.transcript[-2000:]}"


# --------------------------------------------------------------------------
# OpenSSH sftp


def test_sftp_put_get_and_ls(account, known_hosts, env, tmp_path):
    up = tmp_path / "up.txt"
    up.write_text(f"uploaded by sftp for {account.name}\n")
    down_text = f"downloaded by sftp, {os.urandom(6).hex()}\n"
    account.host.run(
        ["install", "-o", account.name, "-m", "0644", "/dev/stdin", account.home("down.txt")], input=down_text
    )

    term = ClientTerminal(["sftp", *openssh_options(account.host.port, known_hosts), account.target], env)
    try:
        answer(term, account)
        term.expect(SFTP_PROMPT)
        term.send_line(f"put {up} up.txt")
        term.expect(SFTP_PROMPT)
        term.send_line(f"get down.txt {tmp_path / 'down.txt'}")
        term.expect(SFTP_PROMPT)
        term.send_line("ls -1")
        listing = term.expect(SFTP_PROMPT)
        term.send_line("bye")
        assert term.wait_exit() == 0, term.transcript
    finally:
        term.close()

    assert {"up.txt", "down.txt"} <= set(listing.split()), listing
    assert owner_and_text(account.host, account.home("up.txt")) == (account.name, up.read_text())
    assert (tmp_path / "down.txt").read_text() == down_text


def refused(program: str, account: Account, known_hosts: Path, env: dict, *args: str) -> Terminal:
    """Run ``PROGRAM ARGS`` answering the code prompt with a wrong code; return the ended terminal."""
    term = ClientTerminal([program, *openssh_options(account.host.port, known_hosts), *args], env)
    try:
        answer(term, account, code=wrong_code(account.secret))
        status = term.wait_exit()
    finally:
        term.close()
    assert status != 0, term.transcript
    return term


def test_sftp_wrong_code_is_refused(account, known_hosts, env, tmp_path):
    term = refused("sftp", account, known_hosts, env, account.target)
    assert MSG_BAD in term.transcript  # the module's message, shown by the client
    assert "Permission denied" in term.transcript
    assert SFTP_PROMPT not in term.transcript


# --------------------------------------------------------------------------
# OpenSSH scp


def scp(account: Account, known_hosts: Path, env: dict, *args: str) -> Terminal:
    """Run ``scp ARGS`` answering the prompts; return the ended terminal."""
    term = ClientTerminal(["scp", *openssh_options(account.host.port, known_hosts), *args], env)
    try:
        answer(term, account)
        status = term.wait_exit()
    finally:
        term.close()
    assert status == 0, term.transcript
    return term


def test_scp_upload_sftp_protocol(account, known_hosts, env, tmp_path):
    """scp's default protocol since OpenSSH 9.0 is SFTP."""
    source = tmp_path / "report.txt"
    source.write_text("copied by scp\n" + os.urandom(8).hex() + "\n")
    scp(account, known_hosts, env, str(source), f"{account.target}:report.txt")
    assert owner_and_text(account.host, account.home("report.txt")) == (account.name, source.read_text())


def test_scp_download_legacy_protocol(account, known_hosts, env, tmp_path):
    """``scp -O``: the legacy protocol, where the remote side runs ``scp -f`` in the user's shell."""
    text = "fetched by scp -O " + os.urandom(8).hex() + "\n"
    account.host.run(["install", "-o", account.name, "-m", "0644", "/dev/stdin", account.home("data.txt")], input=text)
    scp(account, known_hosts, env, "-O", f"{account.target}:data.txt", str(tmp_path / "data.txt"))
    assert (tmp_path / "data.txt").read_text() == text


def test_scp_wrong_code_copies_nothing(account, known_hosts, env, tmp_path):
    source = tmp_path / "never.txt"
    source.write_text("must not arrive\n")
    term = refused("scp", account, known_hosts, env, str(source), f"{account.target}:never.txt")
    assert MSG_BAD in term.transcript
    assert account.host.run(["test", "-e", account.home("never.txt")], check=False).returncode == 1


# --------------------------------------------------------------------------
# PuTTY's plink


@pytest.fixture
def plink_installed() -> None:
    assert Path(PLINK).exists(), f"{PLINK} is missing: install Debian's putty-tools (scripts/test.sh does)"


def test_plink_password_code_and_press_return(plink_installed, account, env):
    """plink answers both prompts, then holds the session until Return (PuTTY's anti-spoofing step)."""
    fingerprint = host_key_fingerprint(account.host)
    term = plink_terminal(account.host.port, account.name, fingerprint, "echo plink-$((6*7)); id -un", env)
    try:
        answer(term, account)
        term.expect(PLINK_ANTISPOOF)
        # The command has not run yet: plink waits for the user to press Return.
        assert_nothing_within(term, "plink-42", seconds=2)
        term.send_line("")
        term.expect("plink-42")
        status = term.wait_exit()
    finally:
        term.close()
    assert status == 0, term.transcript
    lines = term.transcript.split("\n")
    assert lines[lines.index("plink-42") + 1] == account.name, term.transcript
    # plink frames the server's prompts and says whence they came
    assert "Keyboard-interactive authentication prompts from server" in term.transcript


def test_plink_wrong_code_is_refused(plink_installed, account, env):
    fingerprint = host_key_fingerprint(account.host)
    term = plink_terminal(account.host.port, account.name, fingerprint, "echo plink-ran", env)
    try:
        answer(term, account, code=wrong_code(account.secret))
        # Refused: the module's message, then plink starts keyboard-interactive over (the password again).
        term.expect(MSG_BAD)
        term.expect(PASSWORD_PROMPT)
    finally:
        term.close()
    assert PLINK_ANTISPOOF not in term.transcript
    assert "plink-ran" not in term.transcript


# --------------------------------------------------------------------------
# paramiko's shortcut


def test_paramiko_connect_with_password_sends_it_as_the_code(account):
    """``SSHClient.connect(password=...)`` is no way in: its keyboard-interactive fallback answers
    every one-field prompt with the password, the code prompt included (a refused code, counted
    toward the lockout). A program must pass a handler to ``Transport.auth_interactive``
    (e2e_harness.ssh_login does)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    kind, blob = host_public_key(account.host).split()
    client.get_host_keys().add(
        f"[{LOOPBACK}]:{account.host.port}", kind, paramiko.Ed25519Key(data=base64.b64decode(blob))
    )
    mark = account.host.syslog_mark()
    try:
        with pytest.raises(paramiko.AuthenticationException):
            client.connect(
                LOOPBACK,
                account.host.port,
                username=account.name,
                password=account.password,
                look_for_keys=False,
                allow_agent=False,
                timeout=30,
            )
    finally:
        client.close()
    lines = account.pam_lines(mark)
    assert any("bad code" in line for line in lines), lines


# --------------------------------------------------------------------------
# OpenSSH connection sharing (ControlMaster)


def control(socket: Path, command: str, env: dict) -> subprocess.CompletedProcess:
    """``ssh -O COMMAND`` to the master listening on ``socket``."""
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", f"ControlPath={socket}", "-O", command, LOOPBACK],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_control_master_second_session_asks_nothing(account, known_hosts, env, tmp_path):
    socket = tmp_path / "cm"
    assert len(str(socket)) < 100, "a Unix socket path must stay short"
    options = openssh_options(account.host.port, known_hosts)
    master = ["-o", "ControlMaster=yes", "-o", f"ControlPath={socket}", "-o", "ControlPersist=60"]
    before_first = account.host.syslog_mark()
    first = ClientTerminal(["ssh", *options, *master, account.target, "echo first-$((6*7))"], env)
    try:
        answer(first, account)
        first.expect("first-42")
        assert first.wait_exit() == 0, first.transcript
    finally:
        first.close()
    # the control: the first login went through the module (and the syslog check below can see it)
    assert any("result=" in line for line in account.pam_lines(before_first)), account.host.syslog()[before_first:]

    checked = control(socket, "check", env)
    master_pid = re.search(r"pid=(\d+)", checked.stderr)
    try:
        assert checked.returncode == 0 and master_pid, checked
        mark = account.host.syslog_mark()
        second = ClientTerminal(
            ["ssh", *options, "-o", "ControlMaster=no", "-o", f"ControlPath={socket}", account.target,
             "echo second-$((6*7)); id -un"],
            env,
        )  # fmt: skip
        try:
            index = second.child.expect_exact(["second-42", PASSWORD_PROMPT, CODE_PROMPT, pexpect.EOF], timeout=20)
            assert index == 0, f"the second session must ask nothing:\n{second.transcript}"
            status = second.wait_exit()
        finally:
            second.close()
        assert status == 0, second.transcript
        assert "Password" not in second.transcript and "code" not in second.transcript, second.transcript
        assert second.transcript.split("second-42", 1)[1].split() == [account.name]
        # The session rode on the master's connection: sshd never ran PAM's auth for it.
        assert account.pam_lines(mark) == []
    finally:
        stopped = control(socket, "exit", env)
        if stopped.returncode != 0 and master_pid:
            os.kill(int(master_pid.group(1)), 15)  # the master this test started, by its pid
    assert stopped.returncode == 0, stopped
