"""Emailed one-time codes: the message and its delivery over real SMTP (docs/login.md).

An adapter: ``smtplib`` with STARTTLS, implicit TLS and authentication as the
policy says, bounded by ``email.smtp.timeout``. Imported only when a login
needs to mail a code, never on the TOTP path.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from pam_twofa.system import secretfile

TYPE_CHECKING = False  # True for mypy only: the annotations are strings (``annotations`` above)
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from datetime import datetime
    from typing import Any, Protocol

    class Policy(Protocol):
        """What this module reads of ``pam_twofa.policy.Policy`` (system does not import policy)."""

        email_from: str
        code_ttl: int
        smtp_host: str
        smtp_port: int
        smtp_starttls: bool
        smtp_ssl: bool
        smtp_username: str | None
        smtp_password_file: str | None
        smtp_timeout: int
        smtp_ca_file: str | None


class MailError(Exception):
    """The code could not be sent; the message is for the admin's log (no code in it).

    ``maybe_sent``: the failure came after the message was handed to the server (from the
    DATA command on) without the server refusing it, a timeout or a dropped connection
    waiting for its verdict: the mail may have been delivered, so the send counts toward
    ``email.max_sends`` (docs/login.md, "Emailed codes"). False when the server surely
    has no message: it could not be reached, or it refused (a 4xx/5xx answer).
    """

    def __init__(self, message: str, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


def mask(address: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``: enough to recognise, not to harvest."""
    local, _at, domain = address.rpartition("@")
    return (local[:1] or "?") + "***@" + domain


def valid_address(address: str) -> bool:
    """A plain ``local@domain``: one ``@``, ASCII, no quoting, comments or routes, and read back by the
    email package as that same address (``{user}@corp.example`` for an account ``x@evil.example`` is
    refused here, before any SMTP conversation, instead of going to ``RCPT TO:<>``)."""
    if address.count("@") != 1 or len(address) > 254 or not address.isascii():
        return False
    local, _at, domain = address.partition("@")
    if not local or not domain:
        return False
    if any(c.isspace() or not c.isprintable() or c in '<>,;:\\"()[]' for c in address):
        return False
    if not all(label and all(ch.isalnum() or ch == "-" for ch in label) for label in domain.split(".")):
        return False
    from email.errors import HeaderParseError
    from email.headerregistry import Address

    try:
        parsed = Address(addr_spec=address)
    except (HeaderParseError, ValueError, IndexError):
        return False
    return parsed.addr_spec == address and parsed.username == local and parsed.domain == domain


def _message(policy: Policy, address: str, subject: str, now: float, hostname: str) -> EmailMessage:
    """A message with the headers every mail of pam-twofa has (the body is the caller's)."""
    message = EmailMessage()
    message["From"] = policy.email_from.format(hostname=hostname)
    message["To"] = address
    message["Subject"] = subject
    message["Date"] = format_datetime(time_to_datetime(now))
    message["Message-ID"] = make_msgid(domain=hostname if "." in hostname else None)
    message["Auto-Submitted"] = "auto-generated"
    return message


