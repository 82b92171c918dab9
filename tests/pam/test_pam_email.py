"""The email fallback through the real PAM stack (docs/policy.md step 3, docs/login.md; issue 4).

Enforced users who have not enrolled TOTP get a one-time code by mail, in the
same ``pamtester`` run that then asks for it: the harness's interactive
variant keeps pamtester's stdin open, the test waits until the message has
reached a real SMTP server (aiosmtpd on 127.0.0.1, started here), reads the
code out of it and types it.

Every mailed code is a secret for the harness's syslog leak check, and a
final check of each test goes over all the syslog lines it produced.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any

import pytest
from pam_harness import KEY, LOG_AUTHPRIV, PW, STACKS, leaks, syslog_facility
from support.mail import Mailbox, received

pytestmark = pytest.mark.pam

LOOPBACK = "127.0.0.1"
CLIENT = "192.0.2.10"  # PAM_RHOST of the logins (TEST-NET-1)
SMTP_TIMEOUT = 2  # email.smtp.timeout of these policies
MARGIN = 3  # seconds the login may take beyond the SMTP timeout (interpreter start, PAM, the harness)
MAIL_WAIT = 15  # seconds a test waits for a mail that should come

# Fragments of the messages of pam_twofa.login.flow
MSG_SENT = "Code sent to "
MSG_HINT = "twofa-enroll"
MSG_MAIL_FAILED = "Could not send the code. Try again later or contact your administrator."
MSG_MAIL_LIMIT = "Too many codes were emailed"
MSG_BAD = "Wrong verification code"
MSG_EXPIRED = "expired"
MSG_LOCKED = "Too many wrong codes"
MSG_NOT_ENROLLED = "has none set up"


# --- the SMTP side ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class Handler:
    """aiosmtpd handler: collects messages; can refuse MAIL or RCPT with 554, and can take ``delay``
    seconds to accept a message it already holds (a slow server: the mail arrives, its 250 comes late)."""

    def __init__(self, box: Mailbox, refuse: str = "", delay: float = 0.0) -> None:
        self.box = box
        self.refuse = refuse
        self.delay = delay

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.refuse == "MAIL":
            return "554 5.7.1 Sender rejected by the test server"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse == "RCPT":
            return "554 5.7.1 Recipient rejected by the test server"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = received(envelope.original_content or envelope.content)
        message.envelope_from = envelope.mail_from
        message.envelope_to = list(envelope.rcpt_tos)
        message.tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        message.authenticated = bool(session.authenticated)
        self.box.add(message)
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)  # other connections are served meanwhile
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    """``smtp_server(**controller_kwargs) -> (port, Mailbox)``: aiosmtpd servers on 127.0.0.1, stopped after the test."""
    from aiosmtpd.controller import Controller

    started = []

    def start(refuse: str = "", **kwargs):
        box = Mailbox()
        port = free_port()
        controller = Controller(Handler(box, refuse), hostname=LOOPBACK, port=port, **kwargs)
        controller.start()
        started.append(controller)
        return port, box

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def smtp(smtp_server):
    """A plain SMTP server: (port, Mailbox)."""
    return smtp_server()


class RawServer:
    """A TCP listener that misbehaves: ``greet`` is sent on connect (or nothing), then it
    either answers nothing (holds the connection open) or speaks SMTP, every answer ``drip`` s late;
    with ``stall_after_data`` it takes a whole message (``messages`` counts them) and never answers it."""

    def __init__(self, greet: bytes = b"", drip: float | None = None, stall_after_data: bool = False) -> None:
        self.greet = greet
        self.drip = drip
        self.stall_after_data = stall_after_data
        self.messages = 0
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.accepted_mail = 0
        self.stopping = threading.Event()
        self.conns: list = []
        self.thread = threading.Thread(target=self._loop, name="raw-smtp", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        try:
            if self.greet:
                conn.sendall(self.greet)
            if self.drip is None:
                self.stopping.wait()  # accepted, never answers
                return
            conn.settimeout(0.2)
            buffer = b""
            in_data = False
            while not self.stopping.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    return
                buffer += data
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    if in_data:
                        if line != b".":
                            continue
                        if self.stall_after_data:
                            self.messages += 1
                            self.stopping.wait()  # the whole message is here; its verdict never comes
                            return
                        in_data, reply = False, b"250 accepted\r\n"
                    else:
                        verb = line[:4].upper()
                        in_data = verb == b"DATA"
                        reply = {b"DATA": b"354 go on\r\n", b"QUIT": b"221 bye\r\n"}.get(verb, b"250 ok\r\n")
                    if self.stopping.wait(self.drip):
                        return
                    conn.sendall(reply)
                    self.accepted_mail += reply.startswith(b"250 accepted")
        except OSError:
            pass

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for localhost/127.0.0.1 (the trusted CA), and another one that is not it."""
    folder = tmp_path_factory.mktemp("tls")

    def make(name: str):
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-subj",
                f"/CN={name} test SMTP",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        os.chmod(cert, 0o644)
        return cert, key

    server = make("server")
    other = make("other")
    return {"cert": server[0], "key": server[1], "other_ca": other[0]}


