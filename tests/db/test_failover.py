"""Failover: the primary dies, its standby is promoted, the agents carry on (docs/many-hosts.md, "Failover").

A real PostgreSQL 15 primary and streaming standby (tests/pgreplica.py), one
synchronous and one asynchronous pair for the module; two agents (two hosts)
reach them through libpq's multi-host dsn with ``target_session_attrs=read-write``
and TLS verify-full. The primary is SIGKILLed with all its processes, the test
promotes the standby, and nothing is restarted on the hosts.

- Synchronous standby: nothing committed is lost. A code used just before the
  kill is refused as replayed after it, a lockout still holds, a disable
  (tombstone) still reads as no record; logins resume. The seconds from the
  primary's death to the first successful load through an agent are printed
  (the bench figure (10) of docs/performance.md; budget 5 s).
- Asynchronous standby cut off before the last commits (deterministically: its
  walreceiver stopped): the promoted standby holds older rows, and each agent
  that saw the newer ones answers ``rollback`` (RolledBack, logged), never
  accepting the replay the old row would allow.
- ``twofa-admin db check`` warns without a synchronous standby.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgreplica import Pair, wait_for
from pgserver import Fleet, available
from support.codes import code_not_in
from support.records import stored

from pam_twofa.core import auth, totp
from pam_twofa.core.record import Record
from pam_twofa.store import RolledBack, StoreError
from pam_twofa.store.agent import AgentStore

KEY = b"failover-test-key-20"
LIMITS = auth.Limits(max_failures=5, per_seconds=900, window=1)
BOUND = 30.0  # seconds the test allows for a failover (the budget of the bench figure is 5 s)


def _pair(synchronous: bool) -> Iterator[Pair]:
    why = available()
    if why:
        pytest.fail(why, pytrace=False)
    pair = Pair(synchronous)
    try:
        yield pair.start()
    finally:
        pair.destroy()


@pytest.fixture(scope="module")
def sync_pair() -> Iterator[Pair]:
    yield from _pair(synchronous=True)


@pytest.fixture(scope="module")
def async_pair() -> Iterator[Pair]:
    yield from _pair(synchronous=False)


@pytest.fixture(scope="module")
def third_pair() -> Iterator[Pair]:
    yield from _pair(synchronous=False)


@contextlib.contextmanager
def fleet_on(pair: Pair, root: Path) -> Iterator[Fleet]:
    """A fleet (database, key, policy) made on the primary, its policy's dsn naming both servers."""
    fleet = Fleet(pair.primary, root)
    try:
        # Without the offline copy: these tests show what the database itself keeps through a
        # failover (tests/db/test_offline.py serves logins while it is unreachable).
        fleet.write_policy(dsn=pair.dsn(fleet.dbname), offline=(0, 60))
        yield fleet
    finally:
        fleet.close()


def second_host(fleet: Fleet, root: Path) -> tuple[Path, Path]:
    """Another host's policy: the same dsn and key, its own socket and state folder (its own version memory)."""
    state = root / "state-b"
    state.mkdir(mode=0o700)
    socket = Path(str(fleet.socket) + "-b")
    text = fleet.policy_path.read_text()
    text = text.replace(f"agent_socket: {fleet.socket}", f"agent_socket: {socket}")
    text = text.replace(f"state_dir: {fleet.state_dir}", f"state_dir: {state}")
    path = root / "etc" / "b.yaml"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path, socket


def enrolled(user: str) -> Record:
    return Record(user, key=KEY, enrolled_at=1_700_000_000)


def code_at(now: float) -> str:
    return totp.totp(KEY, now)


def wrong_code(now: float) -> str:
    return code_not_in(code_at(now + 30 * d) for d in range(-3, 4))


def login(store: AgentStore, user: str, code: str, now: float) -> str:
    """What login/flow.py does with a typed code: attempt it under the user's lock and write the result."""
    with store.locked(user) as section:
        assert section.record is not None, f"{user} is not enrolled"
        outcome = auth.attempt(section.record, code, now, LIMITS)
        section.save(outcome.record)
    return outcome.result


def fill_pool(store: AgentStore, connections: int) -> None:
    """Leave ``connections`` idle database connections in the agent's pool: as many sections open at once."""
    with contextlib.ExitStack() as stack:
        for n in range(connections):
            stack.enter_context(store.locked(f"pool-{n}"))


def first_success(store: AgentStore, user: str, since: float) -> float:
    """Seconds from ``since`` (time.monotonic()) to the first load of ``user`` through the agent that
    works; each try before it must fail closed (a StoreError naming the database, never a record)."""
    errors: list[str] = []

    def attempt() -> bool:
        try:
            store.load(user)
        except RolledBack:
            raise
        except StoreError as exc:
            errors.append(str(exc))
            return False
        return True

    try:
        wait_for("a load through the agent after the failover", attempt, BOUND, 0.02)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (last error: {errors[-1:]})") from None
    return time.monotonic() - since


