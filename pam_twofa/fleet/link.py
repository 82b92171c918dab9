"""The agent's link to the database besides the logins: LISTEN, sync, reconnect, reconcile.

One thread, on a connection of its own (docs/many-hosts.md, "When the database is down"):

- it ``LISTEN``s on ``database.CHANNEL``: every write of a row by pam-twofa (an agent's section,
  a command's) is announced there once committed (``Database.announce``: user and version), and the
  agent reads that row again into its copy, so that a change made on one host (a used code, a
  lockout, a ``disable``) reaches every connected agent's copy within a second; a row written by
  hand arrives with the next sync;
- every ``storage.offline.refresh`` seconds it compares every row's version with its copy and reads
  the rows that moved (a user who never logged in on this host can log in offline too); the end of a
  whole sync confirms the copy (``Cache.confirmed``: its age is what ``max_age`` bounds);
- while the agent is offline it tries to connect every second; once connected it merges every
  user's journal, each in one section (``reconcile``: ``core.reconcile.merge``), syncs, and only then
  takes the agent back online.

Every row read here is opened (seal and version) and checked against the versions this host has
seen before it is kept: a row forged or written back in the database never enters the copy.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import TYPE_CHECKING

import psycopg

from pam_twofa.core.reconcile import merge
from pam_twofa.core.record import RecordError, loads
from pam_twofa.fleet import key as fleetkey
from pam_twofa.fleet.cache import background, say
from pam_twofa.fleet.database import Connection, Row, Unreachable, describe, is_broken
from pam_twofa.store import CorruptedRecord, RolledBack, StoreError
from pam_twofa.system import log

if TYPE_CHECKING:
    from pam_twofa.fleet.agent import Agent

RETRY = 1.0  # seconds between connection attempts while the database cannot be reached
# Seconds the rows named by NOTIFYs wait to be read, so that a busy fleet's writes are read in a
# batch (one statement) rather than each alone, well within the second a change may take.
BATCH = 0.25
# Seconds this agent's writes wait to be announced to the other agents: one NOTIFY transaction per
# batch, not per login (PostgreSQL serialises notifying commits: bench (11)).
ANNOUNCE_BATCH = 0.1
CHUNK = 500  # rows read per statement by a sync


class Link:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.conn: Connection | None = None
        self.changed: set[str] = set()
        self.changed_at = 0.0  # time.monotonic() of the oldest NOTIFY not read yet
        self.next_sync = 0.0
        self.stopping = threading.Event()
        self.woken = threading.Event()
        self.thread: threading.Thread | None = None
        self.reported: set[str] = set()  # users whose missing row was logged this run (once each)
        self.steps_table = True  # False once the offline steps table proved missing or forbidden
        self.stuck: set[str] = set()  # users whose journal cannot merge now (a rollback): tried at each sync
        self.outbox: dict[str, int] = {}  # this agent's committed writes not announced yet: user -> version
        self.outbox_at = 0.0  # time.monotonic() of the oldest
        self.outbox_lock = threading.Lock()
        self.bell_r, self.bell_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # wakes the wait for an announcement
        self.pid = 0  # the link connection's server process: its own NOTIFYs are not news

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="link", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.woken.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.close()

    def wake(self) -> None:
        """Try to reach the database now (a login just found it unreachable)."""
        self.woken.set()
        self.ring()

    def ring(self) -> None:
        try:
            os.write(self.bell_w, b"!")
        except BlockingIOError:
            pass  # already ringing

    def announce(self, user: str, version: int) -> None:
        """Announce the user's committed row at ``version`` to the other agents, with the next batch
        (dropped if the link is down: they read it at their next sync)."""
        with self.outbox_lock:
            first = not self.outbox
            if first:
                self.outbox_at = time.monotonic()
            self.outbox[user] = max(version, self.outbox.get(user, 0))
        if first:
            self.ring()

    def send_announcements(self) -> float:
        """Send the batch once it is ANNOUNCE_BATCH old; the seconds until it is due (RETRY if none)."""
        with self.outbox_lock:
            if not self.outbox:
                return RETRY
            due = self.outbox_at + ANNOUNCE_BATCH - time.monotonic()
            if due > 0:
                return due
            batch, self.outbox = sorted(self.outbox.items()), {}
        assert self.conn is not None
        with self.conn.cursor() as cur:
            self.agent.db.announce(cur, batch)
        return RETRY

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        background()
        agent = self.agent
        while not self.stopping.is_set():
            try:
                if self.conn is None:
                    self.connect()
                    self.next_sync = 0.0
                if time.monotonic() >= self.next_sync:
                    self.stuck.clear()
                self.merge_all()
                if time.monotonic() >= self.next_sync:
                    self.sync()
                    self.next_sync = time.monotonic() + agent.policy.offline_refresh
                if agent.offline():
                    self.ping()
                    agent.go_online()
                self.listen_until(self.next_sync)
                if agent.offline():
                    self.close()  # a login found the database unreachable: try a new connection
            except Unreachable:
                # Only a login's own attempt takes the agent offline: a database restarting may
                # refuse this connection and take the next login's.
                self.close()
                self.pause(RETRY)
            except psycopg.Error as exc:
                conn, self.conn = self.conn, None
                if conn is not None and not is_broken(conn, exc):
                    agent.report(StoreError("database: " + describe(exc)))
                    conn.close()
                    self.pause(RETRY)
                elif conn is not None:
                    conn.close()  # gone: the next turn connects again at once, or goes offline
            except (StoreError, OSError) as exc:
                agent.report(exc)
                self.close()
                self.pause(RETRY)
            except Exception as exc:  # a bug must not end the thread that brings the agent back online
                say(log.ERR, f"pam-twofa-agent: link: unexpected {type(exc).__name__}: {log.clean_text(str(exc))}")
                self.close()
                self.pause(RETRY)

    def pause(self, seconds: float) -> None:
        self.woken.wait(seconds)
        self.woken.clear()

    def ping(self) -> None:
        """A round trip on the link's connection (a cut network fails it within the timeouts)."""
        assert self.conn is not None
        with self.conn.cursor() as cur:
            self.agent.db.ping(cur)

    def merge_all(self) -> None:
        """Merge every journal that can be merged now (a user whose database row is older than this
        host has seen keeps it: their logins are refused as "rollback" until that is resolved)."""
        for user in self.agent.cache.journal_users():
            if user in self.stuck:
                continue
            try:
                self.reconcile(user)
            except (RolledBack, CorruptedRecord) as exc:
                self.stuck.add(user)
                say(log.ERR, f"pam-twofa-agent: offline journal of user={log.clean(user)} kept, not merged: {exc}")

    def connect(self) -> None:
        conn = self.agent.db.connect(autocommit=True, name="pam-twofa-link")
        self.pid = conn.info.backend_pid
        conn.add_notify_handler(lambda notify: self.notified(notify.payload, notify.pid))
        with conn.cursor() as cur:
            self.agent.db.listen(cur)
        self.conn = conn

    def notified(self, payload: str, pid: int) -> None:
        """A row was written (``USER<TAB>VERSION``): read it unless this agent wrote it (its own
        connections' backends) or already holds that version."""
        if pid == self.pid or pid in self.agent.pool.pids.copy().values():
            return
        user, _tab, version = payload.rpartition("\t")
        if not user:
            user, version = payload, ""
        held = self.agent.cache.held(user) if self.agent.cache.keep_rows else self.agent.cache.known(user)
        if version.isdigit() and int(version) <= held:
            return
        if not self.changed:
            self.changed_at = time.monotonic()
        self.changed.add(user)

    def listen_until(self, until: float) -> None:
        """Wait for notifications until ``until`` (time.monotonic), reading the rows they name."""
        conn = self.conn
        assert conn is not None
        while not self.stopping.is_set():
            wait = self.send_announcements()
            if self.changed:
                due = self.changed_at + BATCH - time.monotonic()
                if due <= 0:
                    users, self.changed = sorted(self.changed), set()
                    self.read(users)
                else:
                    wait = min(wait, due)
            left = until - time.monotonic()
            if left <= 0 or self.woken.is_set():
                self.woken.clear()
                return
            ready, _, _ = select.select([conn.fileno(), self.bell_r], [], [], max(0.0, min(left, wait)))
            if self.bell_r in ready:
                try:
                    while os.read(self.bell_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if conn.fileno() in ready:
                conn.pgconn.consume_input()  # OperationalError once the server closed the connection
                while (notify := conn.pgconn.notifies()) is not None:
                    self.notified(notify.extra.decode("utf-8", "surrogateescape"), notify.be_pid)
                if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise Unreachable("database: the connection closed")
            elif any(user not in self.stuck for user in self.agent.cache.journal_users()):
                return  # an offline section ended after the agent came back: merge it now

    # -- the copy ---------------------------------------------------------------------------

    def read(self, users: list[str]) -> None:
        """Read the rows of ``users`` into the copy (opened and checked first)."""
        conn = self.conn
        assert conn is not None
        for start in range(0, len(users), CHUNK):
            with conn.cursor() as cur:
                rows = self.agent.db.fetch_many(cur, users[start : start + CHUNK])
            for row in rows:
                self.keep(row)

    def keep(self, row: Row) -> None:
        try:
            self.agent.opened(row)
        except RolledBack:
            pass  # logged by the check, refused here as it is at a login: never in the copy
        except CorruptedRecord as exc:
            self.agent.report(exc)

    def sync(self) -> None:
        """Read every row that moved since the copy has it; the copy is then confirmed as of the
        start (rows written since come with their NOTIFY, or with the next sync)."""
        agent = self.agent
        conn = self.conn
        assert conn is not None
        began = agent.now()
        with conn.cursor() as cur:
            versions = agent.db.versions(cur)
        # Without a copy, the versions seen stand for it: a row read once is not read at every sync.
        held = agent.cache.rows() if agent.cache.keep_rows else dict(agent.cache.seen_items())
        moved = []
        for user, version in versions.items():
            if version is None or version < agent.cache.known(user):
                moved.append(user)  # refused with a "rollback" line (once), never kept
            elif version > held.get(user, 0) or (agent.cache.keep_rows and user not in held):
                moved.append(user)
        for user, _version in agent.cache.seen_items():
            if user not in versions and user not in self.reported:
                self.reported.add(user)
                try:
                    agent.cache.check(user, False, None)
                except RolledBack:
                    pass  # logged by check
        self.read(sorted(moved))
        agent.cache.confirmed(began)

    # -- the journals -------------------------------------------------------------------------

    def reconcile(self, user: str, locked: bool = False) -> None:
        """Merge the user's journal into the database in one section (the caller may hold the
        user's lock on this host already: ``locked``); the entries are then dropped. Unreachable
        while the database cannot be reached; RolledBack or CorruptedRecord keep the journal."""
        agent = self.agent
        lock = agent.cache.user_lock(user)
        if not locked and not lock.acquire(timeout=agent.op_timeout):
            return  # a login holds it: merged by that login's section, or on the next turn
        try:
            self._reconcile(user)
        finally:
            if not locked:
                lock.release()

    def _reconcile(self, user: str) -> None:
        agent = self.agent
        entries = agent.cache.journal(user)
        if not entries:
            return
        first, last = entries[0], entries[-1]
        keyring = agent.keyring()
        try:
            base = agent.db.open(Row(user, first.base_sealed, first.base_version)) if first.base_sealed else None
            local = loads(fleetkey.open_sealed(keyring, user, last.sealed, last.base_version, fleetkey.JOURNAL), user)
        except (fleetkey.SealError, RecordError, CorruptedRecord) as exc:
            agent.cache.drop(user, last.seq)
            say(log.ERR, f"pam-twofa-agent: offline journal of user={log.clean(user)} does not open ({exc}): dropped")
            return
        steps = sorted({entry.step for entry in entries if entry.step is not None})
        conn, _reused = agent.pool.acquire(agent.op_timeout)
        written = 0
        try:
            cur = conn.cursor()
            row = agent.db.open_section(cur, user, begin=True)
            agent.cache.check(user, row.exists, row.version)
            current = agent.db.open(row)
            version = max(row.version or 0, agent.cache.known(user))
            merged = merge(
                current, row.version or 0, base, first.base_version, local, steps,
                int(agent.now()), agent.policy.limits(), agent.policy.send_window,
            )  # fmt: skip
            sealed = None
            if merged.record is not None and merged.record != current:
                written = version + 1
                sealed = agent.db.write(cur, merged.record, written)
            agent.db.end_section(cur, commit=True)
        except psycopg.Error as exc:
            broken = is_broken(conn, exc)
            agent.pool.release(conn, broken=broken)
            if broken:
                raise Unreachable("database: " + describe(exc)) from None
            raise StoreError(f"database: merging the offline journal of {user}: {describe(exc)}") from None
        except BaseException:
            agent.pool.release(conn)
            raise
        if sealed is not None:
            agent.cache.saw(user, written, sealed)
            self.announce(user, written)
        agent.cache.drop(user, last.seq)
        who = f"user={log.clean(user)}"
        if merged.dropped:
            say(log.WARNING, f"pam-twofa-agent: offline journal of {who} dropped ({len(entries)} "
                f"change(s)): {merged.dropped}")  # fmt: skip
        else:
            at = f"version {written}" if written else "the database's record (nothing new)"
            say(log.INFO, f"pam-twofa-agent: reconciled {who}: {len(entries)} offline change(s) merged into {at}")
        twice = self.record_steps(conn, user, steps)
        try:
            named = {step for step, _host in twice}
            for step, host in twice:
                say(log.WARNING, f"pam-twofa-agent: {who}: TOTP step {step} was accepted on {log.clean(agent.host)} "
                    f"and on {log.clean(host)} while both were cut off from the database: one code used twice")  # fmt: skip
            for step in merged.twice:
                if step not in named:
                    say(log.WARNING, f"pam-twofa-agent: {who}: TOTP step {step} accepted on "
                        f"{log.clean(agent.host)} while offline was accepted by another host too: one code used twice")  # fmt: skip
        finally:
            agent.pool.release(conn)

    def record_steps(self, conn: Connection, user: str, steps: list[int]) -> list[tuple[int, str]]:
        """Record the steps this host accepted offline; those another host recorded too."""
        if not steps or not self.steps_table:
            return []
        try:
            with conn.cursor() as cur:
                return self.agent.db.offline_steps(cur, user, steps, self.agent.host)
        except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege) as exc:
            self.steps_table = False
            say(log.ERR, f"pam-twofa-agent: cannot record the steps accepted offline ({describe(exc)}): run "
                "twofa-admin db init, and the GRANT lines it prints, to tell a code used on two hosts")  # fmt: skip
        except psycopg.Error as exc:
            self.agent.report(StoreError(f"database: recording the steps accepted offline: {describe(exc)}"))
        return []
