"""Real terminals for the end to end enrollment tests: pexpect, QR decoding, records.

``twofa-enroll`` is driven as a user would drive it, through a pseudo-terminal:

- ``docker exec -it -u USER CONTAINER twofa-enroll ...``: docker allocates a
  pty in the container, pexpect one on this side;
- an OpenSSH session with a pty (``ssh -tt``) into a container's sshd, where
  the user types ``twofa-enroll`` at their shell prompt.

The QR code the tool prints is rebuilt from the captured terminal output
(ANSI escapes stripped), drawn as a PNG with PIL and decoded by ``zbarimg``
(zbar), a decoder independent of the ``qrcode`` package that drew it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
from e2e_harness import LOOPBACK, Host

STATE_USERS = "/var/lib/pam-twofa/users"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
RECOVERY_CODE = re.compile(r"\b[a-z2-9]{5}-[a-z2-9]{5}\b")

PASSWORD_PROMPT = "Password for {user}: "
CODE_PROMPT = "Code from the app (6 digits): "
REPLACE_PROMPT = "Replace the secret (the old one stops working)? [y/N] "
WRONG_CODE = "That code does not match."
WRONG_PASSWORD = "Wrong password, try again."
INTERRUPTED = "nothing was changed"
SHELL_PROMPT = "E2E-SHELL> "


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def normalize(text: str) -> str:
    """Terminal output as lines: CRLF (the pty's onlcr) and stray CRs folded to LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


class Terminal:
    """A pexpect session with the whole output kept (``transcript``)."""

    def __init__(self, argv: list, timeout: float = 30, env: dict | None = None) -> None:
        self._log = io.StringIO()
        self.child = pexpect.spawn(
            argv[0],
            argv[1:],
            env=env,  # None: this process's
            encoding="utf-8",
            codec_errors="replace",
            dimensions=(60, 200),
            timeout=timeout,
            echo=True,
        )
        self.child.logfile_read = self._log

    @property
    def transcript(self) -> str:
        return normalize(self._log.getvalue())

    def expect(self, text: str, timeout: float | None = None) -> str:
        """Wait for the literal ``text``; return what came before it."""
        try:
            self.child.expect_exact(text, timeout=timeout if timeout is not None else -1)
        except (pexpect.TIMEOUT, pexpect.EOF) as exc:
            raise AssertionError(f"expected {text!r}; terminal so far:\n{self.transcript[-3000:]}") from exc
        return self.child.before

    def send_line(self, text: str) -> None:
        self.child.sendline(text)

    def interrupt(self) -> None:
        """Ctrl-C, as typed on the keyboard (the terminal's VINTR character)."""
        self.child.sendintr()

    def wait_exit(self, timeout: float = 30) -> int | None:
        """Read to EOF and return the exit status (None if killed by a signal)."""
        try:
            self.child.expect(pexpect.EOF, timeout=timeout)
        except pexpect.TIMEOUT as exc:
            raise AssertionError(f"the program did not end; terminal so far:\n{self.transcript[-3000:]}") from exc
        self.child.close()
        return self.child.exitstatus

    def hang_up(self) -> None:
        """Close the terminal: the pty goes away (SIGHUP to what runs in it)."""
        self.child.close(force=True)

    def close(self) -> None:
        if self.child.isalive():
            self.child.close(force=True)


def enroll_terminal(host: Host, user: str, *args: str, timeout: float = 30) -> Terminal:
    """``twofa-enroll ARGS`` run by ``user`` in the container, on a real terminal (docker exec -it)."""
    return Terminal(["docker", "exec", "-it", "-u", user, host.container, "twofa-enroll", *args], timeout=timeout)


def ssh_terminal(port: int, user: str, password: str, code: str | None = None, timeout: float = 30) -> Terminal:
    """An interactive OpenSSH session (``ssh -tt``), logged in and at a shell prompt.

    The password is typed at the password prompt and ``code``, if given, at
    the verification code prompt that follows.
    """
    term = Terminal(
        [
            "ssh",
            "-tt",
            "-F",
            "/dev/null",
            "-p",
            str(port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "PreferredAuthentications=keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "IdentityAgent=none",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "ConnectTimeout=10",
            f"{user}@{LOOPBACK}",
        ],
        timeout=timeout,
    )
    term.expect("Password: ")
    term.send_line(password)
    if code is not None:
        term.expect("Verification code: ")
        term.send_line(code)
    # A prompt the echoed command line itself cannot match.
    term.send_line("PS1='E2E-''SHELL> '")
    term.expect(SHELL_PROMPT)
    return term


# --------------------------------------------------------------------------
# What twofa-enroll printed


@dataclass
class Shown:
    """The enrollment screen: QR code lines (raw, with escapes), grouped key, URI, recovery codes."""

    qr_lines: list = field(default_factory=list)
    grouped_secret: str = ""
    uri: str = ""
    recovery_codes: list = field(default_factory=list)

    @property
    def secret(self) -> str:
        return self.grouped_secret.replace(" ", "")


def parse_screen(transcript: str) -> Shown:
    """The parts of the last enrollment screen in ``transcript`` (normalized terminal text)."""
    shown = Shown()
    start = transcript.rfind("Scan this QR code")
    index = 1
    if start < 0:  # --qr none: no picture, so no "scan this"; the key comes first
        start, index = transcript.rfind("Add an account to your authenticator app"), 0
    assert start >= 0, f"no QR code screen in:\n{transcript[-2000:]}"
    lines = transcript[start:].split("\n")
    while index and index < len(lines) and not strip_ansi(lines[index]).startswith("Cannot scan it?"):
        if lines[index].strip():
            shown.qr_lines.append(lines[index])
        index += 1
    rest = [strip_ansi(line).strip() for line in lines[index:]]
    assert len(rest) >= 4 and rest[2].startswith("or open this URI"), rest[:4]
    shown.grouped_secret = rest[1]
    shown.uri = rest[3]
    codes_at = transcript.find("Recovery codes:", start)
    if codes_at >= 0:
        shown.recovery_codes = RECOVERY_CODE.findall(transcript[codes_at:])
    return shown


def recovery_codes(text: str) -> list:
    at = text.rfind("Recovery codes:")
    assert at >= 0, text[-2000:]
    return RECOVERY_CODE.findall(text[at:])


# --------------------------------------------------------------------------
# The QR code, decoded independently

# A half-block character: (top module dark, bottom module dark).
HALF_BLOCKS = {"\u2588": (True, True), "\u2580": (True, False), "\u2584": (False, True), " ": (False, False)}
DARK_ON_LIGHT = "\x1b[30;107m"  # black foreground on a bright white background
RESET = "\x1b[0m"


def qr_matrix_utf8(lines: list) -> list:
    """Modules from half-block lines: each character is two modules stacked."""
    rows = []
    for raw in lines:
        # explicit colours on every line: the code does not depend on the terminal's theme
        assert raw.startswith(DARK_ON_LIGHT) and raw.endswith(RESET), repr(raw)
        text = strip_ansi(raw)
        assert set(text) <= set(HALF_BLOCKS), f"unexpected characters in a QR line: {text!r}"
        pairs = [HALF_BLOCKS[ch] for ch in text]
        rows.append([top for top, _ in pairs])
        rows.append([bottom for _, bottom in pairs])
    return rows


def qr_matrix_ansi(lines: list) -> list:
    """Modules from ANSI colour-block lines: background 40 dark, 107 light, two spaces a module."""
    rows = []
    for raw in lines:
        assert raw.endswith(RESET), repr(raw)
        row = []
        for colour, cells in re.findall(r"\x1b\[(\d+)m([^\x1b]*)", raw[: -len(RESET)]):
            assert colour in ("40", "107"), f"unexpected colour {colour} in {raw!r}"
            assert set(cells) <= {" "} and len(cells) % 2 == 0, repr(cells)
            row.extend([colour == "40"] * (len(cells) // 2))
        rows.append(row)
    return rows


def decode_qr(modules: list, png: Path, scale: int = 10) -> str:
    """Draw the modules (dark on white, quiet zone kept) and decode them with zbarimg."""
    from PIL import Image

    width = len(modules[0])
    assert all(len(row) == width for row in modules), "ragged QR rows"
    image = Image.new("L", (width * scale, len(modules) * scale), 255)
    pixels = image.load()
    for y, row in enumerate(modules):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(scale):
                    for dx in range(scale):
                        pixels[x * scale + dx, y * scale + dy] = 0
    image.save(png)
    done = subprocess.run(["zbarimg", "--raw", "-q", str(png)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"zbarimg found no code in {png} (exit {done.returncode}): {done.stderr}"
    return done.stdout.rstrip("\n")


# --------------------------------------------------------------------------
# The store, read as root in the container


def record_path(user: str) -> str:
    return f"{STATE_USERS}/{user}.rec"


def record_fingerprint(host: Host, user: str) -> str | None:
    """sha256, inode, size and mtime of the user's record; None when there is none."""
    path = shlex.quote(record_path(user))
    done = host.run(f"test -e {path} || exit 3; stat -c '%i %s %Y %U %a' {path}; sha256sum < {path}", check=False)
    if done.returncode == 3:
        return None
    assert done.returncode == 0, done.stderr
    return done.stdout


def store_entries(host: Host, user: str) -> list:
    """Files of the store named after ``user`` (record, lock, temporary files)."""
    done = host.run(["find", STATE_USERS, "-maxdepth", "1", "-name", f"*{user}*"], check=False)
    return sorted(done.stdout.split())


def wait_no_enroll_process(host: Host, timeout: float = 15) -> None:
    """Wait until no live twofa-enroll or enroll-self process is left in the container."""
    deadline = time.monotonic() + timeout
    while True:
        listing = host.run(["ps", "-eo", "stat=,args="]).stdout
        live = [
            line
            for line in listing.splitlines()
            if ("enroll-self" in line or "twofa-enroll" in line) and not line.lstrip().startswith("Z")
        ]
        if not live:
            return
        assert time.monotonic() < deadline, f"enrollment processes still running:\n{listing}"
        time.sleep(0.2)


# --------------------------------------------------------------------------
# Other SSH clients on a terminal: OpenSSH ssh/sftp/scp and PuTTY's plink (test_clients.py)

PLINK = "/usr/bin/plink"  # Debian's putty-tools
PLINK_ANTISPOOF = "Access granted. Press Return to begin session."


class ClientTerminal(Terminal):
    """A ``Terminal`` whose program gets an environment of its own (locale, HOME)."""

    def __init__(self, argv: list, env: dict, timeout: float = 30) -> None:
        super().__init__(argv, timeout, env)


def client_env(home: Path, locale: str = "C.UTF-8") -> dict:
    """This process's environment for a client: one locale (LC_ALL), HOME, no agent, no askpass.

    OpenSSH reads its files from the passwd entry's home, not from HOME; PuTTY
    reads ``$HOME/.putty`` (host key cache, saved sessions): a scratch HOME
    keeps this machine's own settings out of the test.
    """
    dropped = ("LANG", "LANGUAGE", "SSH_AUTH_SOCK", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_") and k not in dropped}
    home.mkdir(parents=True, exist_ok=True)
    env.update(LC_ALL=locale, HOME=str(home), TERM="xterm")
    return env


def host_public_key(host: Host, kind: str = "ed25519") -> str:
    """``TYPE BASE64`` of the container's sshd host key."""
    line = host.run(["cat", f"/etc/ssh/ssh_host_{kind}_key.pub"]).stdout.split()
    return f"{line[0]} {line[1]}"


def write_known_hosts(host: Host, path: Path) -> Path:
    """A known_hosts file pinning the container's ed25519 host key at 127.0.0.1:PORT."""
    path.write_text(f"[{LOOPBACK}]:{host.port} {host_public_key(host)}\n")
    return path


def host_key_fingerprint(host: Host) -> str:
    """``SHA256:...`` of the container's ed25519 host key, computed here (plink's ``-hostkey``)."""
    blob = base64.b64decode(host_public_key(host).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def openssh_options(port: int, known_hosts: Path) -> list:
    """Options common to ssh, sftp and scp: no config file, the pinned host key, keyboard-interactive only."""
    options = {
        "Port": str(port),
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "StrictHostKeyChecking": "yes",
        "PreferredAuthentications": "keyboard-interactive",
        "PubkeyAuthentication": "no",
        "IdentityAgent": "none",
        "NumberOfPasswordPrompts": "1",
        "ConnectTimeout": "10",
    }
    argv = ["-F", "/dev/null"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    return argv


def plink_terminal(
    port: int, user: str, fingerprint: str, command: str, env: dict, *extra: str, timeout: float = 30
) -> Terminal:
    """``plink`` logging in to 127.0.0.1:PORT as ``user`` to run ``command``, host key pinned (``-hostkey``)."""
    argv = [PLINK, "-ssh", "-P", str(port), "-hostkey", fingerprint, "-noagent", "-l", user, *extra]
    return ClientTerminal([*argv, LOOPBACK, command], env, timeout=timeout)
