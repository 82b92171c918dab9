"""Helpers for the end to end tests (tests/e2e): the hosts, codes, SSH logins, SMTP.

Fixtures are in conftest.py, which documents the scenario.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pyotp
from support.codes import code_not_in
from support.mail import Received, received

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"
PROJECT = "pam-twofa-e2e"  # the compose project of a distro is PROJECT-DISTRO
# The Debian releases the suite runs on, in order (PAM_TWOFA_E2E_DISTROS selects some).
DISTROS = ("bookworm", "trixie")  # Debian 12, Debian 13
BASE_IMAGE = "pam-twofa-base:bookworm"
LOOPBACK = "127.0.0.1"
LOCK_FILE = "/var/tmp/pam-twofa-e2e.lock"
LOCK_WAIT = 1800  # seconds to wait for another e2e run on this machine

PASSWORD_PORT = 2201
KEY_PORT = 2202

ALICE_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
DAVE_SECRET = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA"
BOB_SECRET = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U"
PASSWORDS = {"alice": "pw-alice", "bob": "pw-bob", "dave": "pw-dave", "erin": "pw-erin", "frank": "pw-frank"}

POLICY_PATH = "/etc/pam-twofa/policy.yaml"
POLICY_BACKUP = "/etc/pam-twofa/policy.yaml.e2e-orig"
SYSLOG_FILE = "/var/log/e2e-syslog"
CODE_PROMPT = "Verification code: "

# The scenario's policy: bob is exempt, members of `twofa` must use 2FA (and
# are refused until enrolled), everyone else is asked only once enrolled.
SCRATCH_POLICY = """\
# written by tests/e2e/conftest.py for the end to end scenario
version: 1
enforce:
  mode: groups
  groups: [twofa]
  unenrolled: deny
exempt:
  users: [bob]
totp:
  window: 1
rate_limit:
  max_failures: 3
  per_seconds: 900