def db_check(fleet: Fleet) -> str:
    rc, out = fleet.admin(["db", "check"])
    assert rc == 0, out
    return out


# -- db check --------------------------------------------------------------------------------


def test_db_check_is_quiet_with_a_synchronous_standby(sync_pair, tmp_path):
    primary = sync_pair.primary
    with fleet_on(sync_pair, tmp_path) as fleet:
        out = db_check(fleet)
        assert "WARNING" not in out, out
        assert "replication: 1 standby(s) streaming (their states need pg_read_all_stats);" in out, out
        assert "synchronous_standby_names = 'twofa_standby', synchronous_commit = remote_apply" in out, out
        # A role that may see the standbys' states counts the synchronous ones, and warns when the
        # standby named is not the one connected (every commit would wait).
        primary.psql("GRANT pg_read_all_stats TO twofa")
        try:
            assert "replication: 1 standby(s) streaming, 1 sync;" in db_check(fleet)
            primary.psql("ALTER SYSTEM SET synchronous_standby_names = 'elsewhere'")
            primary.psql("SELECT pg_reload_conf()")
            wait_for("the setting is reloaded", lambda: "elsewhere" in primary.psql("SHOW synchronous_standby_names"))
            out = db_check(fleet)
            assert "1 standby(s) streaming, 0 sync;" in out, out
            assert "WARNING: synchronous_standby_names is 'elsewhere' but no synchronous standby is connected" in out
        finally:
            primary.psql("ALTER SYSTEM SET synchronous_standby_names = 'twofa_standby'")
            primary.psql("SELECT pg_reload_conf()")
            primary.psql("REVOKE pg_read_all_stats FROM twofa")
        wait_for("the standby is synchronous again", lambda: sync_pair.sync_states() == ["sync"])
        # A dsn naming only the standby reaches a read-only server: db check says so.
        fleet.write_policy(dsn=sync_pair.standby.hosts_dsn(fleet.dbname, tls=True))
        out = db_check(fleet)
        assert "WARNING: this server is a standby (read-only)" in out, out


def test_db_check_warns_with_an_asynchronous_standby(async_pair, tmp_path):
    with fleet_on(async_pair, tmp_path) as fleet:
        out = db_check(fleet)
    assert "replication: 1 standby(s) streaming" in out, out
    assert "WARNING: no synchronous standby (its standbys are asynchronous)" in out, out
    for forgotten in ("codes just used", "failures", "lockouts", "disables", "rollbacks"):
        assert forgotten in out, out


