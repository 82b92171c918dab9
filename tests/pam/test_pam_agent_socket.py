"""Who the login believes at ``storage.agent_socket``, and SIGPIPE, through the real pam_python.so (issue 24,
findings 4 and 6).

The login believes the agent's ``none`` ("not enrolled": not asked), so whoever serves the socket decides
who is asked for a code. Before a request the module wants a root-owned socket, in a root-owned folder that
others cannot write to, served by a uid 0 process (SO_PEERCRED). Each case below has one fake agent (a
small Python server speaking pam_twofa/store/protocol.py, in Debian's python3) that breaks one of those
rules; alice is enrolled in the real database, and a real agent of this checkout lets her in with her code.

The SIGPIPE case: an agent that stops reading before the login writes must give an ordinary PAM failure,
not kill the PAM application (pamtester runs with SIGPIPE at its default action, as a program that does
not ignore it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from pam_harness import KEY, MSG_ERROR, Scratch, settle
from pgserver import Fleet

NOBODY = 65534
ALICE_UID = 2001  # pam_harness.USERS

# A fake agent: argv = socket path, what it answers, uid it serves as, how it drops to that uid, record text.
#   answers "none": every lookup gets ``none``, every write ``ok`` (everyone looks not enrolled);
#   answers "stop-reading": ``load`` gets the record; ``lock`` gets it too, but only after the agent shut
#   its reading side, so the login's next write (``save``) meets a peer that reads no more.
#   drop "before-bind": the socket is made by that uid; "before-listen": by root, served by that uid.
FAKE_AGENT = r"""
import os, socket, sys

path, answers, uid, drop, record = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]


def become(uid):
    if uid:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def frame(word, body=""):
    data = body.encode()
    return f"pta1 {word} {len(data)}\n".encode() + data


def request(conn):
    buffer = b""
    while b"\n" not in buffer:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        buffer += chunk
    header, _, body = buffer.partition(b"\n")
    word, length = header.decode().split(" ")[1:]
    while len(body) < int(length):
        chunk = conn.recv(4096)
        if not chunk:
            return None
        body += chunk
    return word


listener = socket.socket(socket.AF_UNIX)
if drop == "before-bind":
    become(uid)
    listener.bind(path)
else:
    listener.bind(path)
    become(uid)
listener.listen(16)
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    with conn:
        while True:
            word = request(conn)
            if word is None:
                break
            if answers == "none":
                conn.sendall(frame("none" if word in ("load", "lock", "lockw") else "ok"))
            elif word == "load":
                conn.sendall(frame("record", record))
            else:
                conn.shutdown(socket.SHUT_RD)
                conn.sendall(frame("record", record))
                break
"""


class FakeAgent:
    def __init__(self, path: Path, answers: str, uid: int = 0, drop: str = "before-bind", record: str = "") -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-I", "-c", FAKE_AGENT, str(path), answers, str(uid), drop, record],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "ready\n", line + self.proc.stdout.read()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class World:
    """One host of a fleet: the test's Scratch, a real database, alice enrolled, a real agent."""

    def __init__(self, scratch: Scratch, fleet: Fleet) -> None:
        self.scratch = scratch
        self.fleet = fleet
        self.fakes: list[FakeAgent] = []
        self.folders: list[Path] = []
        self.point_at(str(fleet.socket))
        self.agent = fleet.start_agent(scratch.policy_path)
        self.alice = scratch.enroll("alice")

    def point_at(self, socket: str) -> None:
        """The policy (enforce.mode off: only enrolled users are asked) with ``socket`` as agent_socket."""
        self.scratch.write_policy()
        text = self.scratch.policy_path.read_text()
        head, tail = text.split("storage:\n", 1)[0], text.split("on_error:", 1)[1]
        storage = self.fleet.policy_text(socket=socket).split("storage:\n", 1)[1]
        storage = storage.replace(str(self.fleet.state_dir), str(self.scratch.state_dir))
        self.scratch.write_policy_text(head + "storage:\n" + storage + "on_error:" + tail)

    def folder(self, owner: int, mode: int) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="tfa-", dir="/tmp"))  # short: a socket path holds 107 bytes
        self.folders.append(folder)
        os.chown(folder, owner, owner)
        os.chmod(folder, mode)
        return folder

    def fake(self, folder: Path, answers: str, **how) -> FakeAgent:
        agent = FakeAgent(folder / "agent.sock", answers, **how)
        self.fakes.append(agent)
        self.point_at(str(agent.path))
        return agent

    def close(self) -> None:
        for agent in self.fakes:
            agent.stop()
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def world(pg_server, scratch, tmp_path):  # noqa: F811
    fleet = Fleet(pg_server, tmp_path / "fleet-db")
    scratch.sensitive.add(pg_server.password)
    made = World(scratch, fleet)
    try:
        yield made
    finally:
        made.close()
        fleet.close()


def refused(result, *needles: str) -> None:
    """Denied without a prompt (the store failed: on_error deny), the reason in syslog."""
    assert result.denied and not result.prompted and MSG_ERROR in result.output, result
    assert result.log_with("user=alice", "result=error: store", *needles), result


def test_a_real_agent_is_believed(world):
    settle(4)
    result = world.scratch.login(KEY, "alice", world.alice.code())
    assert result.ok and result.prompted, result
    asked = world.scratch.login(KEY, "alice")  # no code typed: asked, and refused
    assert asked.denied and asked.prompted, asked


def test_a_fake_agent_of_another_user_in_a_folder_others_can_write_is_refused(world):
    # Before the fix, its "none" let alice in without a code.
    world.fake(world.folder(0, 0o777), "none", uid=NOBODY)
    refused(world.scratch.login(KEY, "alice"), f"owned by uid {NOBODY}, not root")


def test_a_fake_agent_of_root_in_a_folder_a_user_owns_is_refused(world):
    # The socket and its server are root's, but the user owning the folder could swap the socket at will.
    folder = world.folder(ALICE_UID, 0o755)
    world.fake(folder, "none")
    refused(world.scratch.login(KEY, "alice"), f"its folder {folder} is owned by uid {ALICE_UID}")


def test_a_root_socket_served_by_a_process_of_another_user_is_refused(world):
    # Everything on disk is right (root made the socket in a root-only folder), but the process that
    # listens is nobody's: only the peer's credentials tell.
    world.fake(world.folder(0, 0o700), "none", uid=NOBODY, drop="before-listen")
    refused(world.scratch.login(KEY, "alice"), f"served by a process of uid {NOBODY}, not root")


def test_an_agent_that_stops_reading_does_not_kill_the_pam_application(world):
    # SIGPIPE is at its default action in pamtester, as in a program that does not ignore it
    # (subprocess restores it for its children: restore_signals), so the test can fail.
    ignored = world.scratch.env.run(["sh", "-c", "grep SigIgn /proc/self/status"])
    assert int(ignored.output.split()[-1], 16) & (1 << (signal.SIGPIPE - 1)) == 0, ignored
    from pam_twofa.store import agent as agent_store

    record = agent_store.AgentStore(str(world.fleet.socket), 5).load("alice")  # alice's record, from the real agent
    assert record is not None and record.enrolled
    from pam_twofa.core.record import dumps

    world.fake(world.folder(0, 0o700), "stop-reading", record=dumps(record))
    settle(4)
    result = world.scratch.login(KEY, "alice", world.alice.code())
    assert result.rc != -signal.SIGPIPE, f"pamtester was killed by SIGPIPE:\n{result}"
    assert result.rc > 0 and result.denied and result.prompted and MSG_ERROR in result.output, result
    assert result.log_with("user=alice", "result=error: store", "Broken pipe"), result