def server_tls_context(tls_files):
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls_files["cert"]), str(tls_files["key"]))
    return context


SMTP_USER = "relay-user"
SMTP_PASSWORD = "Smtp.Pass-9zQ1x7"


def authenticator(box: Mailbox):
    from aiosmtpd.smtp import AuthResult

    def check(server, session, envelope, mechanism, auth_data):
        box.auth_attempts.append((auth_data.login.decode(), auth_data.password.decode()))
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # not handled: the server answers 535

    return check


# --- the policy ----------------------------------------------------------------------


def yaml_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def email_policy(
    scratch,
    port,
    *,
    mode="all",
    groups=(),
    unenrolled="email",
    exempt_users=(),
    exempt_groups=(),
    exempt_networks=(),
    max_failures=5,
    failure_window=900,
    address="{user}@example.com",
    code_digits=8,
    code_ttl=600,
    max_sends=10,
    send_window=3600,
    smtp=None,
    on_error="deny",
):
    """A policy with an ``email`` section for this test's state folder and SMTP server."""
    settings = {"host": LOOPBACK, "port": port, "timeout": SMTP_TIMEOUT, **(smtp or {})}
    smtp_lines = "".join(f"    {key}: {yaml_value(value)}\n" for key, value in settings.items())
    text = f"""version: 1
enforce:
  mode: {mode}
  groups: {yaml_value(list(groups))}
  unenrolled: {unenrolled}
exempt:
  users: {yaml_value(list(exempt_users))}
  groups: {yaml_value(list(exempt_groups))}
  networks: {yaml_value(list(exempt_networks))}
rate_limit:
  max_failures: {max_failures}
  per_seconds: {failure_window}
email:
  address: {yaml_value(address)}
  smtp:
{smtp_lines}  code_digits: {code_digits}
  code_ttl: {code_ttl}
  max_sends: {max_sends}
  per_seconds: {send_window}
storage:
  state_dir: {scratch.state_dir}
on_error: {on_error}
"""
    scratch.write_policy_text(text)
    check = scratch.cli("check")
    assert check.rc == 0, f"{text}\n{check}"
    return text


# --- logging in with a mailed code ----------------------------------------------------


class Attempt:
    def __init__(self, result, message, code, mails, elapsed) -> None:
        self.result = result
        self.message = message  # the first mail of this run, or None
        self.code = code  # the code in it
        self.mails = mails  # every mail of this run
        self.elapsed = elapsed

    def __repr__(self) -> str:
        return f"{self.result!r}\n--- mails: {len(self.mails)}; elapsed {self.elapsed:.2f} s"


def code_of(message, digits: int) -> str:
    """The one number of ``digits`` digits in the body (dates, times and addresses have other lengths)."""
    body = message.get_content()
    found = re.findall(r"(?<![\w.:-])\d{%d}(?![\w.:-])" % digits, body)
    assert len(found) == 1, f"expected one {digits}-digit code in the mail:\n{body}"
    return found[0]


def mail_login(
    scratch, box: Mailbox, user: str, *, stack=KEY, rhost=CLIENT, digits=8, answer=None, before_answer=None
) -> Attempt:
    """A login in which the code mailed during the run is typed (or ``answer(code)``).

    ``before_answer(code)`` runs after the mail arrived and before the answer
    is typed (to age the stored code, say). No mail → stdin is closed.
    """
    mark = box.mark()
    seen = {}

    def respond(proc):
        message = box.wait_new(mark, proc, MAIL_WAIT)
        if message is None:
            return None
        code = code_of(message, digits)
        scratch.sensitive.add(code)  # before pamtester logs anything about it
        seen["message"], seen["code"] = message, code
        if before_answer is not None:
            before_answer(code)
        return code if answer is None else answer(code)

    answers = [scratch.passwords[user]] if stack == PW else []
    started = time.monotonic()
    result = scratch.pamtester_interactive(stack, user, answers, respond, rhost=rhost)
    elapsed = time.monotonic() - started
    mails = box.since(mark)
    for message in mails:  # a second mail would be a bug; its code is still a secret
        scratch.sensitive.update(re.findall(r"(?<!\d)\d{6,10}(?!\d)", message.get_content()))
    return Attempt(result, seen.get("message"), seen.get("code"), mails, elapsed)


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def record_text(scratch, user: str):
    path = scratch.record_path(user)
    return path.read_bytes() if path.exists() else None


