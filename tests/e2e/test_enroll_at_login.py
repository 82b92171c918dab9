"""Enrollment at the first login (``enforce.unenrolled: enroll``) through three real SSH clients:
OpenSSH's ``ssh``, PuTTY's ``plink`` and paramiko, on Debian 12 and 13 (issue 25).

Each client receives the QR code in the text of a keyboard-interactive prompt. The test takes the
lines the client showed (its terminal, or the prompt text paramiko got), rebuilds the modules,
decodes them with ``zbarimg`` (independent of the ``qrcode`` package that drew them), computes a
code from the secret in the decoded URI, and types it; then logs in again with a code from it.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlparse

import pytest
from e2e_harness import (
    LOOPBACK,
    MAILED_CODE,
    Host,
    current_code,
    email_settings,
    ssh_login,
    totp_at,
    wait_for_fresh_step,
)
from e2e_terminal import (
    HALF_BLOCKS,
    ClientTerminal,
    Terminal,
    client_env,
    decode_qr,
    host_key_fingerprint,
    normalize,
    openssh_options,
    plink_terminal,
    recovery_codes,
    strip_ansi,
    write_known_hosts,
)

pytestmark = pytest.mark.e2e

APP_PROMPT = "Code from the app (6 digits): "
SAVED_PROMPT = "Press Enter when you have saved them: "
GROUP = "selfenroll"


@pytest.fixture
def enroll_policy(scenario, password_host, smtp_server):
    """``unenrolled: enroll`` for members of GROUP, mail to the test's SMTP server; restored after."""
    original = password_host.run(["cat", "/etc/pam-twofa/policy.yaml"]).stdout
    password_host.run(f"getent group {GROUP} >/dev/null || groupadd {GROUP}")
    password_host.write_policy(
        original.replace("groups: [twofa]", f"groups: [twofa, {GROUP}]").replace(
            "unenrolled: deny", "unenrolled: enroll"
        )
        + "email:\n"
        + email_settings(smtp_server)
    )
    check = password_host.run(["twofa-admin", "check"])
    assert "OK" in check.stdout, check.stdout
    smtp_server.clear()
    yield smtp_server
    password_host.write_policy(original)


def unframed(text: str) -> str:
    """plink shows a server's prompt text framed: each line after "| ", a line it wrapped at the
    terminal's width continued after "> " (and CR LF doubled into blank lines). Undo that."""
    out: list[str] = []
    for line in normalize(strip_ansi(text)).split("\n"):
        if line.startswith("> ") and out:
            while out and out[-1] == "" and len(out) > 1:
                out.pop()
            out[-1] += line[2:]
        elif line.startswith("| "):
            out.append(line[2:])
        else:
            out.append(line)
    return "\n".join(out)


def qr_lines_of(text: str) -> list[str]:
    """The half-block lines between the "Scan this QR code" heading and "Cannot scan it?"."""
    lines = unframed(text).split("\n")
    start = max(i for i, line in enumerate(lines) if "Scan this QR code" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("Cannot scan it?"))
    return [line for line in lines[start + 1 : end] if line.strip(" ")]


def decoded_secret(text: str, png) -> tuple[str, str]:
    """(the URI decoded from the QR code in ``text``, its secret). The code is drawn for a dark
    background: a block is a light module."""
    rows = []
    lines = qr_lines_of(text)
    width = max(len(line) for line in lines)
    for line in lines:
        line = line.ljust(width)  # a terminal may drop trailing spaces
        assert set(line) <= set(HALF_BLOCKS), f"unexpected characters in a QR line: {line!r}"
        pairs = [HALF_BLOCKS[ch] for ch in line]
        rows.append([not top for top, _ in pairs])
        rows.append([not bottom for _, bottom in pairs])
    uri = decode_qr(rows, png)
    assert uri.startswith("otpauth://totp/"), uri
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    # the key shown for "cannot scan it?" is the same secret
    assert " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)) in unframed(text)
    return uri, secret


