"""What a test SMTP server (aiosmtpd on 127.0.0.1) received."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any


class Received(EmailMessage):
    """A message as a test SMTP server received it: the handler sets its envelope and session facts."""

    envelope_from: str
    envelope_to: list[str]
    tls: bool
    authenticated: bool


def received(data: bytes) -> Received:
    """The message of an SMTP DATA command (the handler then sets the envelope and session facts)."""
    return email.message_from_bytes(data, policy=email.policy.EmailPolicy(message_factory=Received))


class Mailbox:
    """Parsed messages, in arrival order, and the AUTH attempts the server was offered.

    The server's handler calls ``add`` with each message, on which it may set
    ``envelope_to`` (the RCPT addresses, used by ``to``), ``envelope_from`` and
    session facts (``tls``, ``authenticated``).
    """

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.auth_attempts: list[tuple[str, str]] = []  # (login, password)
        self.cond = threading.Condition()

    def add(self, message: EmailMessage) -> None:
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()

    def clear(self) -> None:
        with self.cond:
            self.messages.clear()

    def mark(self) -> int:
        with self.cond:
            return len(self.messages)

    def since(self, mark: int) -> list[Any]:
        with self.cond:
            return list(self.messages[mark:])

    def to(self, address: str) -> list[Any]:
        """The messages whose envelope has ``address`` as a recipient."""
        with self.cond:
            return [m for m in self.messages if address in m.envelope_to]

    def wait_new(self, mark: int, proc: Any = None, timeout: float = 15) -> Any:
        """The first message after ``mark``; None if ``proc`` exits (or time runs out) without one."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) <= mark:
                if proc is not None and proc.poll() is not None:
                    # it exited: anything it sent was accepted before it did
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.05))
            return self.messages[mark] if len(self.messages) > mark else None

    def wait_for(self, address: str, count: int = 1, timeout: float = 20) -> list[Any]:
        """At least ``count`` messages to ``address``; AssertionError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in self.messages if address in m.envelope_to]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no mail to {address} within {timeout} s (got {len(found)})")
                self.cond.wait(min(left, 0.05))


@contextlib.contextmanager
def plain_server() -> Iterator[tuple[int, list[str]]]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd, no TLS, no AUTH): (port, the DATA of each message, as text)."""
    from aiosmtpd.controller import Controller

    delivered: list[str] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            delivered.append(envelope.content.decode("utf-8", "replace"))
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, delivered
    finally:
        controller.stop()