on_error: deny
"""

STEP = 30


# --------------------------------------------------------------------------
# Codes


def wait_for_fresh_step(margin: float = 3.0) -> None:
    """Return at once unless fewer than ``margin`` seconds remain in this 30 s step."""
    remaining = STEP - time.time() % STEP
    if remaining < margin:
        time.sleep(remaining + 0.2)


def totp_at(secret: str, offset_steps: int = 0, now: float | None = None) -> str:
    now = time.time() if now is None else now
    return pyotp.TOTP(secret).at(int(now) + offset_steps * STEP)


def current_code(secret: str) -> str:
    return totp_at(secret)


def wrong_code(secret: str) -> str:
    """A 6-digit code that matches none of the steps around now."""
    return code_not_in({totp_at(secret, k) for k in range(-4, 5)}, start=int(totp_at(secret)), stride=123457)


# --------------------------------------------------------------------------
# Containers


# The distro whose containers the session is running now (set by the ``distro`` fixture).
_active = {"distro": DISTROS[0]}


def base_image(distro: str) -> str:
    return f"pam-twofa-base:{distro}"


def project(distro: str | None = None) -> str:
    return f"{PROJECT}-{distro or _active['distro']}"


def activate(distro: str) -> None:
    """Point compose (ours and pytest-docker's, through the environment) at ``distro``'s images."""
    _active["distro"] = distro
    os.environ["PAM_TWOFA_BASE_IMAGE"] = base_image(distro)
    # docker/docker-compose.yml: pam-twofa-sshd:password (Debian 12), pam-twofa-sshd:password-trixie, ...
    os.environ["PAM_TWOFA_IMAGE_SUFFIX"] = "" if distro == DISTROS[0] else f"-{distro}"


def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "-p", project(), *args],
        capture_output=True,
        text=True,
        check=check,
    )


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


@dataclass
class Host:
    service: str
    stack: str
    port: int
    container: str

    def run(
        self, command, *, input: str | None = None, check: bool = True, user: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """``docker exec`` a command (argv list, or a string for bash -c) in the container."""
        argv = ["bash", "-c", command] if isinstance(command, str) else list(command)
        docker = ["docker", "exec", "-i"] + (["-u", user] if user else []) + [self.container]
        done = subprocess.run(docker + argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{self.service}: {argv!r} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def write_file(self, path: str, text: str, mode: str = "0644") -> None:
        """Write ``text`` to ``path`` as root: a new file renamed into place (a new inode)."""
        tmp = f"{path}.e2e-tmp"
        self.run(
            f"cat > {shlex.quote(tmp)} && chown root:root {shlex.quote(tmp)} && chmod {mode} {shlex.quote(tmp)}"
            f" && mv -f {shlex.quote(tmp)} {shlex.quote(path)}",
            input=text,
        )

    def write_policy(self, text: str) -> None:
        self.write_file(POLICY_PATH, text)

    def syslog(self) -> str:
        return self.run(["cat", SYSLOG_FILE], check=False).stdout

    def syslog_mark(self) -> int:
        """The current length of the captured syslog, to read only what follows."""
        return len(self.syslog())

    def state(self) -> list:
        """[running ("true"/"false"), network mode]."""
        done = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}} {{.HostConfig.NetworkMode}}", self.container],
            capture_output=True,
            text=True,
        )
        return done.stdout.split() or ["missing"]

    def logs(self, tail: int = 40) -> str:
        done = subprocess.run(["docker", "logs", "--tail", str(tail), self.container], capture_output=True, text=True)
        return done.stdout + done.stderr


# A tiny syslog daemon: the containers have none, and the module logs to /dev/log.
SYSLOG_LISTENER = f"""
import os, socket
try:
    os.unlink("/dev/log")
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
os.chmod("/dev/log", 0o666)
with open({SYSLOG_FILE!r}, "ab", buffering=0) as out:
    while True:
        out.write(s.recv(65536).rstrip(b"\\0\\n") + b"\\n")
"""


# --------------------------------------------------------------------------
# Logging in with paramiko


@dataclass
class Login:
    ok: bool = False
    prompts: list = field(default_factory=list)  # prompt texts, in order
    messages: list = field(default_factory=list)  # titles and instructions (PAM info and error messages)
    codes_sent: list = field(default_factory=list)
    after_key: list | None = None  # methods still required after the SSH key (key stack)
    key_alone: bool = False  # authenticated by the key alone (must never happen)
    error: str = ""
    output: str = ""
    exit_status: int | None = None

    @property
    def asked_code(self) -> bool:
        return CODE_PROMPT in self.prompts

    @property
    def text(self) -> str:
        return "\n".join(self.messages)


def ssh_login(
    port: int,
    user: str,
    *,
    password: str | None = None,
    code=None,
    pkey: paramiko.PKey | None = None,
    command: str | None = "id -un",
    timeout: float = 30,
    answer=None,
    source: str | None = None,
) -> Login:
    """One SSH connection: optional public key, then keyboard-interactive, then ``command``.

    ``code`` is a string or a callable called when the code prompt arrives.
    ``answer(prompt)``, if given, answers any other prompt (e.g. ``Code sent
    to ...``) when it returns a string. Unknown prompts get an empty answer.
    """
    result = Login()
    # ``source``: another loopback address to connect from (127.0.0.2...), a second client address.
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout, source_address=(source, 0) if source else None)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.auth_timeout = timeout
    try:
        transport.start_client(timeout=timeout)

        if pkey is not None:
            try:
                result.after_key = transport.auth_publickey(user, pkey)
            except paramiko.AuthenticationException as exc:
                result.error = f"publickey: {exc}"
                return result
            result.key_alone = transport.is_authenticated()

        def handler(title, instructions, prompts):
            result.messages.extend(text for text in (title, instructions) if text)
            answers = []
            for text, _echo in prompts:
                result.prompts.append(text)
                if text.startswith("Password"):
                    answers.append(password or "")
                elif text == CODE_PROMPT and code is not None:
                    value = code() if callable(code) else code
                    result.codes_sent.append(value)
                    answers.append(value)
                else:
                    reply = answer(text) if answer is not None else None
                    answers.append(reply if reply is not None else "")
            return answers

        if not transport.is_authenticated():
            try:
                transport.auth_interactive(user, handler)
            except paramiko.AuthenticationException as exc:
                result.error = f"keyboard-interactive: {exc}"
                return result
        result.ok = transport.is_authenticated()
        if result.ok and command:
            channel = transport.open_session(timeout=timeout)
            channel.settimeout(timeout)
            channel.exec_command(command)
            chunks = []
            while True:
                data = channel.recv(4096)
                if not data:
                    break
                chunks.append(data)
            result.exit_status = channel.recv_exit_status()
            result.output = b"".join(chunks).decode()
        return result
    finally:
        transport.close()


# --------------------------------------------------------------------------
# SMTP


@dataclass
class SMTPServer:
    host: str
    port: int
    messages: list[Received] = field(default_factory=list)  # with envelope attributes
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def wait_for(self, count: int = 1, timeout: float = 15) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} message(s) within {timeout} s, got {len(self.messages)}")


MAILED_CODE = re.compile(r"Your one-time code is: (\d+)")
MAIL_PROMPT = "Code sent to e***@example.com: "  # the test users' names start with "e"


def mail_prompt(prompt: str) -> bool:
    """sshd puts the module's info text (the enroll hint) on the lines before the prompt itself."""
    return prompt.rsplit("\n", 1)[-1] == MAIL_PROMPT


def email_settings(smtp: SMTPServer) -> str:
    """The lines under a policy's ``email:`` that send to ``smtp`` (each test adds its own limits)."""
    return (
        '  address: "{user}@example.com"\n'
        '  from: "pam-twofa@{hostname}"\n'
        "  smtp:\n"
        f"    host: {smtp.host}\n"
        f"    port: {smtp.port}\n"
        "    timeout: 10\n"
    )


@contextmanager
def running_smtp_server() -> Iterator[SMTPServer]:
    """A real SMTP server (aiosmtpd) in this process on 127.0.0.1, which host-networked containers reach.

    Each received mail is appended to ``messages`` as an EmailMessage with
    ``envelope_from`` and ``envelope_to`` attributes.
    """
    from aiosmtpd.controller import Controller

    server = SMTPServer(LOOPBACK, free_port())

    class Collect:
        async def handle_DATA(self, _server, _session, envelope):
            message = received(envelope.original_content or envelope.content)
            message.envelope_from = envelope.mail_from
            message.envelope_to = list(envelope.rcpt_tos)
            with server._lock:
                server.messages.append(message)
            return "250 Message accepted for delivery"

    controller = Controller(Collect(), hostname=server.host, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# Images outside the compose session (package and upgrade tests)


def build_sshd_image(tag: str, distro: str = DISTROS[0], stack: str = "password", port: int = 2203) -> str:
    """docker/Dockerfile built as the compose file builds it (layers shared), for a container of a test's own."""
    subprocess.run(["bash", str(REPO / "docker" / "base-image.sh"), base_image(distro)], check=True)
    subprocess.run(
        ["docker", "build", "-q", "--network", "host", "-f", "docker/Dockerfile",
         "--build-arg", f"BASE={base_image(distro)}", "--build-arg", f"STACK={stack}", "--build-arg", f"PORT={port}",
         "-t", tag, "."],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return tag