def test_while_its_synchronous_standby_is_away_logins_fail_closed_and_resume_when_it_is_back(sync_pair, tmp_path):
    """The price of a synchronous standby: a commit waits for it (statement_timeout does not end that
    wait), so the login's deadline expires and it fails closed; the code's use stands, and logins go
    on as soon as the standby is back, without restarting anything."""
    with fleet_on(sync_pair, tmp_path) as fleet:
        fleet.start_agent()
        store = AgentStore(str(fleet.socket), 3.0)
        store.update("erin", lambda old: enrolled("erin"))
        now = time.time()
        sync_pair.cut_replication()
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="no answer within 3 s"):
                login(store, "erin", code_at(now), now)
            assert time.monotonic() - started < 5
        finally:
            sync_pair.restore_replication()
        assert wait_for("erin's code is recorded", lambda: stored(store, "erin").last_step == int(now) // 30)
        assert login(store, "erin", code_at(now), now) == auth.REPLAYED
        assert login(store, "erin", code_at(now + 30), now + 30) == auth.SUCCESS


# -- failovers --------------------------------------------------------------------------------


def two_hosts(fleet: Fleet, root: Path):
    """Two hosts' agents on the pair (each its own version memory) and their stores, with alice, bob
    and carol enrolled (at version 1): (agent A, agent B, store A, store B)."""
    agent_a = fleet.start_agent()
    policy_b, socket_b = second_host(fleet, root)
    agent_b = fleet.start_agent(policy_b)
    a, b = AgentStore(str(fleet.socket), 5.0), AgentStore(str(socket_b), 5.0)
    for user in ("alice", "bob", "carol"):
        a.update(user, lambda old, u=user: enrolled(u))
    return agent_a, agent_b, a, b


def test_a_promoted_synchronous_standby_forgets_nothing_and_logins_resume(sync_pair, tmp_path):
    with fleet_on(sync_pair, tmp_path) as fleet:
        agent_a, agent_b, a, b = two_hosts(fleet, tmp_path)
        now = time.time()
        # Just before the kill: alice logs in with a code, bob is locked out, carol is disabled.
        code = code_at(now)
        assert login(a, "alice", code, now) == auth.SUCCESS
        results = [login(a, "bob", wrong_code(now), now) for _ in range(LIMITS.max_failures)]
        assert results == [auth.BAD_CODE] * LIMITS.max_failures
        assert a.delete("carol") is True
        assert b.load("alice") is not None and b.load("carol") is None  # host B has seen them too

        killed = sync_pair.kill_primary()
        with pytest.raises(StoreError, match="database") as down:
            a.load("alice")  # no primary: fails closed, and says why
        assert not isinstance(down.value, RolledBack)
        sync_pair.promote()
        promoted = time.monotonic() - killed
        seconds = first_success(a, "alice", killed)
        print(
            f"\nfailover (synchronous standby): {seconds:.2f} s from the primary's death to the first load"
            f" through the agent (promote returned after {promoted:.2f} s)"
        )
        assert seconds < BOUND
        # Host B did nothing during the outage: its first login after it works at once.
        with b.locked("alice") as section:
            assert section.record is not None

        # Nothing was forgotten, on either host, and nothing is refused as a rollback.
        for store in (a, b):
            assert login(store, "alice", code, now) == auth.REPLAYED
            assert login(store, "bob", code_at(now + 30), now + 30) == auth.LOCKED
            assert store.load("carol") is None
        assert a.users() == ["alice", "bob"]
        # And the promoted standby takes writes: a new code logs alice in.
        assert login(b, "alice", code_at(now + 60), now + 60) == auth.SUCCESS
        assert stored(a, "alice").last_step == int(now + 60) // 30
        for agent in (agent_a, agent_b):
            assert "rollback" not in agent.output(), agent.output()
            assert agent.proc is not None and agent.proc.poll() is None  # the same agents, never restarted

        # The promoted standby has no standby of its own: db check says what that risks.
        out = db_check(fleet)
        assert "replication: 0 standby(s) streaming" in out, out
        assert "WARNING: no synchronous standby (no standby streams from this server)" in out, out


def test_an_asynchronous_standby_that_missed_the_last_commits_gives_rollbacks_not_replays(async_pair, tmp_path):
    with fleet_on(async_pair, tmp_path) as fleet:
        agent_a, agent_b, a, b = two_hosts(fleet, tmp_path)  # alice, bob and carol at version 1
        now = time.time()
        assert login(a, "alice", code_at(now), now) == auth.SUCCESS  # alice at version 2
        async_pair.caught_up()  # the standby has all of that...
        async_pair.cut_replication()  # ...and nothing after it

        # The commits the standby misses: a second code of alice, bob locked out, carol disabled.
        code = code_at(now + 30)
        assert login(a, "alice", code, now + 30) == auth.SUCCESS  # version 3
        for _ in range(LIMITS.max_failures):
            login(a, "bob", wrong_code(now), now)  # versions 2..6
        assert stored(b, "bob").locked_until > now  # host B saw the lockout too
        assert a.delete("carol") is True  # version 2, a tombstone
        assert stored(b, "alice").last_step == int(now + 30) // 30 and b.load("carol") is None

        killed = async_pair.kill_primary()
        async_pair.promote()
        first_success(a, "dave", killed)  # a user no host has seen: the database is back

        # The promoted standby forgot them: what a host without memory (PgStore, the commands) reads.
        forgetful = fleet.store()
        old = forgetful.load("alice")
        assert old is not None and old.last_step == int(now) // 30
        assert auth.attempt(old, code, now + 30, LIMITS).result == auth.SUCCESS  # the replay it would allow
        assert forgetful.load("bob").failures == [] and forgetful.load("carol") is not None
        forgetful.close()

        # Every host that saw the lost commits refuses the older rows, on load and in a section.
        for store, agent in ((a, agent_a), (b, agent_b)):
            for user, shown, seen in (("alice", 2, 3), ("bob", 1, 6), ("carol", 1, 2)):
                with pytest.raises(RolledBack, match="rollback"):
                    store.load(user)
                with pytest.raises(RolledBack, match="rollback"):
                    login(store, user, code, now + 30)
                assert f"rollback: user={user} shown version {shown}, this host has seen version {seen}" in (
                    agent.output()
                ), agent.output()

        # The way out for a user (docs/store.md, "Versions"): the admin disables her again (discard
        # writes a tombstone above what the host has seen), and the host reads it.
        assert a.discard("carol") is True
        assert a.load("carol") is None


def test_a_busy_host_logs_in_at_once_after_a_failover(third_pair, tmp_path):
    with fleet_on(third_pair, tmp_path) as fleet:
        fleet.start_agent()
        store = AgentStore(str(fleet.socket), 5.0)
        store.update("alice", lambda old: enrolled("alice"))
        fill_pool(store, 3)  # a busy host: several connections, to the primary that is about to die, wait in its pool
        third_pair.kill_primary()
        third_pair.promote()
        # The first login after the promotion (and every one after it) works, whatever number of
        # connections to the dead primary the pool still held.
        assert store.load("alice") is not None
        with store.locked("alice") as section:
            assert section.record is not None
        assert store.users() == ["alice"]
