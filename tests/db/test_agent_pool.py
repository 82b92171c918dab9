"""The agent's database connections against a real PostgreSQL 15: dead pooled connections are dropped
before a login uses them, and a statement or lock timeout is neither retried nor a reason to drop a
healthy connection (docs/store.md, "The agent's connections")."""

import socket
import struct
import threading
import time

import pytest

from pam_twofa.core.record import Record
from pam_twofa.fleet.agent import RETRIED
from pam_twofa.store import StoreError
from pam_twofa.store.agent import AgentStore


def agent_backends(fleet, but=()):
    """The process ids of the database sessions of the agent (application_name pam-twofa), but ``but``."""
    out = fleet.server.psql(
        f"SELECT pid FROM pg_stat_activity WHERE datname = '{fleet.dbname}' AND application_name = 'pam-twofa'",
        fleet.dbname,
    )
    return {int(pid) for pid in out.split()} - set(but)


def fill_the_pool(fleet, size):
    """``size`` sections open at once through the agent (so ``size`` connections), then all ended:
    the pool holds ``size`` idle connections, each used once."""
    entered = threading.Barrier(size + 1)
    done = threading.Event()
    errors = []

    def hold(user):
        try:
            with AgentStore(str(fleet.socket), 10).locked(user) as section:
                section.save(Record(user, last_step=1))
                entered.wait(10)
                done.wait(10)
        except Exception as exc:  # reported by the assert below
            errors.append(exc)
            entered.abort()

    threads = [threading.Thread(target=hold, args=(f"user{i}",)) for i in range(size)]
    for thread in threads:
        thread.start()
    entered.wait(10)
    busy = agent_backends(fleet)
    done.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    return busy


def test_the_first_login_after_a_database_restart_succeeds(fleet):
    """Before psycopg 3 (main, 2026-12): the first two logins after a restart failed, the third succeeded
    (one retry per login, each on the next dead connection of the pool)."""
    agent = fleet.start_agent(fleet.policy_path, "--pool", "8")
    before = fill_the_pool(fleet, 8)
    assert len(before) == 8  # eight connections, now idle in the agent's pool
    fleet.server.stop()  # -m fast: what systemctl restart postgresql does
    fleet.server.start()
    assert agent_backends(fleet) == set()  # the pooled connections are all dead
    store = AgentStore(str(fleet.socket), 5)
    started = time.monotonic()
    assert store.load("user0") == Record("user0", last_step=1)  # the first load
    with store.locked("user1") as section:  # the first section
        assert section.record == Record("user1", last_step=1)
        section.save(Record("user1", last_step=2))
    assert time.monotonic() - started < 1  # no timeout waited for on the way
    assert fleet.store().load("user1").last_step == 2
    assert len(agent_backends(fleet)) == 1  # the dead ones dropped, one new connection made and reused
    assert RETRIED not in agent.output()  # found dead before use, not by a failed statement


