"""The wire format between the login path and ``pam-twofa-agent`` (docs/store.md, "The database backend").

Both directions send frames over a Unix stream socket: a header line
``pta1 WORD LENGTH\\n`` (ASCII) and then LENGTH bytes of UTF-8 body. The
login sends an operation as WORD; the agent answers with a status:

==========  =================  ===========================================
operation   body               answer
==========  =================  ===========================================
load        user name          ``record`` (record text) or ``none``
lock        user name          opens the user's section: ``record`` / ``none``
lockw       user name          the same without reading (``discard``): ``none``
save        record text        in the section: ``ok``
delete      (empty)            in the section: ``ok`` with ``1`` or ``0``
end         (empty)            commits the section: ``ok``
users       (empty)            ``ok`` with one name a line
status      (empty)            ``ok`` with ``key value`` lines (``twofa-admin db status``)
==========  =================  ===========================================

Any operation may get ``error``, ``corrupt`` or ``rollback`` (the database shows an older
version of the user's row than this host has seen) with a one-line message. A
record travels in its text form (``record.dumps``), so the login path needs
no json. This module is imported on the login path: ``str`` methods only.
"""

TAG = "pta1"
MAX_BODY = 128 * 1024
MAX_HEADER = 64
OPERATIONS = ("load", "lock", "lockw", "save", "delete", "end", "users", "status")
STATUSES = ("record", "none", "ok", "error", "corrupt", "rollback")

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from collections.abc import Callable


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def frame(word: str, body: str = "") -> bytes:
    data = body.encode("utf-8", "surrogatepass")
    if len(data) > MAX_BODY:
        raise ProtocolError("frame too large")
    return f"{TAG} {word} {len(data)}\n".encode("ascii") + data


def parse_header(line: bytes, allowed: "tuple[str, ...]") -> tuple[str, int]:
    """(word, body length) of a header line without its newline; ProtocolError if malformed."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("header is not ASCII") from None
    parts = text.split(" ")
    if len(parts) != 3 or parts[0] != TAG:
        raise ProtocolError(f"not a {TAG} frame (another version of pam-twofa on one side?)")
    word, length = parts[1], parts[2]
    if word not in allowed:
        raise ProtocolError("unknown operation or status")
    if not (length.isascii() and length.isdigit()) or len(length) > 7 or int(length) > MAX_BODY:
        raise ProtocolError("bad frame length")
    return word, int(length)


def decode_body(data: bytes) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise ProtocolError("body is not UTF-8") from None


class FrameReader:
    """The frames of one stream, both ends' reader (the agent's requests, the login's answers).

    The reader does no I/O of its own: each ``read`` is given ``recv``, which returns the next
    bytes of the stream (``b""`` at its end) and raises what it raises (a deadline's
    TimeoutError) straight through to the caller. A frame leaves the buffer only whole: bytes
    past it stay for the next one, and a read cut short keeps what it had.
    """

    def __init__(self) -> None:
        self.buffer = b""

    def read(self, recv: "Callable[[], bytes]", allowed: "tuple[str, ...]") -> "tuple[str, str] | None":
        """The next frame as (word, body), its word one of ``allowed``; None if the stream ends
        first (even within a frame); ProtocolError if what comes is not such a frame."""
        end = self.buffer.find(b"\n")
        while end < 0:
            if len(self.buffer) > MAX_HEADER:
                raise ProtocolError("header too long")
            if not self._more(recv):
                return None
            end = self.buffer.find(b"\n")
        word, length = parse_header(self.buffer[:end], allowed)
        stop = end + 1 + length
        while len(self.buffer) < stop:
            if not self._more(recv):
                return None
        data, self.buffer = self.buffer[end + 1 : stop], self.buffer[stop:]
        return word, decode_body(data)

    def _more(self, recv: "Callable[[], bytes]") -> bool:
        """Append what ``recv`` gives; False at the end of the stream."""
        chunk = recv()
        self.buffer += chunk
        return bool(chunk)
