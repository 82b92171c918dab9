"""The login path's store with the database backend: the ``Store`` interface over the agent's socket.

``pam-twofa-agent`` holds the database connections and the fleet key; this
side only speaks ``store.protocol`` over a Unix socket, with ``_socket`` (the
``socket`` module costs the login path its import) and ``str`` methods. Every
operation has a fixed deadline (connect and each answer), so a hung agent or
database gives ``on_error``'s result in bounded time; any failure is a
``StoreError`` naming the cause, which ``login`` turns into ``on_error``.

One connection per operation or section: nothing is held open while the user
types, and the agent rolls a section back if this side goes away.

An answer is believed only from root: before the first request the socket
must be a root-owned socket in a root-owned folder that others cannot write
to, and the process serving it must be uid 0 (SO_PEERCRED). Otherwise anyone
who can serve ``storage.agent_socket`` (a path in a folder a user can create)
could answer ``none`` and turn the second factor off. Writes use
MSG_NOSIGNAL: an agent that closes first must not kill the PAM application
with SIGPIPE (sshd ignores it, other callers may not).
"""

import _socket
import os
import stat  # loaded with os at startup: no cost
import sys
import time

from pam_twofa.core.record import Record, RecordError, dumps, loads
from pam_twofa.store import CorruptedRecord, RolledBack, Section, Store, StoreError, storable_name
from pam_twofa.store import protocol as agentproto

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from types import TracebackType

_REPLIES = agentproto.STATUSES


class _Channel:
    """One connection to the agent, every read and write bounded by the operation's deadline."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: _socket.socket | None = None
        self.frames = agentproto.FrameReader()

    def open(self) -> None:
        _check_socket_path(self.path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
            uid = _peer_uid(sock)
        except TimeoutError:
            sock.close()
            raise StoreError(f"agent {self.path}: no answer within {self.timeout:g} s") from None
        except OSError as exc:
            sock.close()
            raise StoreError(
                f"agent {self.path}: cannot connect ({exc.strerror or exc}): is pam-twofa-agent running?"
            ) from None
        if uid != 0:
            # The path checks passed, so the socket was swapped since, or a root service bound it and
            # dropped its privileges before listening: either way not pam-twofa-agent, which runs as root.
            sock.close()
            raise StoreError(
                f"agent {self.path}: served by a process of uid {uid}, not root: its answers are not believed; "
                "stop that process and start pam-twofa-agent (as root)"
            )
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def call(self, operation: str, body: str = "") -> tuple[str, str]:
        """Send one operation and wait for its answer until the deadline: (status, body)."""
        if self.sock is None:
            self.open()
        sock = self.sock
        assert sock is not None
        deadline = time.monotonic() + self.timeout
        try:
            sock.settimeout(self.timeout)
            sock.sendall(agentproto.frame(operation, body), _socket.MSG_NOSIGNAL)
            answer = self.frames.read(lambda: self._recv(deadline), _REPLIES)
        except TimeoutError:
            self.close()
            raise StoreError(
                f"agent {self.path}: no answer within {self.timeout:g} s (database slow or unreachable?)"
            ) from None
        except agentproto.ProtocolError as exc:
            self.close()
            raise StoreError(f"agent {self.path}: unexpected answer ({exc})") from None
        except OSError as exc:
            self.close()
            raise StoreError(f"agent {self.path}: connection failed ({exc.strerror or exc})") from None
        if answer is None:
            self.close()
            raise StoreError(f"agent {self.path}: closed the connection (stopped or restarted?)")
        status, text = answer
        if status == "error":
            raise StoreError(f"agent: {text}")
        if status == "corrupt":
            raise CorruptedRecord(f"agent: {text}")
        if status == "rollback":
            raise RolledBack(f"agent: {text}")
        return status, text

    def _recv(self, deadline: float) -> bytes:
        """The next bytes from the agent (b"" when it closed); TimeoutError past ``deadline``."""
        left = deadline - time.monotonic()
        sock = self.sock
        if left <= 0 or sock is None:
            raise TimeoutError
        sock.settimeout(left)
        return sock.recv(65536)


def _check_socket_path(path: str) -> None:
    """StoreError unless ``path`` is a socket owned by root in a root-owned folder others cannot change.

    A missing socket is left to ``connect``, whose message says the agent is not running. A
    folder that others may write to passes only with the sticky bit (``/tmp``): then nobody but
    root can remove or rename root's socket in it. These checks name what to fix; the peer's
    credentials, checked after connecting, are what closes the race with a swapped socket.
    """
    folder = path.rpartition("/")[0] or "/"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"agent {path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISSOCK(st.st_mode):  # lstat: a link is not a socket either
        raise StoreError(f"agent {path}: not a socket: remove it, or set storage.agent_socket")
    if st.st_uid != 0:
        raise StoreError(
            f"agent {path}: the socket is owned by uid {st.st_uid}, not root, so pam-twofa-agent did not create"
            " it: its answers are not believed; stop whatever serves it, remove it, and keep storage.agent_socket"
            " in a folder only root can change (the default /run/pam-twofa)"
        )
    try:
        st = os.stat(folder)
    except OSError as exc:
        raise StoreError(f"agent {path}: cannot read its folder {folder} ({exc.strerror or exc})") from None
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0 or (mode & 0o022 and not mode & stat.S_ISVTX):
        raise StoreError(
            f"agent {path}: its folder {folder} is owned by uid {st.st_uid}, mode {mode:04o}: others can"
            " replace the socket; set storage.agent_socket in a folder only root can change (the default"
            f" /run/pam-twofa), or chown root:root {folder}; chmod 700 {folder} if it is the agent's alone"
        )


def _peer_uid(sock: "_socket.socket") -> int:
    """The uid of the process serving the connected ``sock`` (SO_PEERCRED: struct ucred, pid uid gid)."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(creds[4:8], sys.byteorder)