class Proxy:
    """A TCP relay in front of the server, to play a server host that vanished: ``vanish()`` ends
    every relayed session on the server's side without a word to the client (no FIN: its socket
    stays quiet, so the agent's check before use cannot tell) and answers the client's next bytes
    with a reset, as a host that rebooted would. Connections made afterwards are relayed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.sessions: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port))
            gone = threading.Event()
            self.sessions.append((client, server, gone))
            threading.Thread(target=self._pump, args=(client, server, gone, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, gone, False), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, gone: threading.Event, from_client: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if gone.is_set():
                if from_client and data:  # the client speaks to the vanished host: a reset
                    source.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    source.close()
                return
            if not data:
                sink.close()
                return
            sink.sendall(data)

    def vanish(self) -> None:
        for _client, server, gone in self.sessions:
            gone.set()
            server.close()
        self.sessions = []

    def close(self) -> None:
        self.listener.close()


def test_connections_to_a_vanished_server_fail_once_then_a_new_one_serves(fleet):
    """Pooled connections that look alive and are dead (their server's host vanished: no FIN, a reset
    at the first bytes): the first fails in use, and the login's operation is tried once more on a
    new connection, not on the next dead one of the pool (before: the first login failed)."""
    proxy = Proxy(fleet.server.port)
    try:
        host, port = proxy.address
        fleet.write_policy(dsn=f"host={host} port={port} dbname={fleet.dbname} user=twofa sslmode=disable")
        agent = fleet.start_agent(fleet.policy_path, "--pool", "2")
        fill_the_pool(fleet, 2)
        proxy.vanish()
        store = AgentStore(str(fleet.socket), 5)
        started = time.monotonic()
        assert store.load("user0") == Record("user0", last_step=1)
        with store.locked("user1") as section:
            section.save(Record("user1", last_step=2))
        assert time.monotonic() - started < 1
        assert fleet.store().load("user1") == Record("user1", last_step=2)
        assert agent.output().count(RETRIED) == 1  # the other dead one dropped unused
    finally:
        proxy.close()


def test_a_terminated_session_is_dropped_before_use(fleet):
    """A pooled connection whose session the server ended (pg_terminate_backend: a last message and
    the end of the stream) is found dead before a login uses it: a new one serves at once."""
    agent = fleet.start_agent(fleet.policy_path, "--pool", "2")
    store = AgentStore(str(fleet.socket), 5)
    admin = fleet.store()
    admin.update("alice", lambda old: Record("alice", last_step=3))
    admin.close()  # its session is not the agent's (the same application_name)
    assert store.load("alice") == Record("alice", last_step=3)
    (pid,) = agent_backends(fleet)
    fleet.server.psql(f"SELECT pg_terminate_backend({pid})", fleet.dbname)
    # pg_terminate_backend only signals the session: wait until it has ended (its last message and
    # the end of the stream sent), so the connection is dead when the next login comes, as meant.
    deadline = time.monotonic() + 10
    while pid in agent_backends(fleet) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid not in agent_backends(fleet)
    assert store.load("alice") == Record("alice", last_step=3)
    with store.locked("alice") as section:
        section.save(Record("alice", last_step=4))
    assert len(agent_backends(fleet) - {pid}) == 1
    assert RETRIED not in agent.output()


@pytest.mark.parametrize("timeout", [1, 2])
def test_a_row_locked_past_statement_timeout_fails_once_and_keeps_the_connection(fleet, timeout):
    """A lock or statement timeout is not a broken connection: the section fails once, in about one
    timeout (before: the agent dropped the connection and tried again, two timeouts), and the same
    connection serves the next login."""
    fleet.write_policy(statement_timeout=timeout)
    agent = fleet.start_agent(fleet.policy_path, "--pool", "1")
    store = AgentStore(str(fleet.socket), timeout + 3)  # what login.py gives: connect + statement + 1
    assert store.load("alice") is None
    (agent_pid,) = agent_backends(fleet)
    holder = fleet.store()  # another host's login (or an admin) holds the row
    with holder.locked("alice"):
        holder_pid = holder.connection().info.backend_pid
        started = time.monotonic()
        with pytest.raises(StoreError, match="agent: database"):
            with store.locked("alice"):
                pass
        elapsed = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(StoreError, match="agent: database"):  # and again: the same connection waits
            with store.locked("alice"):
                pass
        elapsed_again = time.monotonic() - started
    assert timeout * 0.9 < elapsed < timeout * 1.5, elapsed
    assert timeout * 0.9 < elapsed_again < timeout * 1.5, elapsed_again
    assert agent_backends(fleet, but={holder_pid}) == {agent_pid}  # not dropped, not replaced
    with store.locked("alice") as section:  # free again: the same connection, usable at once
        assert section.record is None
        section.save(Record("alice", last_step=7))
    assert agent_backends(fleet, but={holder_pid}) == {agent_pid}
    assert store.load("alice") == Record("alice", last_step=7)
    assert RETRIED not in agent.output()
