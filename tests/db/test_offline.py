"""The offline copy (docs/many-hosts.md, "When the database is down"): logins go on from each agent's
copy while its host cannot reach the database, and the journals merge when it can again.

Each host is a real ``pam-twofa-agent`` with its own state folder and socket, whose dsn goes through
a ``support.proxy.Proxy``: cutting the proxy cuts that host off while the database stays up for
the other hosts and the admin commands (a network partition, the case that matters: a database that
is down for everyone cannot take writes meanwhile). Logins are the core's (``auth.attempt``) in the
agent's sections, as ``login.flow`` runs them; tests/pam/test_pam_fleet.py runs whole PAM logins.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pgserver import Agent
from support.proxy import Proxy
from support.records import stored

from pam_twofa.core import auth, totp
from pam_twofa.core.record import Record
from pam_twofa.store import StoreError
from pam_twofa.store.agent import AgentStore

SECRET = b"offline-test-secret!"
LIMITS = auth.Limits(max_failures=3, per_seconds=900, window=0)


@dataclass
class Host:
    name: str
    proxy: Proxy
    agent: Agent
    store: AgentStore
    state: Path

    def status(self) -> dict[str, str]:
        return dict(line.partition(" ")[::2] for line in self.store.status().splitlines())

    def wait(self, condition, what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {what} within {timeout} s:\n{self.agent.output()[-3000:]}")
            time.sleep(0.05)

    def confirmed(self) -> None:
        """Wait until the agent's copy is confirmed by a whole sync (it may serve logins offline)."""
        self.wait(lambda: self.status()["confirmed"] != "never", "a confirmed copy")

    def cut(self) -> None:
        self.proxy.cut()

    def restore(self) -> None:
        self.proxy.restore()

    def online(self) -> None:
        self.wait(lambda: self.status()["state"] == "online" and self.status()["journal"] == "0", "back online, merged")


def host(fleet, name: str, max_age: int = 3600, refresh: int = 600) -> Host:
    proxy = Proxy(fleet.server.port)
    dsn = fleet.server.hosts_dsn(fleet.dbname).replace(f"port={fleet.server.port}", f"port={proxy.port}")
    state = fleet.root / f"state-{name}"
    state.mkdir(mode=0o700)
    socket = Path(tempfile.mkdtemp(prefix="tfa-", dir="/tmp")) / "agent.sock"
    policy = fleet.write_policy(
        fleet.root / "etc" / f"{name}.yaml",
        dsn=dsn,
        socket=socket,
        state_dir=state,
        offline=(max_age, refresh),
        extra=f"rate_limit: {{max_failures: {LIMITS.max_failures}}}\n",
    )
    agent = fleet.start_agent(policy, "--name", name)
    made = Host(name, proxy, agent, AgentStore(str(socket), 8.0), state)
    made.confirmed()
    return made