def _record(status: str, text: str, user: str) -> Record | None:
    if status == "none":
        return None
    if status != "record":
        raise StoreError(f"agent: unexpected answer {status!r}")
    try:
        return loads(text, user)
    except RecordError as exc:
        raise CorruptedRecord(f"agent: record of {user} does not parse ({exc})") from None


def _check_name(user: str) -> None:
    # Here, not only in the agent: a name too long for a frame would otherwise be a protocol error.
    if not storable_name(user):
        raise StoreError("user name cannot be stored (empty, control characters, or too long)")


class _AgentSection(Section):
    def __init__(self, store: "AgentStore", user: str, read: bool) -> None:
        self.store = store
        self.user = user
        self.read = read
        self.record = None
        self.channel = store.channel()

    def __enter__(self) -> "_AgentSection":
        _check_name(self.user)
        try:
            status, text = self.channel.call("lock" if self.read else "lockw", self.user)
            self.record = _record(status, text, self.user) if self.read else None
        except BaseException:
            self.channel.close()
            raise
        return self

    def __exit__(
        self, exc_type: "type[BaseException] | None", exc: "BaseException | None", tb: "TracebackType | None"
    ) -> None:
        try:
            if exc_type is None:
                self.channel.call("end")  # the commit: a failure here means nothing was written
        finally:
            self.channel.close()  # on an exception, closing makes the agent roll back

    def save(self, record: Record) -> None:
        if record.user != self.user:
            raise StoreError("a record can only be saved in its own user's section")
        self.channel.call("save", dumps(record))
        self.record = record

    def delete(self) -> bool:
        _status, text = self.channel.call("delete")
        self.record = None
        return text == "1"


class AgentStore(Store):
    """``Store`` through ``pam-twofa-agent`` at ``path``; ``timeout``: seconds for each answer."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout

    def channel(self) -> _Channel:
        return _Channel(self.path, self.timeout)

    def _one(self, operation: str, body: str = "") -> tuple[str, str]:
        channel = self.channel()
        try:
            return channel.call(operation, body)
        finally:
            channel.close()

    def load(self, user: str) -> Record | None:
        _check_name(user)
        status, text = self._one("load", user)
        return _record(status, text, user)

    def locked(self, user: str, read: bool = True) -> _AgentSection:
        return _AgentSection(self, user, read)

    def users(self) -> list[str]:
        _status, text = self._one("users")
        return text.split("\n") if text else []

    def status(self) -> str:
        """The agent's ``key value`` lines (``twofa-admin db status``)."""
        return self._one("status")[1]