def rewrite_record(scratch, user: str, **fields) -> None:
    """Change ``key value`` lines of a record file, atomically, keeping it 0600 root."""
    path = scratch.record_path(user)
    lines = path.read_text().split("\n")
    for name, value in fields.items():
        index = [i for i, line in enumerate(lines) if line.startswith(name + " ")]
        assert len(index) == 1, f"{name} not in {path}"
        lines[index[0]] = f"{name} {value}"
    tmp = path.with_name(path.name + ".test-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines))
    os.rename(tmp, path)
    st = os.stat(path)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600


def record_field(scratch, user: str, name: str) -> str:
    for line in scratch.record_path(user).read_text().split("\n"):
        if line.startswith(name + " "):
            return line[len(name) + 1 :]
    raise AssertionError(f"{name} not in the record of {user}")


def sends(scratch, user: str) -> list[str]:
    """The sends counted in ``user``'s record file (``email_sends``); none without a record."""
    text = record_field(scratch, user, "email_sends") if scratch.record_path(user).exists() else ""
    return text.split(",") if text else []


@pytest.fixture(autouse=True)
def _no_code_in_syslog(scratch):
    """After each test: no mailed code (registered as secrets) in any syslog line the test produced."""
    yield
    leaked = leaks(scratch.lines, scratch.sensitive)
    assert not leaked, f"syslog contains a code or secret: {leaked}"


def assert_mailed(attempt: Attempt, address: str, scratch=None) -> None:
    assert attempt.message is not None, f"no mail arrived\n{attempt}"
    assert len(attempt.mails) == 1, f"one login, one mail\n{attempt}"
    assert attempt.message.envelope_to == [address], attempt.message.envelope_to
    masked = address[0] + "***@" + address.split("@", 1)[1]
    assert f"{MSG_SENT}{masked}: " in attempt.result.output, str(attempt)
    assert attempt.code not in attempt.result.output, str(attempt)


def assert_not_asked(result, box: Mailbox, mark: int, *reason) -> None:
    assert result.ok, str(result)
    assert MSG_SENT not in result.output and not result.prompted, str(result)
    assert box.since(mark) == [], "a mail was sent to a user who is not asked"
    assert not result.log_with("code mailed"), str(result)
    assert result.log_with(*reason), str(result)


# --- 1. the mail and its code ------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_mailed_code_to_the_template_address_logs_in(scratch, smtp, stack):
    port, box = smtp
    email_policy(scratch, port, mode="all", code_digits=7, code_ttl=600)
    before = time.time()
    attempt = mail_login(scratch, box, "alice", stack=stack, digits=7)
    result, message = attempt.result, attempt.message

    assert_mailed(attempt, "alice@example.com")
    assert result.ok, str(attempt)
    assert result.output.count(MSG_HINT) == 1, str(attempt)  # how to enroll, once, alongside the prompt
    assert len(attempt.code) == 7

    hostname = socket.gethostname()
    assert message["To"] == "alice@example.com"
    assert parseaddr(message["From"])[1] == f"pam-twofa@{hostname}", message["From"]
    assert message.envelope_from == f"pam-twofa@{hostname}"
    assert hostname in message["Subject"], message["Subject"]
    sent = parsedate_to_datetime(message["Date"]).timestamp()
    assert before - 2 <= sent <= time.time() + 2, message["Date"]
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", message["Message-ID"]), message["Message-ID"]
    body = message.get_content()
    assert hostname in body and "alice" in body, body
    assert CLIENT in body, body
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(sent))
    assert stamp in body, body  # the time of the login attempt
    assert "10 minutes" in body, body  # code_ttl 600
    assert "If this was not you" in body, body

    mailed = result.log_with("user=alice", f"rhost={CLIENT}", "result=code mailed", "a***@example.com")
    assert mailed and "enforce.mode is all" in mailed[0], str(result)
    assert result.log_with("user=alice", "result=emailed success"), str(result)
    assert all(syslog_facility(line) == LOG_AUTHPRIV for line in result.log_with("pam_twofa(")), str(result)
    # stored only as a salted hash, and used up
    text = record_text(scratch, "alice").decode()
    assert attempt.code not in text
    assert record_field(scratch, "alice", "email_code_hash") == ""


def test_per_user_address_overrides_the_template(scratch, smtp):
    port, box = smtp
    email_policy(scratch, port, mode="all")
    done = scratch.cli("email", "bob", "robert.home@mail.example.org")
    assert done.rc == 0, str(done)
    attempt = mail_login(scratch, box, "bob")
    assert_mailed(attempt, "robert.home@mail.example.org")
    assert attempt.message["To"] == "robert.home@mail.example.org"
    assert attempt.result.ok, str(attempt)
    assert attempt.result.log_with("user=bob", "r***@mail.example.org"), str(attempt.result)
    # control: another user still gets the template
    other = mail_login(scratch, box, "frank")
    assert_mailed(other, "frank@example.com")
    assert other.result.ok, str(other)


