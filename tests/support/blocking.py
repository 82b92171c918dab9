"""A guard for tests that open FIFOs or take locks: fail instead of hanging."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def no_block(seconds: float = 5) -> Iterator[None]:
    """Fail the test if the body blocks (a FIFO opened without O_NONBLOCK, a lock never released).

    It raises AssertionError, not TimeoutError: TimeoutError is an OSError, which
    the code under test may catch and handle, and the block would go unnoticed.
    """

    def expired(_signum, _frame):
        raise AssertionError(f"blocked for more than {seconds} s (a FIFO opened blocking? a lock held?)")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
