"""pam_twofa.system.mail.valid_address: what may reach ``RCPT TO`` (issue 12: exactly one ``@``)."""

from __future__ import annotations

import os

import pytest
from support.mail import plain_server

from pam_twofa.system.mail import valid_address


@pytest.mark.parametrize(
    "address", ["alice@example.com", "a.b+tag@mail-1.example.org", "root@localhost", "x_y@corp.example"]
)
def test_plain_addresses_are_valid(address):
    assert valid_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "x@evil.example@corp.example",  # {user}@corp.example for the account x@evil.example
        "a@@b.example",
        "@example.com",
        "alice@",
        "alice",
        "",
        '"a@b"@example.com',
        "a b@example.com",
        "alice@exa mple.com",
        "alice@[192.0.2.1]",
        "alice@example..com",
        "a..b@example.com",
        ".alice@example.com",
        "alice.@example.com",
        "a(comment)@example.com",
        "alice@example.com:25",
        "<alice@example.com>",
        "alice@example.com,bob@example.com",
        "al\u00efce@example.com",
        "alice@example.com\n",
        "a" * 250 + "@x.example",
    ],
)
def test_anything_else_is_refused(address):
    assert not valid_address(address)


# --- the SMTP password file (pam_twofa.system.secretfile; every rule in tests/test_secretfile.py) ---


@pytest.fixture
def smtp_server():
    """A real SMTP server on the loopback: (port, delivered messages)."""
    with plain_server() as served:
        yield served


def _private(path, data: bytes, mode: int = 0o600):
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(
    "data,mode,says",
    [
        (b"relay-pw\n" + b"#" * 5000, 0o600, "is 5009 bytes, more than 4096"),  # was cut at 4,096 and sent
        (b"relay-pw\xff\n", 0o600, "is not UTF-8 text"),  # was sent with U+FFFD in it
        (b"relay-pw\n", 0o640, "is mode 0640"),  # group-read: refused like the fleet key
        (b"\n", 0o600, "has no password on its first line"),  # was sent as an empty password
    ],
)
@pytest.mark.root
def test_send_fails_on_a_bad_password_file_before_any_login(tmp_path, smtp_server, data, mode, says):
    from pam_twofa.policy import Policy
    from pam_twofa.system.mail import MailError, build_message, send

    port, delivered = smtp_server
    path = _private(tmp_path / "smtp.pw", data, mode)
    policy = Policy(smtp_host="127.0.0.1", smtp_port=port, smtp_username="relay", smtp_password_file=str(path))
    message = build_message(policy, "alice", "alice@example.com", "12345678", "192.0.2.1", 0.0, "host")
    with pytest.raises(MailError) as info:
        send(policy, message)
    text = str(info.value)
    assert text.startswith(f"{path}: the SMTP password file ") and says in text, text
    assert "relay-pw" not in text and "12345678" not in text
    assert delivered == []


@pytest.mark.root
def test_an_smtp_password_file_owned_by_a_user_is_refused_with_the_fix(tmp_path):
    from pam_twofa.system.mail import MailError, read_password

    path = _private(tmp_path / "smtp.pw", b"relay-pw\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(MailError) as info:
        read_password(str(path))
    assert str(info.value) == (
        f"{path}: the SMTP password file must be owned by root (uid 0), not uid 65534: "
        f"chown root:root {path}; chmod 0600 {path}"
    )


@pytest.mark.root
def test_an_smtp_password_file_of_several_lines_gives_its_first_line(tmp_path):
    from pam_twofa.system.mail import read_password

    assert read_password(str(_private(tmp_path / "smtp.pw", b"relay-pw\r\nnote: rotated in May\n"))) == "relay-pw"


SIGPIPE_CHILD = r"""
import signal, socket, sys, threading
from email.message import EmailMessage
sys.path.insert(0, sys.argv[1])
from pam_twofa.policy import Policy
from pam_twofa.system.mail import MailError, send

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as in a PAM application (Python's own start ignores it)
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)

def serve():
    conn, _ = server.accept()
    reader = conn.makefile("rb")
    conn.sendall(b"220 hi\r\n")
    for line in reader:
        if line.upper().startswith(b"DATA"):
            conn.sendall(b"354 go\r\n")
            conn.close()  # gone while the message is being written
            return
        conn.sendall(b"250 ok\r\n")

threading.Thread(target=serve, daemon=True).start()
message = EmailMessage()
message["From"], message["To"], message["Subject"] = "a@example.org", "b@example.org", "x"
message.set_content("x" * 5_000_000)
try:
    send(Policy(smtp_host="127.0.0.1", smtp_port=server.getsockname()[1], smtp_timeout=10), message)
except MailError as exc:
    print("MailError", exc.maybe_sent)
"""


def test_a_server_gone_while_the_message_is_written_is_an_error_never_a_sigpipe(tmp_path):
    """Without the guard, the 5 MB write into a closed connection kills the process (rc -13)."""
    import subprocess
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(["/usr/bin/python3", "-c", SIGPIPE_CHILD, repo], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith("MailError True"), done.stdout