def test_a_code_logs_in_once_and_a_new_login_voids_it(scratch, smtp):
    port, box = smtp
    email_policy(scratch, port, mode="all")
    first = mail_login(scratch, box, "bob")
    assert first.result.ok, str(first)

    # the same code again: the new login mails a new code, and the old one is void
    again = mail_login(scratch, box, "bob", answer=lambda new: first.code)
    assert_mailed(again, "bob@example.com")
    assert again.code != first.code
    assert again.result.denied, str(again)
    assert MSG_BAD in again.result.output, str(again)
    assert again.result.log_with("user=bob", "result=emailed bad code"), str(again.result)

    # a pending code is replaced by the next login's code
    third = mail_login(scratch, box, "bob", answer=lambda new: again.code)
    assert_mailed(third, "bob@example.com")
    assert third.result.denied, str(third)
    assert MSG_BAD in third.result.output, str(third)

    # control: the code of the run itself works
    fourth = mail_login(scratch, box, "bob")
    assert fourth.result.ok, str(fourth)


def test_a_code_is_tied_to_the_user_it_was_mailed_to(scratch, smtp):
    port, box = smtp
    email_policy(scratch, port, mode="all")
    bob = mail_login(scratch, box, "bob", answer=lambda code: None)  # bob gets a code and does not answer
    assert_mailed(bob, "bob@example.com")
    assert bob.result.denied, str(bob)
    assert record_field(scratch, "bob", "email_code_hash")  # still pending
    frank = mail_login(scratch, box, "frank", answer=lambda code: bob.code)
    assert_mailed(frank, "frank@example.com")
    assert frank.result.denied and MSG_BAD in frank.result.output, str(frank)
    assert frank.result.log_with("user=frank", "result=emailed bad code"), str(frank.result)


def test_an_expired_code_fails(scratch, smtp):
    port, box = smtp
    email_policy(scratch, port, mode="all", code_ttl=600)
    seen = {}

    def age(code):
        # the module writes the pending code right after the server accepted the mail
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (
            scratch.record_path("carol").exists() and record_field(scratch, "carol", "email_code_hash")
        ):
            time.sleep(0.01)
        expires = int(record_field(scratch, "carol", "email_code_expires"))
        seen["expires"] = expires
        assert abs(expires - (time.time() + 600)) < 5, expires  # code_ttl is stored as the expiry
        assert code not in record_text(scratch, "carol").decode()
        rewrite_record(scratch, "carol", email_code_expires=int(time.time()) - 1)

    attempt = mail_login(scratch, box, "carol", before_answer=age)
    assert_mailed(attempt, "carol@example.com")
    assert "expires" in seen
    assert attempt.result.denied, str(attempt)
    assert MSG_EXPIRED in attempt.result.output, str(attempt)
    assert attempt.result.log_with("user=carol", "result=emailed expired code"), str(attempt.result)
    # control: the same flow without aging the code logs in
    fresh = mail_login(scratch, box, "carol")
    assert fresh.result.ok, str(fresh)


def test_wrong_codes_lock_the_account_and_no_mail_is_sent_while_locked(scratch, smtp):
    port, box = smtp
    email_policy(scratch, port, mode="all", max_failures=2, failure_window=900)
    first = mail_login(scratch, box, "dave", answer=other_code)
    assert_mailed(first, "dave@example.com")
    assert first.result.denied and MSG_BAD in first.result.output, str(first)
    assert first.result.log_with("user=dave", "result=emailed bad code", "failure 1 of 2"), str(first.result)

    second = mail_login(scratch, box, "dave", answer=other_code)
    assert_mailed(second, "dave@example.com")
    assert second.result.denied and MSG_LOCKED in second.result.output, str(second)
    assert second.result.log_with("user=dave", "now locked"), str(second.result)

    mark = box.mark()
    locked = scratch.login(KEY, "dave", rhost=CLIENT)
    assert locked.denied and MSG_LOCKED in locked.output, str(locked)
    assert MSG_SENT not in locked.output, str(locked)
    assert box.since(mark) == [], "a code was mailed to a locked account"
    assert locked.log_with("user=dave", "result=locked", "no code mailed"), str(locked)

    # control: the lockout is the account's; another user still gets a code and logs in
    other = mail_login(scratch, box, "erin")
    assert other.result.ok, str(other)


# --- 2. max_sends --------------------------------------------------------------------


def test_max_sends_then_the_window_passes(scratch, smtp):
    port, box = smtp
    email_policy(scratch, port, mode="all", max_sends=2, send_window=3)
    first_sent = time.time()
    for _ in range(2):
        attempt = mail_login(scratch, box, "peggy")
        assert attempt.result.ok, str(attempt)

    mark = box.mark()
    limited = scratch.login(KEY, "peggy", rhost=CLIENT)
    assert limited.denied, str(limited)
    assert MSG_MAIL_LIMIT in limited.output, str(limited)
    assert MSG_SENT not in limited.output, str(limited)
    assert box.since(mark) == [], "a mail was sent over max_sends"
    assert limited.log_with("user=peggy", "result=mail limit reached", "2 per 3 s"), str(limited)

    time.sleep(max(0.0, first_sent + 3.2 - time.time()))
    later = mail_login(scratch, box, "peggy")
    assert_mailed(later, "peggy@example.com")
    assert later.result.ok, str(later)


