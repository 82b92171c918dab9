"""The agent's wire format (pam_twofa/store/protocol.py): one frame reader, used by both ends."""

import itertools
import os
import socket
import threading
import time

import pytest

from pam_twofa.store import StoreError
from pam_twofa.store import protocol as agentproto
from pam_twofa.store.agent import AgentStore

OPS = agentproto.OPERATIONS
_SOCKETS = itertools.count()


class feeder:
    """A ``recv`` giving ``chunks`` one per call, then b"" (the end of the stream); counts its calls."""

    def __init__(self, *chunks: bytes) -> None:
        self.queue = list(chunks)
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.queue.pop(0) if self.queue else b""


def test_a_frame_round_trips_with_any_text():
    body = "pam-twofa-record 2\nuser b ö'b\n\udcff end"  # a lone surrogate travels too (surrogatepass)
    data = agentproto.frame("save", body)
    assert data.startswith(b"pta1 save %d\n" % len(body.encode("utf-8", "surrogatepass")))
    assert agentproto.FrameReader().read(feeder(data), OPS) == ("save", body)
    assert agentproto.FrameReader().read(feeder(agentproto.frame("end")), OPS) == ("end", "")


def test_split_reads_one_byte_at_a_time_and_two_frames_in_one_chunk():
    data = agentproto.frame("load", "alice") + agentproto.frame("lock", "bob")
    reader = agentproto.FrameReader()
    recv = feeder(*(data[i : i + 1] for i in range(len(data))))
    assert reader.read(recv, OPS) == ("load", "alice")
    assert reader.read(recv, OPS) == ("lock", "bob")
    assert reader.read(recv, OPS) is None
    # Both frames in one chunk: the second is kept for the next read, without asking recv again.
    reader = agentproto.FrameReader()
    recv = feeder(data)
    assert reader.read(recv, OPS) == ("load", "alice")
    assert reader.read(recv, OPS) == ("lock", "bob")
    assert recv.calls == 1


def test_a_multibyte_character_split_between_reads():
    data = agentproto.frame("save", "ö" * 10)
    cut = data.index(b"\n") + 4  # inside the second "ö"
    assert agentproto.FrameReader().read(feeder(data[:cut], data[cut:]), OPS) == ("save", "ö" * 10)


@pytest.mark.parametrize("chunks", [(), (b"pta1 lo",), (b"pta1 load 5\n",), (b"pta1 load 5\nali",)])
def test_the_stream_ending_before_a_whole_frame_is_none(chunks):
    assert agentproto.FrameReader().read(feeder(*chunks), OPS) is None


def test_a_header_without_end_is_refused_after_max_header_bytes():
    recv = feeder(*[b"x" * 16] * 1000)
    with pytest.raises(agentproto.ProtocolError, match="header too long"):
        agentproto.FrameReader().read(recv, OPS)
    assert recv.calls * 16 <= agentproto.MAX_HEADER + 16  # it stopped reading at once


@pytest.mark.parametrize(
    "header, message",
    [
        (b"pta1 load %d" % (agentproto.MAX_BODY + 1), "bad frame length"),
        (b"pta1 load 99999999", "bad frame length"),
        (b"pta1 load -1", "bad frame length"),
        (b"pta1 load 1e3", "bad frame length"),
        (b"pta2 load 5", "not a pta1 frame"),
        (b"PTA1 load 5", "not a pta1 frame"),
        (b"pta1 load 5 6", "not a pta1 frame"),
        (b"GET / HTTP/1.0\r", "not a pta1 frame"),
        (b"pta1 drop 0", "unknown operation"),
        (b"pta1 ok 0", "unknown operation"),  # a status is not an operation
        (b"pta1 load \xd9\xa3", "not ASCII"),  # an Arabic-Indic digit: isdigit() would say yes
    ],
)
def test_bad_headers_are_protocol_errors(header, message):
    with pytest.raises(agentproto.ProtocolError, match=message):
        agentproto.FrameReader().read(feeder(header + b"\nalice"), OPS)


