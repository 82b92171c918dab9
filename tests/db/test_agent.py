"""pam-twofa-agent and the login path's AgentStore, against a real PostgreSQL 15."""

import os
import socket
import threading
import time

import pytest

from pam_twofa.core.record import Record
from pam_twofa.store import CorruptedRecord, StoreError
from pam_twofa.store.agent import AgentStore


def client(fleet, timeout=5.0):
    return AgentStore(str(fleet.socket), timeout)


def test_load_and_a_section_through_the_agent(fleet):
    fleet.start_agent()
    store = client(fleet)
    assert store.load("alice") is None
    with store.locked("alice") as section:
        assert section.record is None
        section.save(Record("alice", key=b"k" * 20, last_step=5))
    assert store.load("alice") == Record("alice", key=b"k" * 20, last_step=5)
    assert fleet.store().load("alice").last_step == 5  # it is really in the database
    assert store.users() == ["alice"]
    with store.locked("alice") as section:
        assert section.delete() is True
    assert fleet.store().load("alice") is None


def test_a_client_that_goes_away_mid_section_is_rolled_back(fleet):
    fleet.start_agent()
    fleet.store().update("alice", lambda old: Record("alice", last_step=1))
    store = client(fleet)
    with pytest.raises(RuntimeError):
        with store.locked("alice") as section:
            section.save(Record("alice", last_step=2))
            raise RuntimeError("pam_python died")
    assert fleet.store().load("alice").last_step == 1
    # and the lock is free again at once
    with client(fleet, timeout=2).locked("alice") as section:
        assert section.record.last_step == 1


def test_a_section_held_past_the_bound_is_rolled_back_and_unlocked(fleet):
    fleet.start_agent(None, "--section-timeout", "1")
    store = client(fleet)
    section = store.locked("alice").__enter__()
    section.save(Record("alice", last_step=9))
    time.sleep(1.5)
    with pytest.raises(StoreError, match="closed the connection|connection failed"):
        section.__exit__(None, None, None)
    assert fleet.store().load("alice") is None
    with client(fleet).locked("alice") as other:
        assert other.record is None


def test_sections_of_one_user_are_serialised_across_agents(fleet, tmp_path):
    fleet.start_agent()
    second = fleet.write_policy(path=tmp_path / "etc" / "b.yaml", socket=str(fleet.socket) + "-b")
    fleet.start_agent(second)
    a, b = client(fleet), AgentStore(str(fleet.socket) + "-b", 5)
    order = []
    inside = threading.Event()

    def hold():
        with a.locked("alice") as section:
            inside.set()
            time.sleep(0.8)
            section.save(Record("alice", last_step=1))
            order.append("a")

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(5)
    with b.locked("alice") as section:
        order.append("b")
        assert section.record is not None and section.record.last_step == 1
    thread.join()
    assert order == ["a", "b"]


def test_only_root_may_talk_to_the_agent(fleet):
    fleet.start_agent()
    assert os.stat(fleet.socket).st_mode & 0o777 == 0o600
    assert os.stat(fleet.socket.parent).st_mode & 0o777 == 0o700
    # Even a non-root peer that could reach the socket is dropped on accept (SO_PEERCRED).
    os.chmod(fleet.socket.parent, 0o711)
    os.chmod(fleet.socket, 0o666)
    try:
        pid = os.fork()
        if pid == 0:  # the child: become nobody and ask
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect(str(fleet.socket))
                try:
                    s.sendall(b"pta1 load 5\nalice")
                    code = 0 if s.recv(100) == b"" else 2
                except (ConnectionResetError, BrokenPipeError):
                    code = 0
            except BaseException as exc:
                (fleet.root / "child-error").write_text(repr(exc))
            finally:
                os._exit(code)
        _pid, status = os.waitpid(pid, 0)
        error = (fleet.root / "child-error").read_text() if (fleet.root / "child-error").exists() else ""
        assert os.waitstatus_to_exitcode(status) == 0, error
    finally:
        os.chmod(fleet.socket.parent, 0o700)
        os.chmod(fleet.socket, 0o600)
    assert client(fleet).load("alice") is None  # root still is served