# --- 3. enforcement -------------------------------------------------------------------

# id: (policy settings, user, rhost)
MAILED = {
    "groups-supplementary": (
        dict(mode="groups", groups=["staff"]),
        "alice",
        CLIENT,
        "member of group staff (supplementary)",
    ),
    "groups-primary": (dict(mode="groups", groups=["staff"]), "erin", CLIENT, "member of group staff (primary)"),
    "all-plain-user": (
        dict(mode="all", exempt_users=["carol"], exempt_groups=["ops"], exempt_networks=["10.0.0.0/8"]),
        "bob",
        CLIENT,
        "enforce.mode is all",
    ),
    "all-from-other-network": (
        dict(mode="all", exempt_networks=["10.0.0.0/8"]),
        "alice",
        "11.0.0.1",
        "enforce.mode is all",
    ),
}
# case -> (policy settings, user, client address, words of the log line)
NOT_ASKED: dict[str, tuple[dict[str, Any], str, str, tuple[str, ...]]] = {
    "groups-not-a-member": (dict(mode="groups", groups=["staff"]), "frank", CLIENT, ("not asked", "not enforced")),
    "groups-also-in-exempt-group": (
        dict(mode="groups", groups=["staff", "ops"], exempt_groups=["ops"]),
        "dave",
        CLIENT,
        ("exempt", "ops (supplementary)"),
    ),
    "groups-exempt-network": (
        dict(mode="groups", groups=["staff"], exempt_networks=["10.0.0.0/8"]),
        "alice",
        "10.1.2.3",
        ("exempt", "10.0.0.0/8"),
    ),
    "all-exempt-user": (dict(mode="all", exempt_users=["carol"]), "carol", CLIENT, ("exempt", "exempt.users")),
    "all-exempt-group": (dict(mode="all", exempt_groups=["ops"]), "oscar", CLIENT, ("exempt", "ops (primary)")),
    "all-exempt-network": (
        dict(mode="all", exempt_networks=["10.0.0.0/8"]),
        "bob",
        "10.200.0.9",
        ("exempt", "10.0.0.0/8"),
    ),
    "mode-off": (dict(mode="off"), "alice", CLIENT, ("not asked", "enforce.mode is off")),
}


@pytest.mark.parametrize("case", MAILED)
def test_enforced_users_are_mailed(scratch, smtp, case):
    settings, user, rhost, why = MAILED[case]
    port, box = smtp
    email_policy(scratch, port, **settings)
    attempt = mail_login(scratch, box, user, rhost=rhost)
    assert_mailed(attempt, f"{user}@example.com")
    assert attempt.result.ok, str(attempt)
    assert attempt.result.log_with(f"user={user}", "result=code mailed", why), str(attempt.result)


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("case", NOT_ASKED)
def test_exempt_or_not_enforced_users_get_no_mail(scratch, smtp, case, stack):
    settings, user, rhost, why = NOT_ASKED[case]
    port, box = smtp
    email_policy(scratch, port, **settings)
    mark = box.mark()
    result = scratch.login(stack, user, rhost=rhost)
    assert_not_asked(result, box, mark, f"user={user}", *why)
    assert not scratch.record_path(user).exists()


def test_mode_all_mails_everyone_but_the_exempt(scratch, smtp):
    port, box = smtp
    email_policy(scratch, port, mode="all", exempt_users=["carol"], exempt_groups=["ops"])
    for user in ("alice", "frank", "victor"):
        attempt = mail_login(scratch, box, user)
        assert_mailed(attempt, f"{user}@example.com")
        assert attempt.result.ok, str(attempt)
    for user in ("carol", "dave", "oscar"):
        mark = box.mark()
        assert_not_asked(scratch.login(KEY, user, rhost=CLIENT), box, mark, f"user={user}", "exempt")


# --- 4. TLS and authentication ---------------------------------------------------------------


@pytest.fixture
def password_file(scratch):
    path = scratch.root / "smtp-password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(SMTP_PASSWORD + "\n")
    scratch.sensitive.add(SMTP_PASSWORD)
    return path


def starttls_server(smtp_server, tls_files):
    box_holder: dict[str, Callable[..., Any]] = {}

    def auth(*args):
        return box_holder["check"](*args)

    port, box = smtp_server(
        tls_context=server_tls_context(tls_files),
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=auth,
    )
    box_holder["check"] = authenticator(box)
    return port, box


