"""Whom the login believes at ``storage.agent_socket`` (store/agent.py), and what ``twofa-admin check`` says
about the path (cli/backends.py, ``agent_socket_problems``): issue 24, finding 4.

Real sockets, folders and owners (root: the owners are set with chown); a server of another uid runs in
a child python that drops to that uid. The same cases through pam_python: tests/pam/test_pam_agent_socket.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from pam_twofa.cli.backends import agent_socket_problems, storage_problems
from pam_twofa.policy import Policy
from pam_twofa.store import StoreError
from pam_twofa.store import protocol as agentproto
from pam_twofa.store.agent import AgentStore

pytestmark = pytest.mark.root
NOBODY = 65534


@pytest.fixture
def short():
    """A root-owned 0755 folder with a short path (a socket path holds 107 bytes): ``tmp_path`` is long."""
    folder = Path(tempfile.mkdtemp(prefix="tfa-u", dir="/tmp"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def root_agent(path: Path, answer: bytes = agentproto.frame("none")):
    """A server of this (root) process at ``path`` answering every request with ``answer``."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(4)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                if conn.recv(1000):
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return listener


def folder(path: Path, owner: int, mode: int) -> Path:
    path.mkdir()
    os.chown(path, owner, owner)
    os.chmod(path, mode)
    return path


# -- the login side: _Channel.open ------------------------------------------------------------


def test_a_root_agent_in_a_root_only_folder_is_believed(short):
    sock = folder(short / "a", 0, 0o700) / "agent.sock"
    with root_agent(sock):
        assert AgentStore(str(sock), 2).load("alice") is None


def test_a_root_agent_in_a_sticky_folder_is_believed(short):
    # /tmp: others may write, but only root may remove or rename root's socket in it
    sock = folder(short / "a", 0, 0o1777) / "agent.sock"
    with root_agent(sock):
        assert AgentStore(str(sock), 2).load("alice") is None


@pytest.mark.parametrize(
    "owner, mode, what",
    [
        (0, 0o777, "owned by uid 0, mode 0777"),
        (0, 0o770, "owned by uid 0, mode 0770"),
        (2001, 0o700, "owned by uid 2001, mode 0700"),
        (2001, 0o1777, "owned by uid 2001, mode 1777"),  # sticky, but the user owns it
    ],
)
def test_a_folder_others_can_change_is_refused(short, owner, mode, what):
    here = folder(short / "a", owner, mode)
    sock = here / "agent.sock"
    with root_agent(sock), pytest.raises(StoreError) as caught:
        AgentStore(str(sock), 2).load("alice")
    assert str(caught.value) == (
        f"agent {sock}: its folder {here} is {what}: others can replace the socket; set storage.agent_socket in"
        f" a folder only root can change (the default /run/pam-twofa), or chown root:root {here}; chmod 700 {here}"
        " if it is the agent's alone"
    )


def test_a_socket_of_another_user_is_refused(short):
    sock = folder(short / "a", 0, 0o700) / "agent.sock"
    with root_agent(sock):
        os.chown(sock, NOBODY, NOBODY)
        with pytest.raises(StoreError, match=rf"agent {sock}: the socket is owned by uid {NOBODY}, not root"):
            AgentStore(str(sock), 2).load("alice")


def test_something_else_than_a_socket_is_refused(short):
    here = folder(short / "a", 0, 0o700)
    target = here / "real.sock"
    with root_agent(target):
        os.symlink(target, here / "agent.sock")
        with pytest.raises(StoreError, match=r"agent .*/agent.sock: not a socket: remove it"):
            AgentStore(str(here / "agent.sock"), 2).load("alice")


def test_a_missing_socket_still_says_the_agent_is_not_running(short):
    with pytest.raises(StoreError, match=r"cannot connect \(No such file or directory\): is pam-twofa-agent running"):
        AgentStore(str(short / "none" / "agent.sock"), 2).load("alice")


SERVE_AS = r"""
import os, socket, sys
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])  # as root: the socket file is root's
os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[2]))
listener.listen(4)
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    with conn:
        if conn.recv(1000):
            conn.sendall(b"pta1 none 0\n")
"""


def test_a_root_socket_served_by_another_uid_is_refused(short):
    # everything on disk is right: only the peer's credentials (SO_PEERCRED) show who serves it
    sock = folder(short / "a", 0, 0o700) / "agent.sock"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE_AS, str(sock), str(NOBODY)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        assert os.lstat(sock).st_uid == 0
        with pytest.raises(StoreError) as caught:
            AgentStore(str(sock), 2).load("alice")
        assert str(caught.value) == (
            f"agent {sock}: served by a process of uid {NOBODY}, not root: its answers are not believed;"
            " stop that process and start pam-twofa-agent (as root)"
        )
    finally:
        server.kill()
        server.wait()


# -- twofa-admin check: agent_socket_problems -----------------------------------------------------