def build_message(
    policy: Policy, user: str, address: str, code: str, rhost: str | None, now: float, hostname: str
) -> EmailMessage:
    minutes = max(1, policy.code_ttl // 60)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    message = _message(policy, address, f"Your login code for {hostname}", now, hostname)
    message.set_content(
        f"Someone is logging in to {hostname} as {user}\n"
        f"from {rhost or 'an unknown address'} at {when}.\n\n"
        f"Your one-time code is: {code}\n\n"
        f"It works once, for this login only, and expires in {minutes} minute{'s' if minutes != 1 else ''}.\n\n"
        f"If this was not you, do not use the code: your password may be known to someone else.\n"
        f"Change it, and tell your administrator.\n\n"
        f"To get codes from an authenticator app instead of email, log in and run: twofa-enroll\n"
    )
    return message


def build_change_notice(
    policy: Policy, user: str, address: str, what: str, where: str, now: float, hostname: str, removed: bool = False
) -> EmailMessage:
    """The mail telling ``user`` that their 2FA changed (no code, secret or recovery code in it).

    ``removed``: the change took protection away (2FA turned off, trusted clients forgotten), so
    the advice is to be enrolled again, not to have a factor someone gained turned off."""
    from pam_twofa.store import shell_word

    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    message = _message(policy, address, f"Two-factor authentication changed for {user} on {hostname}", now, hostname)
    message.set_content(
        f"The two-factor authentication of {user} on {hostname} was changed at {when}:\n"
        f"    {what}\n"
        f"Where from: {where}.\n\n"
        f"If this was you, nothing else is needed.\n\n"
        + (
            "If it was not you, someone knows your password and used it to weaken your account.\n"
            "Change your password, contact an administrator at once, and set up 2FA again\n"
            "(twofa-enroll).\n"
            if removed
            else "If it was not you, someone knows your password and may now hold your second factor.\n"
            "Contact an administrator at once: they can turn this 2FA off with\n"
            f"    twofa-admin disable {shell_word(user)}\n"
            "and unlock or re-enroll you. Change your password too.\n"
        )
    )
    return message


def build_new_address_alert(
    policy: Policy, user: str, address: str, rhost: str, now: float, hostname: str
) -> EmailMessage:
    """The mail after a login with a code from a client address ``user`` has not used lately
    (``notify.new_address``): the host, the address and the time, and what to do if it was not them."""
    from pam_twofa.store import shell_word

    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    message = _message(policy, address, f"New login to {hostname} as {user} from {rhost}", now, hostname)
    message.set_content(
        f"{user} logged in to {hostname} with a two-factor code\n"
        f"from {rhost}, an address not among this account's recent logins,\n"
        f"at {when}.\n\n"
        f"If this was you, nothing else is needed.\n\n"
        f"If it was not you, someone knows your password and has your second factor\n"
        f"(your phone, a recovery code, or your mailbox). Change your password, and\n"
        f"contact an administrator at once: they can turn your 2FA off with\n"
        f"    twofa-admin disable {shell_word(user)}\n"
        f"so that you enroll again with a new secret.\n"
    )
    return message


def time_to_datetime(now: float) -> datetime:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(now, tz=timezone.utc)


def read_password(path: str) -> str:
    """The SMTP password: the first line of a root-only secret file (pam_twofa.system.secretfile)."""
    try:
        return secretfile.read_password(path, "the SMTP password file")
    except secretfile.SecretFileError as exc:
        raise MailError(str(exc)) from None


def _tls_context(policy: Policy) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if policy.smtp_ca_file:
        context.load_verify_locations(cafile=policy.smtp_ca_file)
    return context


class _Bounded(smtplib.SMTP):
    """smtplib client whose whole exchange fits in ``timeout``: every wait gets only what is left."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        # ``args`` and ``kwargs`` go unchanged to smtplib.SMTP or smtplib.SMTP_SSL (the MRO decides)
        self.deadline = deadline
        self.handed_over = False  # whether DATA was sent: from then on the server may have the mail
        super().__init__(*args, **kwargs)

    def data(self, msg: Any) -> tuple[int, bytes]:
        self.handed_over = True
        return super().data(msg)

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("SMTP deadline passed")
        return left

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's private hook (absent from typeshed): the plain TCP connect, before any TLS
        sock = smtplib.SMTP._get_socket(self, host, port, self._left())  # type: ignore[attr-defined]
        if isinstance(self, smtplib.SMTP_SSL):
            sock.settimeout(self._left())
            sock = self.context.wrap_socket(sock, server_hostname=self._host)  # type: ignore[attr-defined]
        return sock

    def getreply(self) -> tuple[int, bytes]:
        if self.sock is not None:
            self.sock.settimeout(self._left())
        try:
            return super().getreply()
        except smtplib.SMTPServerDisconnected as exc:
            # smtplib reports a read that timed out as a disconnection: say what happened
            if isinstance(exc.__context__, TimeoutError):
                raise TimeoutError("no SMTP reply in time") from None
            raise


class _SMTP(_Bounded):
    pass


class _SMTP_SSL(_Bounded, smtplib.SMTP_SSL):
    pass


def send(policy: Policy, message: EmailMessage) -> None:
    """Deliver ``message``; MailError (never a code in it) on any failure or timeout. SIGPIPE is
    blocked meanwhile (and one raised consumed): a server that closes while the message is being
    written must be an error here, never a signal that kills the process PAM runs in (smtplib and
    OpenSSL write without MSG_NOSIGNAL)."""
    import signal

    pending = signal.SIGPIPE in signal.sigpending()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        _send(policy, message)
    finally:
        if not pending and signal.SIGPIPE in signal.sigpending():
            signal.sigtimedwait({signal.SIGPIPE}, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def send_detached(policy: Policy, message: EmailMessage, failed: Callable[[str], None]) -> None:
    """Deliver ``message`` from a detached grandchild and return at once: a mail that only informs
    (a new-address alert, a change notice after a login) must never hold a login up for
    ``email.smtp.timeout``, nor fail it. ``failed(reason)`` runs in the grandchild when the send
    fails (it logs). The grandchild keeps no descriptor of the caller's (sshd's client socket
    included, so a closed session is not held open) and leaves with ``os._exit``: no atexit
    handler or buffered output of the caller runs twice.
    """
    import os
    import syslog

    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    try:
        if os.fork() == 0:
            os.setsid()
            syslog.closelog()  # its socket goes with the others; the next line opens a new one
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, max(65536, os.sysconf("SC_OPEN_MAX")))  # close_range(2): one call
            try:
                send(policy, message)
            except MailError as exc:
                failed(str(exc))
            except Exception as exc:  # never a traceback from a process nobody waits for
                failed(type(exc).__name__)
    finally:
        os._exit(0)


def _send(policy: Policy, message: EmailMessage) -> None:
    host, port, timeout = policy.smtp_host, policy.smtp_port, policy.smtp_timeout
    deadline = time.monotonic() + timeout
    client: _Bounded | None = None
    try:
        if policy.smtp_ssl:
            client = _SMTP_SSL(host, port, timeout=timeout, context=_tls_context(policy), deadline=deadline)
        else:
            client = _SMTP(host, port, timeout=timeout, deadline=deadline)
        try:
            if policy.smtp_starttls:
                client.starttls(context=_tls_context(policy))
            if policy.smtp_username:
                password = read_password(policy.smtp_password_file) if policy.smtp_password_file else ""
                client.login(policy.smtp_username, password)
            client.send_message(message)
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    except MailError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP {host}:{port} refused the login (code {exc.smtp_code})") from None
    except smtplib.SMTPRecipientsRefused:
        raise MailError(f"SMTP {host}:{port} refused the recipient") from None
    except smtplib.SMTPResponseException as exc:
        # an answer, even to the message itself: the server took no responsibility for it
        raise MailError(f"SMTP {host}:{port} answered {exc.smtp_code}") from None
    except TimeoutError:
        maybe = client is not None and client.handed_over
        raise MailError(f"SMTP {host}:{port} did not answer within {timeout} s", maybe) from None
    except ssl.SSLError as exc:
        maybe = client is not None and client.handed_over
        reason = exc.reason or exc.__class__.__name__
        raise MailError(f"SMTP {host}:{port}: TLS failed ({reason})", maybe) from None
    except (smtplib.SMTPException, OSError) as exc:
        maybe = client is not None and client.handed_over
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        raise MailError(f"SMTP {host}:{port}: {reason}", maybe) from None


def build_invitation(
    policy: Policy, user: str, address: str, unenrolled: str, now: float, hostname: str
) -> EmailMessage:
    """The mail inviting ``user`` to set up 2FA (``twofa-admin invite``): what their next login does under
    ``enforce.unenrolled`` and how to enroll. No code, secret or link in it: a mail that asks for nothing
    is one a phishing copy cannot imitate usefully."""
    if unenrolled == "enroll":
        how = (
            f"At your next SSH login to {hostname} you will be asked to set it up:\n"
            f"first a code mailed to you, then a QR code for your authenticator app\n"
            f"(any TOTP app: Google Authenticator, FreeOTP, Aegis, 2FAS...).\n"
            f"Have the app at hand when you log in.\n"
        )
    elif unenrolled == "email":
        how = (
            f"To set it up, log in to {hostname} and run:\n"
            f"    twofa-enroll\n"
            f"It shows a QR code for your authenticator app (any TOTP app: Google\n"
            f"Authenticator, FreeOTP, Aegis, 2FAS...). Until then, each login mails you\n"
            f"a one-time code at this address.\n"
        )
    elif unenrolled == "deny":
        how = (
            f"Until it is set up, SSH logins as {user} to {hostname} are refused.\n"
            f"To set it up, run twofa-enroll in a console session on {hostname}\n"
            f"(not over SSH), or ask an administrator to set it up with you.\n"
        )
    else:
        raise ValueError(f"unknown enforce.unenrolled value {unenrolled!r}")
    message = _message(policy, address, f"Set up two-factor authentication for {user} on {hostname}", now, hostname)
    message.set_content(
        f"SSH logins as {user} to {hostname} require two-factor authentication,\n"
        f"and it is not set up for {user} yet.\n\n"
        f"{how}\n"
        f"An administrator of {hostname} sent this reminder (twofa-admin invite).\n"
        f"It holds no code and no link: nobody will ever ask you by mail for your\n"
        f"password, your codes or your QR code. If you do not log in to {hostname},\n"
        f"ignore this message.\n"
    )
    return message