def test_starttls_with_authentication_and_a_trusted_self_signed_certificate(
    scratch, smtp_server, tls_files, password_file
):
    port, box = starttls_server(smtp_server, tls_files)
    email_policy(
        scratch,
        port,
        smtp=dict(
            host="localhost",
            starttls=True,
            ca_file=str(tls_files["cert"]),
            username=SMTP_USER,
            password_file=str(password_file),
        ),
    )
    attempt = mail_login(scratch, box, "trent")
    assert_mailed(attempt, "trent@example.com")
    assert attempt.message.tls and attempt.message.authenticated
    assert box.auth_attempts == [(SMTP_USER, SMTP_PASSWORD)]
    assert attempt.result.ok, str(attempt)


def test_starttls_refuses_a_certificate_the_policy_does_not_trust(scratch, smtp_server, tls_files, password_file):
    port, box = starttls_server(smtp_server, tls_files)
    email_policy(
        scratch,
        port,
        smtp=dict(
            starttls=True, ca_file=str(tls_files["other_ca"]), username=SMTP_USER, password_file=str(password_file)
        ),
    )
    result = scratch.login(KEY, "trent", rhost=CLIENT)
    assert result.denied and MSG_MAIL_FAILED in result.output, str(result)
    assert result.log_with("user=trent", "result=mail failed (", "TLS"), str(result)
    assert box.messages == [] and box.auth_attempts == []  # the password never went to that server


def test_a_password_file_others_can_read_is_refused(scratch, smtp_server, tls_files, password_file):
    port, box = starttls_server(smtp_server, tls_files)
    os.chmod(password_file, 0o644)
    email_policy(
        scratch,
        port,
        smtp=dict(starttls=True, ca_file=str(tls_files["cert"]), username=SMTP_USER, password_file=str(password_file)),
    )
    result = scratch.login(KEY, "trent", rhost=CLIENT)
    assert result.denied and MSG_MAIL_FAILED in result.output, str(result)
    assert MSG_SENT not in result.output, str(result)
    assert result.log_with("user=trent", "result=mail failed (", str(password_file), "0600"), str(result)
    assert box.messages == [] and box.auth_attempts == []
    assert sends(scratch, "trent") == [], "a send that surely failed was counted"  # no mail, no send
    # control: the same file made root-only works
    os.chmod(password_file, 0o600)
    attempt = mail_login(scratch, box, "trent")
    assert attempt.result.ok, str(attempt)


def test_a_wrong_smtp_password_fails_the_login(scratch, smtp_server, tls_files, password_file):
    port, box = starttls_server(smtp_server, tls_files)
    password_file.write_text("not-the-password\n")
    scratch.sensitive.add("not-the-password")
    email_policy(
        scratch,
        port,
        smtp=dict(starttls=True, ca_file=str(tls_files["cert"]), username=SMTP_USER, password_file=str(password_file)),
    )
    result = scratch.login(KEY, "trent", rhost=CLIENT)
    assert result.denied and MSG_MAIL_FAILED in result.output, str(result)
    assert result.log_with("user=trent", "result=mail failed (", "refused the login"), str(result)
    assert set(box.auth_attempts) == {(SMTP_USER, "not-the-password")} and box.messages == []


def test_implicit_tls(scratch, smtp_server, tls_files):
    port, box = smtp_server(ssl_context=server_tls_context(tls_files))
    email_policy(scratch, port, smtp=dict(ssl=True, ca_file=str(tls_files["cert"])))
    attempt = mail_login(scratch, box, "victor")
    assert_mailed(attempt, "victor@example.com")
    assert attempt.message.tls
    assert attempt.result.ok, str(attempt)


# --- 5. SMTP down, refusing, hanging ------------------------------------------------------