def test_a_root_only_path_has_no_problem(short):
    here = folder(short / "run", 0, 0o755)
    assert agent_socket_problems(str(here / "pam-twofa" / "agent.sock")) == []  # the agent makes the folder
    folder(here / "pam-twofa", 0, 0o700)
    assert agent_socket_problems(str(here / "pam-twofa" / "agent.sock")) == []
    with root_agent(here / "pam-twofa" / "agent.sock"):
        assert agent_socket_problems(str(here / "pam-twofa" / "agent.sock")) == []
    sticky = folder(short / "tmp", 0, 0o1777)  # as /tmp, above the socket's own folder
    folder(sticky / "tfa", 0, 0o700)
    assert agent_socket_problems(str(sticky / "tfa" / "agent.sock")) == []


def test_every_folder_above_must_be_roots_and_closed_to_writes(short):
    mine = folder(short / "home", 2001, 0o755)  # a folder a user owns (or could create)
    below = folder(mine / "run", 0, 0o755)
    folder(below / "pam-twofa", 0, 0o700)
    assert agent_socket_problems(str(below / "pam-twofa" / "agent.sock")) == [
        f"{mine}: a folder above the agent's socket must be owned by root (uid 0), not uid 2001: chown root {mine}"
    ]
    os.chown(mine, 0, 0)
    os.chmod(mine, 0o777)  # root's, but others may rename what it holds
    assert agent_socket_problems(str(below / "pam-twofa" / "agent.sock")) == [
        f"{mine}: a folder above the agent's socket is mode 0777, writable by others: chmod go-w {mine}"
    ]
    os.chmod(mine, 0o775)
    assert len(agent_socket_problems(str(below / "pam-twofa" / "agent.sock"))) == 1  # group too
    os.chmod(mine, 0o755)
    assert agent_socket_problems(str(below / "pam-twofa" / "agent.sock")) == []


def test_the_sockets_own_folder_as_the_agent_wants_it(short):
    own = folder(short / "own", 0, 0o755)
    assert agent_socket_problems(str(own / "agent.sock")) == [
        f"{own}: the agent's socket folder is mode 0755, readable by others: chown root:root {own}; chmod 700 {own}"
        " if nothing else uses it, or give the socket a folder of its own (the default /run/pam-twofa/agent.sock:"
        " the agent makes the folder)"
    ]
    os.chown(own, 2001, 2001)
    os.chmod(own, 0o700)
    assert agent_socket_problems(str(own / "agent.sock"))[0].startswith(
        f"{own}: the agent's socket folder must be owned by root (uid 0), not uid 2001"
    )


def test_links_are_followed_and_both_sides_checked(short):
    good = folder(short / "good", 0, 0o755)
    folder(good / "pam-twofa", 0, 0o700)
    os.symlink(good, short / "link")  # /var/run -> /run
    assert agent_socket_problems(str(short / "link" / "pam-twofa" / "agent.sock")) == []
    os.lchown(short / "link", 2001, 2001)
    assert agent_socket_problems(str(short / "link" / "pam-twofa" / "agent.sock")) == [
        f"{short}/link: a link above the agent's socket must be owned by root (uid 0), not uid 2001:"
        f" chown root {short}/link"
    ]
    bad = folder(short / "bad", 2001, 0o755)
    folder(bad / "pam-twofa", 0, 0o700)
    os.symlink(bad, short / "link2")  # a root-owned link into a user's folder
    assert agent_socket_problems(str(short / "link2" / "pam-twofa" / "agent.sock")) == [
        f"{bad}: a folder above the agent's socket must be owned by root (uid 0), not uid 2001: chown root {bad}"
    ]
    os.symlink(good / "pam-twofa", short / "own-link")  # the agent refuses a link as its folder
    assert agent_socket_problems(str(short / "own-link" / "agent.sock")) == [
        f"{short}/own-link: not a folder (the agent socket's folder must be one, not a link): choose another path"
    ]


def test_a_socket_of_another_user_or_not_a_socket(short):
    own = folder(short / "own", 0, 0o700)
    sock = own / "agent.sock"
    with root_agent(sock):
        os.chown(sock, NOBODY, NOBODY)
        assert agent_socket_problems(str(sock)) == [
            f"{sock}: the socket is owned by uid {NOBODY}, not root: pam-twofa-agent did not make it, and logins"
            " refuse it; stop whatever serves it and remove it"
        ]
    os.unlink(sock)
    sock.write_text("")
    assert agent_socket_problems(str(sock)) == [f"{sock}: not a socket: remove it, or choose another path"]


def test_check_reports_them_at_the_agent_socket_line(short):
    mine = folder(short / "u", 2001, 0o755)
    text = f"version: 1\nstorage:\n  backend: postgresql\n  agent_socket: {mine}/agent.sock\n"
    policy = Policy(
        str(short / "policy.yaml"), backend="postgresql", pg_dsn="dbname=twofa", agent_socket=f"{mine}/agent.sock",
        pg_key_file=str(short / "no.key"),
    )  # fmt: skip
    errors, _warnings = storage_problems(policy, text)
    mine_errors = [e for e in errors if "storage.agent_socket" in e]
    assert mine_errors == [
        f"{policy.path}:4: storage.agent_socket: {mine}: the agent's socket folder must be owned by root (uid 0),"
        f" not uid 2001: chown root:root {mine}; chmod 700 {mine} if nothing else uses it, or give the socket a"
        " folder of its own (the default /run/pam-twofa/agent.sock: the agent makes the folder) (whoever can"
        " serve the agent's socket decides who is asked for a code)"
    ]