def mailed_code(smtp, count: int) -> str:
    message = smtp.wait_for(count, timeout=20)[count - 1]
    found = MAILED_CODE.search(message.get_content())
    assert found, message.get_content()
    return found.group(1)


def enrolled_check(host: Host, user: str, password: str, secret: str) -> None:
    """The record is active: a login with the app's next code works, the one typed at enrollment is used."""
    assert host.run(f"grep -q '^key [0-9a-f]' /var/lib/pam-twofa/users/{user}.rec", check=False).returncode == 0
    wait_for_fresh_step(5)
    time.sleep(30 - time.time() % 30 + 0.5)  # the enrollment used this step's code: the next one
    again = ssh_login(host.port, user, password=password, code=current_code(secret))
    assert again.ok and again.output.strip() == user, again


def test_paramiko(password_host, enroll_policy, make_user, tmp_path):
    smtp = enroll_policy
    user, password = make_user(password_host, groups=GROUP)
    seen: dict = {}

    def answer(prompt):
        if prompt.endswith("@example.com: "):
            return mailed_code(smtp, 1)
        if prompt.endswith(APP_PROMPT):
            seen["uri"], seen["secret"] = decoded_secret(prompt, tmp_path / "qr.png")
            return totp_at(seen["secret"])
        if prompt.endswith(SAVED_PROMPT):
            seen["codes"] = recovery_codes(prompt)
            return ""
        return None

    wait_for_fresh_step(10)
    login = ssh_login(password_host.port, user, password=password, answer=answer, timeout=60)
    assert login.ok and login.output.strip() == user, login
    assert len(seen["codes"]) == 10
    assert password_host.syslog().count(f"user={user} rhost=127.0.0.1 result=enrolled at login") == 1
    enrolled_check(password_host, user, password, seen["secret"])


def drive(term: Terminal, smtp, password: str, png) -> str:
    """Answer the prompts of an enrollment at login on a terminal; returns the secret."""
    term.expect("Password: ")
    term.send_line(password)
    term.expect("@example.com: ")
    term.send_line(mailed_code(smtp, 1))
    term.expect(APP_PROMPT, timeout=30)
    _uri, secret = decoded_secret(term.transcript, png)
    term.send_line(totp_at(secret))
    term.expect(SAVED_PROMPT)
    assert len(recovery_codes(term.transcript)) == 10
    term.send_line("")
    return secret


def enroll_on_terminal(host: Host, smtp, user: str, password: str, term: Terminal, png) -> None:
    """A client on a terminal logs in, enrolls, and runs its command; then the secret is checked live."""
    try:
        secret = drive(term, smtp, password, png)
        term.expect("E2E-DONE")
        assert re.search(rf"^{user}\s*$", term.transcript, re.M), term.transcript[-2000:]
    finally:
        term.close()
    enrolled_check(host, user, password, secret)


COMMAND = "id -un; echo E2E-DONE"


def test_openssh(password_host, enroll_policy, make_user, tmp_path):
    user, password = make_user(password_host, groups=GROUP)
    options = openssh_options(password_host.port, write_known_hosts(password_host, tmp_path / "known_hosts"))
    wait_for_fresh_step(10)
    term = ClientTerminal(["ssh", "-tt", *options, f"{user}@{LOOPBACK}", COMMAND], client_env(tmp_path), timeout=60)
    enroll_on_terminal(password_host, enroll_policy, user, password, term, tmp_path / "qr.png")


def test_plink(password_host, enroll_policy, make_user, tmp_path):
    user, password = make_user(password_host, groups=GROUP)
    fingerprint = host_key_fingerprint(password_host)
    wait_for_fresh_step(10)
    env = client_env(tmp_path)
    term = plink_terminal(password_host.port, user, fingerprint, COMMAND, env, "-no-antispoof", timeout=60)
    enroll_on_terminal(password_host, enroll_policy, user, password, term, tmp_path / "qr.png")
