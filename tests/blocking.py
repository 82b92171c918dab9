"""A guard for tests that open FIFOs or take locks: fail instead of hanging."""

import contextlib
import signal


@contextlib.contextmanager
def no_block(seconds=5):
    """Fail instead of hanging if the body blocks (opening a FIFO, a lock...)."""

    def alarm(signum, frame):
        raise TimeoutError("blocked")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