@pytest.fixture
def raw_servers():
    started = []

    def start(**kwargs):
        server = RawServer(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


# how: what the admin's log line says
FAILURES = {
    "down": "Connection refused",
    "greeting-554": "answered 554",
    "mail-554": "answered 554",
    "rcpt-554": "refused the recipient",
    "never-answers": f"did not answer within {SMTP_TIMEOUT} s",
    "answers-then-hangs": f"did not answer within {SMTP_TIMEOUT} s",
    "slow-drip": f"did not answer within {SMTP_TIMEOUT} s",
    "tls-handshake-hangs": f"did not answer within {SMTP_TIMEOUT} s",
}


@pytest.mark.parametrize("how", FAILURES)
def test_smtp_failure_fails_the_login_in_time_and_changes_nothing(
    scratch, smtp, smtp_server, raw_servers, tls_files, how
):
    """Each of these servers surely has no message (never reached DATA, or refused): refused even
    with ``on_error: allow``, and the send recorded before the SMTP conversation is withdrawn."""
    good_port, good_box = smtp
    refusing_box = None
    tls = {}
    if how == "down":
        port = closed_port()
    elif how == "greeting-554":
        port = raw_servers(greet=b"554 5.3.2 No service for you\r\n", drip=0).port
    elif how in ("mail-554", "rcpt-554"):
        port, refusing_box = smtp_server(refuse=how.split("-")[0].upper())
    elif how == "never-answers":
        port = raw_servers().port
    elif how == "answers-then-hangs":
        port = raw_servers(greet=b"220 test ESMTP\r\n").port
    elif how == "slow-drip":  # every answer comes in time, but all of them take longer than the timeout
        port = raw_servers(greet=b"220 test ESMTP\r\n", drip=SMTP_TIMEOUT * 0.7).port
    else:  # implicit TLS: the connection is accepted, the handshake never answered
        port = raw_servers().port
        tls = dict(ssl=True, ca_file=str(tls_files["cert"]))
    email_policy(scratch, port, mode="all", max_sends=1, smtp=tls, on_error="allow")
    assert scratch.cli("email", "bob", "bob@mail.example.org").rc == 0
    bob_before = record_text(scratch, "bob")
    assert bob_before is not None

    for user in ("bob", "alice"):  # a record that exists, and none
        started = time.monotonic()
        result = scratch.login(KEY, user, rhost=CLIENT)
        elapsed = time.monotonic() - started
        assert result.denied, str(result)
        assert elapsed < SMTP_TIMEOUT + MARGIN, f"took {elapsed:.1f} s\n{result}"
        assert MSG_MAIL_FAILED in result.output, str(result)
        assert MSG_SENT not in result.output and not result.prompted, str(result)
        failed = result.log_with(f"user={user}", f"rhost={CLIENT}", "result=mail failed (", f":{port}", FAILURES[how])
        assert failed, str(result)
        assert not result.log_with("counted toward"), str(result)
        assert not result.log_with("allowed without a code"), str(result)
        assert all(syslog_facility(line) == LOG_AUTHPRIV for line in failed)
    assert record_text(scratch, "bob") == bob_before, "a failed send changed the record"
    if scratch.record_path("alice").exists():  # she had none: the one that held her pending code and send
        assert record_field(scratch, "alice", "email_sends") == "", "a send that surely failed was counted"
        assert record_field(scratch, "alice", "email_code_hash") == "", "the code of a failed send is pending"
    if refusing_box is not None:
        assert refusing_box.messages == []

    # no send was counted (max_sends is 1): with a working server the next login mails and logs in
    email_policy(scratch, good_port, mode="all", max_sends=1)
    for user, address in (("bob", "bob@mail.example.org"), ("alice", "alice@example.com")):
        attempt = mail_login(scratch, good_box, user)
        assert_mailed(attempt, address)
        assert attempt.result.ok, str(attempt)


def test_no_lock_is_held_while_smtp_waits_and_a_failed_mail_refuses_with_on_error_allow(scratch, raw_servers):
    """Issue 24, finding 2, on the files backend: the pending code and the send are recorded in one
    section, the SMTP conversation runs with no lock held (an admin's change of the same user does not
    wait for it), and a mail that did not go out refuses the login although ``on_error`` is ``allow``."""
    timeout = 8  # email.smtp.timeout: the login waits this long on a server that never answers
    server = raw_servers()  # accepts the connection, never says a word
    email_policy(scratch, server.port, mode="all", max_sends=1, smtp=dict(timeout=timeout), on_error="allow")
    assert scratch.cli("email", "bob", "bob@mail.example.org").rc == 0
    outcome: dict[str, Any] = {}

    def login() -> None:
        started = time.monotonic()
        outcome["result"] = scratch.login(KEY, "bob", rhost=CLIENT)
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=login, name="login-bob")
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while server.accepted < 1 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.accepted == 1, f"the login never reached the SMTP server: {outcome}"
        started = time.monotonic()
        changed = scratch.cli("email", "bob", "bob@home.example.net")  # takes bob's lock
        took = time.monotonic() - started
        assert changed.rc == 0, str(changed)
        assert took < timeout / 2, f"twofa-admin waited {took:.1f} s for bob's lock: a section is open across SMTP"
        assert thread.is_alive(), "the login no longer waits on SMTP: the test proves nothing"
        # recorded before the mail went: the pending code and the send (with the admin's change on top)
        assert record_field(scratch, "bob", "email_code_hash"), "no pending code while its mail is on the way"
        assert len(sends(scratch, "bob")) == 1, "the send is not counted while its mail is on the way"
    finally:
        thread.join(timeout=timeout + 30)
    result = outcome["result"]
    assert result.denied, str(result)
    assert outcome["elapsed"] < timeout + MARGIN, f"took {outcome['elapsed']:.1f} s\n{result}"
    assert MSG_MAIL_FAILED in result.output and not result.prompted, str(result)
    assert result.log_with("user=bob", "result=mail failed (", f"did not answer within {timeout} s"), str(result)
    assert not result.log_with("allowed without a code"), str(result)
    # the server never had the message: the send is withdrawn, the code too; the admin's change stays
    assert sends(scratch, "bob") == [], "a send that surely failed was counted"
    assert record_field(scratch, "bob", "email_code_hash") == ""
    assert record_field(scratch, "bob", "email") == "bob@home.example.net"