def test_garbage_and_sql_in_fields_change_nothing(fleet):
    fleet.start_agent()
    fleet.store().update("alice", lambda old: Record("alice", last_step=1))
    for data in (b"GET / HTTP/1.0\r\n\r\n", b"pta1 load 999999999\n", b"pta1 drop 0\n", b"\xff" * 100 + b"\n"):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(fleet.socket))
            s.sendall(data)
            assert s.recv(100) == b""  # dropped
    store = client(fleet)
    nasty = "x'; DROP TABLE twofa_records; --"
    assert store.load(nasty) is None
    with store.locked(nasty) as section:
        section.save(Record(nasty))
    with pytest.raises(StoreError, match="malformed record"):
        with store.locked("alice") as section:
            section.channel.call("save", "pam-twofa-record 2\nuser bob\nend\n")
    with pytest.raises(StoreError, match="outside a section"):
        store._one("save", "x")
    assert fleet.store().load("alice").last_step == 1
    assert sorted(fleet.store().users()) == ["alice", nasty]


def test_agent_down_killed_and_restarted(fleet):
    store = client(fleet, timeout=2)
    with pytest.raises(StoreError, match="cannot connect.*pam-twofa-agent running"):
        store.load("alice")
    agent = fleet.start_agent()
    section = store.locked("alice").__enter__()
    agent.kill()
    with pytest.raises(StoreError):
        section.save(Record("alice", last_step=3))
    section.channel.close()
    assert fleet.store().load("alice") is None  # nothing half-applied
    fleet.start_agent()  # a stale socket file is replaced
    assert store.load("alice") is None


def test_database_down_then_back_without_restarting_the_agent(fleet):
    fleet.write_policy(offline=(0, 60))  # without the offline copy (tests/db/test_offline.py has it)
    fleet.start_agent()
    store = client(fleet, timeout=6)
    fleet.store().update("alice", lambda old: Record("alice", last_step=1))
    assert store.load("alice").last_step == 1  # a pooled connection now exists
    fleet.server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="database"):
            store.load("alice")
        assert time.monotonic() - started < 6
    finally:
        fleet.server.start()
    assert store.load("alice").last_step == 1  # the agent made a new connection by itself


def test_the_wrong_key_is_a_corrupted_record(fleet, tmp_path):
    from pam_twofa.fleet import key as fleetkey

    fleet.store().update("alice", lambda old: Record("alice", key=b"k" * 20))
    other = tmp_path / "etc" / "other.key"
    fleetkey.write_new(str(other), fleetkey.Keyring.generate())
    agent = fleet.start_agent(fleet.write_policy(path=tmp_path / "etc" / "w.yaml", key_file=other))
    with pytest.raises(CorruptedRecord, match="wrong fleet key"):
        client(fleet).load("alice")
    assert "does not open the database's canary" in agent.output()


def test_a_dsn_whose_first_host_is_dead_and_second_alive(fleet):
    from pgserver import free_port

    port = fleet.server.port
    dsn = f"host=127.0.0.1,127.0.0.1 port={free_port()},{port} dbname={fleet.dbname} user=twofa sslmode=disable"
    fleet.write_policy(dsn=dsn)
    fleet.start_agent()
    fleet.store().update("alice", lambda old: Record("alice", last_step=4))
    assert client(fleet).load("alice").last_step == 4


def test_a_hung_agent_is_bounded_by_the_deadline(tmp_path):
    path = "/tmp/tfa-hung-%d.sock" % os.getpid()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="no answer within 1 s"):
            AgentStore(path, 1).load("alice")
        assert time.monotonic() - started < 2
    finally:
        listener.close()
        os.unlink(path)


def test_a_row_locked_past_statement_timeout_fails_in_bounded_time(fleet):
    fleet.write_policy(statement_timeout=1)
    fleet.start_agent()
    holder = fleet.store()
    store = client(fleet, timeout=3)  # what login.py gives: connect_timeout + statement_timeout + 1 = 2 + 1 + 1
    with holder.locked("alice"):  # another host's login (or an admin) holds the row
        started = time.monotonic()
        with pytest.raises(StoreError, match="agent: database"):
            with store.locked("alice"):
                pass
        assert time.monotonic() - started < 3
    with store.locked("alice") as section:  # and the agent's connection is usable again at once
        assert section.record is None