@pytest.fixture
def hosts(fleet):
    made: list[Host] = []

    def make(name: str, **kwargs) -> Host:
        made.append(host(fleet, name, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.proxy.close()


def enroll(fleet, user: str, **fields) -> None:
    store = fleet.store()
    store.update(user, lambda old: Record(user, key=SECRET, enrolled_at=1_700_000_000, **fields))


def cut_off(fleet, hosts, *names: str, **options) -> list[Host]:
    """alice enrolled, then hosts that saw her row (``options``: of ``host``), all cut off from the database."""
    enroll(fleet, "alice")
    made = [hosts(name, **options) for name in names]
    for one in made:
        one.cut()
    return made


def login(store, user: str, code: str, now: float) -> str:
    """One code typed at a login: the section the login path runs (read, verify, write)."""
    with store.locked(user) as section:
        outcome = auth.attempt(section.record, code, now, LIMITS)
        section.save(outcome.record)
    return outcome.result


def code_at(now: float) -> str:
    return totp.totp(SECRET, now)


# -- offline logins -----------------------------------------------------------------------


def test_a_cut_off_host_logs_in_from_its_copy_and_refuses_a_replay(fleet, hosts):
    (a,) = cut_off(fleet, hosts, "a")
    now = time.time()
    assert login(a.store, "alice", code_at(now), now) == auth.SUCCESS
    assert login(a.store, "alice", code_at(now), now) == auth.REPLAYED
    status = a.status()
    assert status["state"] == "offline" and status["journal"] == "2"  # the replay counts as a failure
    assert "offline: database: cannot connect" in a.agent.output()
    # The replay memory survives the agent: the journal is in the file before the login is answered.
    a.agent.kill()
    a.agent.start()
    assert login(a.store, "alice", code_at(now), now) == auth.REPLAYED


def test_the_journal_merges_on_reconnect(fleet, hosts):
    enroll(fleet, "alice", recovery_salt=b"s" * 16, recovery_hashes=[auth.hash_recovery_code("rc1", b"s" * 16)])
    a = hosts("a")
    a.cut()
    now = time.time()
    assert login(a.store, "alice", code_at(now), now) == auth.SUCCESS
    assert login(a.store, "alice", "rc1", now) == auth.RECOVERY
    assert stored(fleet.store(), "alice").last_step == -1  # nothing reached the database yet
    a.restore()
    a.online()
    merged = stored(fleet.store(), "alice")
    assert merged.last_step == totp.time_step(now)
    assert merged.recovery_hashes == []  # used offline: used everywhere
    assert "reconciled user=alice: 2 offline change(s) merged" in a.agent.output()
    # Online again, the code used offline stays used.
    assert login(a.store, "alice", code_at(now), now) == auth.REPLAYED


def test_a_change_on_one_host_reaches_the_copy_of_another_within_a_second(fleet, hosts):
    """NOTIFY: a code used on b just before a is cut off is refused on a (no sync in between)."""
    enroll(fleet, "alice")
    a, b = hosts("a"), hosts("b")
    now = time.time()
    assert login(b.store, "alice", code_at(now), now) == auth.SUCCESS
    time.sleep(1.0)
    a.cut()
    assert login(a.store, "alice", code_at(now), now) == auth.REPLAYED


def test_a_user_who_never_logged_in_on_a_host_logs_in_there_offline(fleet, hosts):
    a = hosts("a", refresh=1)
    enroll(fleet, "bob")  # after a's first sync; its NOTIFY or the next sync brings it
    a.wait(lambda: int(a.status()["cached"]) >= 1, "bob's row in the copy")
    a.cut()
    now = time.time()
    assert login(a.store, "bob", code_at(now), now) == auth.SUCCESS


def back(*each: Host) -> None:
    """The hosts reach the database again, one after the other, each merging its journal."""
    for one in each:
        one.restore()
        one.online()


def test_failures_on_two_cut_off_hosts_add_up_to_a_lockout(fleet, hosts):
    a, b = cut_off(fleet, hosts, "a", "b")
    now = time.time()
    wrong = "000000" if code_at(now) != "000000" else "111111"
    assert login(a.store, "alice", wrong, now) == auth.BAD_CODE
    assert login(a.store, "alice", wrong, now) == auth.BAD_CODE
    assert login(b.store, "alice", wrong, now) == auth.BAD_CODE
    # Each host counted its own (2 and 1 of 3): no lockout yet, on either.
    assert stored(a.store, "alice").locked_until == 0
    back(a, b)
    merged = stored(fleet.store(), "alice")
    assert len(merged.failures) == 3 and merged.locked_until > now
    assert login(a.store, "alice", code_at(now), now) == auth.LOCKED


def test_a_step_accepted_on_two_cut_off_hosts_is_a_warning_naming_both(fleet, hosts):
    a, b = cut_off(fleet, hosts, "a", "b")
    now = time.time()
    assert login(a.store, "alice", code_at(now), now) == auth.SUCCESS
    assert login(b.store, "alice", code_at(now), now) == auth.SUCCESS  # each host knows only its own
    back(a, b)
    step = totp.time_step(now)
    assert f"user=alice: TOTP step {step} was accepted on b and on a while both were cut off" in b.agent.output()
    assert stored(fleet.store(), "alice").last_step == step


def test_a_tombstone_written_meanwhile_wins_over_the_journal(fleet, hosts):
    (a,) = cut_off(fleet, hosts, "a")
    rc, out = fleet.admin(["disable", "alice", "--yes"])
    assert rc == 0, out
    now = time.time()
    # The documented price of the copy: until a is back (or max_age runs out), the old secret works there.
    assert login(a.store, "alice", code_at(now), now) == auth.SUCCESS
    a.restore()
    a.online()
    assert fleet.store().load("alice") is None
    assert "offline journal of user=alice dropped (1 change(s)): " in a.agent.output()
    assert a.store.load("alice") is None


def test_a_copy_older_than_max_age_is_not_used(fleet, hosts):
    (a,) = cut_off(fleet, hosts, "a", max_age=2, refresh=1)
    time.sleep(2.5)
    now = time.time()
    with pytest.raises(StoreError, match=r"last confirmed \d+ s ago, more than storage.offline.max_age \(2 s\)"):
        login(a.store, "alice", code_at(now), now)


def test_offline_logins_off_fail_closed(fleet, hosts):
    (a,) = cut_off(fleet, hosts, "a", max_age=0)
    with pytest.raises(StoreError, match="cannot connect"):
        a.store.load("alice")
    status = a.status()
    assert status["state"] == "online" and status["cached"] == "0"  # no copy kept at all
    db = sqlite3.connect(a.state / "agent" / "cache.sqlite")
    assert db.execute("SELECT count(*) FROM rows").fetchone()[0] == 0


def test_enrollment_and_removal_need_the_database(fleet, hosts):
    (a,) = cut_off(fleet, hosts, "a")
    with pytest.raises(StoreError, match="needs the database"):
        a.store.update("carol", lambda old: Record("carol", key=SECRET, enrolled_at=1))
    with pytest.raises(StoreError, match="needs the database"):
        a.store.update("alice", lambda old: Record("alice", key=b"another secret......", enrolled_at=2))
    with pytest.raises(StoreError, match="removing the record of alice needs the database"):
        a.store.discard("alice")


def test_the_copy_and_journal_hold_sealed_text_only(fleet, hosts):
    (a,) = cut_off(fleet, hosts, "a")
    now = time.time()
    assert login(a.store, "alice", code_at(now), now) == auth.SUCCESS
    folder = a.state / "agent"
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    for name in os.listdir(folder):
        data = (folder / name).read_bytes()
        assert oct(os.stat(folder / name).st_mode & 0o777) == "0o600"
        for secret in (SECRET, SECRET.hex().encode(), b"pam-twofa-record"):
            assert secret not in data, name


def test_status_command_shows_the_state(fleet, hosts):
    enroll(fleet, "alice")
    a = hosts("a")
    policy = fleet.root / "etc" / "a.yaml"
    rc, out = fleet.admin(["db", "status"], policy=policy)
    assert rc == 0, out
    assert "database: connected since" in out and "cached records: 1" in out and "journal: 0 pending" in out
    a.cut()
    now = time.time()
    assert login(a.store, "alice", code_at(now), now) == auth.SUCCESS
    rc, out = fleet.admin(["db", "status"], policy=policy)
    assert rc == 1, out
    assert "database: OFFLINE since" in out and "journal: 1 pending entry of 1 user(s)" in out


def test_the_emailed_code_path_works_offline_counted_locally(fleet, hosts):
    """carol is not enrolled (no row): a login mails her a code (the quota counted in her record), a
    second login types it; both offline, then the journal makes her row in the database."""
    a = hosts("a")
    a.cut()
    now = time.time()
    with a.store.locked("carol") as section:
        assert section.record is None
        mailed = auth.issue_email_code(Record("carol"), "12345678", b"salt" * 4, now, ttl=600, per_seconds=3600)
        section.save(mailed)
    with a.store.locked("carol") as section:
        outcome = auth.attempt_email(section.record, "12345678", now + 5, LIMITS)
        section.save(outcome.record)
    assert outcome.result == auth.SUCCESS
    with a.store.locked("carol") as section:  # the code is used: not twice
        assert auth.attempt_email(section.record, "12345678", now + 6, LIMITS).result == auth.BAD_CODE
    assert fleet.store().load("carol") is None
    back(a)
    row = stored(fleet.store(), "carol")
    assert row.email_sends == [int(now)] and row.email_code_hash == b"" and not row.enrolled


def test_status_says_when_the_link_is_down_with_offline_logins_off(fleet, hosts):
    a = hosts("a", max_age=0)
    a.cut()
    a.wait(lambda: a.status()["link"] == "down", "the link found down")
    rc, out = fleet.admin(["db", "status"], policy=fleet.root / "etc" / "a.yaml")
    assert rc == 1, out
    assert "database: connected since" in out and "link: DOWN" in out and "offline logins: off" in out