def test_a_mail_the_server_may_have_taken_counts_and_the_quota_holds(scratch, raw_servers):
    """A server that takes the whole message and never gives its verdict may deliver it: the login is
    refused (``on_error: allow`` or not), the send stays counted, so failing mail buys no extra mails."""
    server = raw_servers(greet=b"220 test ESMTP\r\n", drip=0, stall_after_data=True)
    email_policy(scratch, server.port, mode="all", max_sends=1, on_error="allow")
    first = scratch.login(KEY, "bob", rhost=CLIENT)
    assert first.denied and MSG_MAIL_FAILED in first.output, str(first)
    assert MSG_SENT not in first.output and not first.prompted, str(first)
    assert not first.log_with("allowed without a code"), str(first)
    assert server.messages == 1, "the server never got the message: the test proves nothing"
    assert len(sends(scratch, "bob")) == 1, "a mail the server may deliver was not counted"
    counted = first.log_with(
        "user=bob", "result=mail failed (", f"did not answer within {SMTP_TIMEOUT} s", "counted toward email.max_sends"
    )
    assert counted, str(first)
    assert record_field(scratch, "bob", "email_code_hash") == "", "the code of a failed mail is still pending"

    second = scratch.login(KEY, "bob", rhost=CLIENT)
    assert second.denied and MSG_MAIL_LIMIT in second.output, str(second)
    assert server.accepted == 1, "a second mail went out over email.max_sends: 1"
    assert second.log_with("user=bob", "result=mail limit reached"), str(second)
    assert not second.log_with("allowed without a code"), str(second)


def test_no_valid_address_fails_the_login(scratch, smtp):
    port, box = smtp
    email_policy(scratch, port, mode="all", address="{user}")  # no domain: not an address
    result = scratch.login(KEY, "bob", rhost=CLIENT)
    assert result.denied and MSG_MAIL_FAILED in result.output, str(result)
    assert result.log_with("user=bob", "result=mail failed (", "twofa-admin email"), str(result)
    assert box.messages == [] and not scratch.record_path("bob").exists()


# --- 6. unenrolled: deny ---------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_unenrolled_deny_refuses_with_how_to_enroll_and_no_mail(scratch, smtp, stack):
    port, box = smtp
    email_policy(scratch, port, mode="groups", groups=["staff"], unenrolled="deny")
    result = scratch.login(stack, "alice", rhost=CLIENT)
    assert result.denied, str(result)
    assert MSG_NOT_ENROLLED in result.output and "twofa-enroll" in result.output, str(result)
    assert MSG_SENT not in result.output and not result.prompted, str(result)
    assert box.messages == []
    assert result.log_with("user=alice", "result=denied: not enrolled", "unenrolled is deny"), str(result)
    # control: the same policy with unenrolled: email mails her a code
    email_policy(scratch, port, mode="groups", groups=["staff"], unenrolled="email")
    attempt = mail_login(scratch, box, "alice", stack=stack)
    assert attempt.result.ok, str(attempt)


# --- 7. the mailed code never reaches syslog -----------------------------------------------


def test_the_mailed_code_is_a_secret_of_the_leak_check(scratch, smtp):
    port, box = smtp
    email_policy(scratch, port, mode="all")
    attempt = mail_login(scratch, box, "victor", answer=other_code)  # a failure logs the most
    assert attempt.code in scratch.sensitive and other_code(attempt.code) in scratch.sensitive
    assert attempt.result.log_with("user=victor", "code mailed") and attempt.result.log_with("bad code")
    # the check itself would see the code in a line of this test's syslog
    assert leaks([f"pam_twofa: code {attempt.code}"], scratch.sensitive)
    assert not leaks(scratch.lines, {attempt.code, other_code(attempt.code)})


def test_an_address_with_two_at_signs_is_refused_before_any_smtp_and_not_counted(scratch, smtp):
    """``{user}@corp.example`` for an SSSD name ``wendy@corp.example`` (issue 12): no RCPT TO, no send counted."""
    port, box = smtp
    user = "wendy@corp.example"
    email_policy(scratch, port, mode="all", address="{user}@corp.example")
    result = scratch.login(KEY, user, rhost=CLIENT)
    assert result.denied and MSG_MAIL_FAILED in result.output, str(result)
    assert result.log_with("result=mail failed (", "no valid address", "twofa-admin email"), str(result)
    assert box.messages == [], [m.envelope_to for m in box.messages]
    assert not scratch.record_path(user).exists() or record_field(scratch, user, "email_sends") == ""
    # nor can an admin record such an address for her
    refused = scratch.cli("email", user, "wendy@corp.example@corp.example")
    assert refused.rc != 0, str(refused)
    assert not scratch.record_path(user).exists() or record_field(scratch, user, "email") == ""