def test_an_oversized_body_is_refused_before_it_is_read():
    recv = feeder(b"pta1 save %d\n" % (agentproto.MAX_BODY + 1), b"x" * 65536)
    with pytest.raises(agentproto.ProtocolError, match="bad frame length"):
        agentproto.FrameReader().read(recv, OPS)
    assert recv.calls == 1
    with pytest.raises(agentproto.ProtocolError, match="too large"):
        agentproto.frame("save", "x" * (agentproto.MAX_BODY + 1))
    assert agentproto.FrameReader().read(feeder(agentproto.frame("save", "x" * agentproto.MAX_BODY)), OPS)


def test_a_body_that_is_not_utf8_is_a_protocol_error():
    with pytest.raises(agentproto.ProtocolError, match="not UTF-8"):
        agentproto.FrameReader().read(feeder(b"pta1 ok 2\n\xff\xfe"), agentproto.STATUSES)


def test_recv_errors_pass_through_and_what_was_read_is_kept():
    parts = [b"pta1 load 5\nal"]

    def recv():
        if parts:
            return parts.pop()
        raise TimeoutError

    reader = agentproto.FrameReader()
    with pytest.raises(TimeoutError):
        reader.read(recv, OPS)
    assert reader.read(feeder(b"ice"), OPS) == ("load", "alice")


# -- both ends use it ---------------------------------------------------------------------


def fake_agent(*answers, delay=0.0):
    """A Unix socket that answers the first request with ``answers`` sent one by one, then closes."""
    path = f"/tmp/tfa-proto-{os.getpid()}-{next(_SOCKETS)}.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(1000)
            for part in answers:
                conn.sendall(part)
                time.sleep(delay)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return path, listener, thread


@pytest.fixture
def agent_answering():
    made = []

    def make(*answers, delay=0.0):
        path, listener, thread = fake_agent(*answers, delay=delay)
        made.append((path, listener, thread))
        return AgentStore(path, 2)

    yield make
    for path, listener, thread in made:
        thread.join(5)
        listener.close()
        os.unlink(path)


def test_the_login_side_reads_an_answer_split_over_several_sends(agent_answering):
    answer = agentproto.frame("record", "pam-twofa-record 2\nuser alice\nend\n")
    store = agent_answering(answer[:3], answer[3:20], answer[20:], delay=0.05)
    assert store._one("load", "alice") == ("record", "pam-twofa-record 2\nuser alice\nend\n")


def test_the_login_side_turns_every_bad_answer_into_a_store_error(agent_answering):
    # A body that is not UTF-8 used to escape as a bare ProtocolError (decoded outside the handler).
    with pytest.raises(StoreError, match="unexpected answer \\(body is not UTF-8\\)"):
        agent_answering(b"pta1 ok 2\n\xff\xfe")._one("users")
    with pytest.raises(StoreError, match="closed the connection"):
        agent_answering(b"pta1 ok 5\nab")._one("users")
    with pytest.raises(StoreError, match="unexpected answer \\(unknown operation or status\\)"):
        agent_answering(b"pta1 load 0\n")._one("users")


def test_the_agent_side_reads_split_requests_and_stops_at_its_deadline():
    from pam_twofa.fleet.agent import Client  # the agent side: the database backend's driver is installed

    ours, theirs = socket.socketpair()
    with ours, theirs:
        client = Client(None, ours)  # type: ignore[arg-type]  # reading needs no agent
        data = agentproto.frame("lock", "alice") + agentproto.frame("end")
        theirs.sendall(data[:7])
        threading.Timer(0.1, theirs.sendall, (data[7:],)).start()
        assert client.read_frame(time.monotonic() + 5) == ("lock", "alice")
        assert client.read_frame(time.monotonic() + 5) == ("end", "")
        theirs.sendall(b"pta1 load 5\nal")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.read_frame(time.monotonic() + 0.3)
        assert time.monotonic() - started < 2
        theirs.close()
        assert client.read_frame(time.monotonic() + 5) is None  # the client went away