def _row_is_locked(fleet, user):
    """Whether another transaction holds ``user``'s row (FOR UPDATE NOWAIT from a third connection)."""
    import psycopg
    import psycopg.errors

    conn = psycopg.connect(fleet.server.hosts_dsn(fleet.dbname), password=fleet.server.password)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM twofa_records WHERE user_name = %s FOR UPDATE NOWAIT", (user,))
            assert cur.fetchone() == (1,)  # the row is there: the answer is about its lock
        return False
    except psycopg.errors.LockNotAvailable:
        return True
    finally:
        conn.close()


@pytest.mark.parametrize("read", [True, False], ids=["lock", "lockw"])
def test_lock_and_lockw_hold_the_same_row_lock(fleet, read):
    # lockw (a section opened without reading: discard) used to take only the advisory lock, so a
    # writer that locks rows (FOR UPDATE, UPDATE) went through while it was held.
    fleet.start_agent()
    for user in ("alice", "bob"):
        fleet.store().update(user, lambda old, u=user: Record(u, last_step=1))
    section = client(fleet).locked("alice", read=read).__enter__()
    try:
        assert (section.record is not None) is read
        assert _row_is_locked(fleet, "alice")
        assert not _row_is_locked(fleet, "bob")  # only the section's own user's row
    finally:
        section.__exit__(None, None, None)
    assert not _row_is_locked(fleet, "alice")  # released at the end of the section


@pytest.mark.parametrize(
    "first, then", [(False, True), (True, False), (False, False)], ids=["lockw-lock", "lock-lockw", "lockw-lockw"]
)
def test_lockw_and_lock_of_one_user_exclude_each_other_across_agents(fleet, tmp_path, first, then):
    fleet.start_agent()
    second = fleet.write_policy(path=tmp_path / "etc" / "b.yaml", socket=str(fleet.socket) + "-b")
    fleet.start_agent(second)
    fleet.store().update("alice", lambda old: Record("alice", last_step=1))
    a, b = client(fleet), AgentStore(str(fleet.socket) + "-b", 5)
    order = []
    inside = threading.Event()

    def hold():
        with a.locked("alice", read=first) as section:
            inside.set()
            time.sleep(0.8)
            section.delete()
            order.append("a")

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(5)
    with b.locked("alice", read=then) as section:
        order.append("b")
        assert section.record is None  # it waited for a's delete
        assert section.delete() is False
    thread.join()
    assert order == ["a", "b"]


def test_lockw_discards_a_record_that_does_not_open(fleet):
    fleet.start_agent()
    fleet.store().update("alice", lambda old: Record("alice", last_step=1))
    fleet.server.psql("UPDATE twofa_records SET sealed = 'x 00 00' WHERE user_name = 'alice'", fleet.dbname)
    store = client(fleet)
    with pytest.raises(CorruptedRecord):
        store.load("alice")
    with pytest.raises(CorruptedRecord):
        with store.locked("alice"):
            pass
    assert store.discard("alice") is True  # lockw locks the row without opening it
    assert store.users() == []


@pytest.mark.parametrize("mode, how", [(0o750, "readable by"), (0o707, "writable by"), (0o701, "open to")])
def test_the_agent_refuses_a_socket_folder_others_can_enter(tmp_path, mode, how):
    from types import SimpleNamespace

    from pam_twofa.fleet.agent import Agent

    folder = tmp_path / "agent"
    folder.mkdir()
    os.chmod(folder, mode)
    fake = SimpleNamespace(policy=SimpleNamespace(agent_socket=str(folder / "agent.sock")))
    with pytest.raises(StoreError) as info:
        Agent.bind(fake)  # type: ignore[arg-type]  # bind reads only the policy's socket path
    assert str(info.value) == (
        f"{folder}: the agent's socket folder is mode {mode:04o}, "
        f"{how} others: chown root:root {folder}; chmod 700 {folder}"
    )
    assert not (folder / "agent.sock").exists()
