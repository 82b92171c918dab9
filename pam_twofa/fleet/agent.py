"""``pam-twofa-agent``: the host agent of the database backend (docs/many-hosts.md, docs/store.md).

A foreground daemon (systemd: config/pam-twofa-agent.service). It holds the
database connections and the fleet key, and serves the login path over a
root-only Unix socket (``storage.agent_socket``; its folder root-owned 0700;
peers other than uid 0 are dropped on accept, by SO_PEERCRED). The
protocol is ``store.protocol``. Each client runs in a thread of its own; database
connections (psycopg 3) come from a bounded pool that checks an idle connection
before it hands it out (a database that restarted closed them all: the first
login afterwards gets a new one, not a dead one), and a
section (``lock`` ... ``end``) is one transaction, rolled back when its client
goes away or keeps it longer than ``--section-timeout``. The agent runs no SQL
of its own: every statement is a method of ``fleet.database.Database`` (``lock``
and ``lockw`` open a section alike, through ``Database.open_section``); a record
the client sends is parsed and written again from the parsed fields.

The agent remembers the highest version of each user's row it has seen
(``fleet.cache``: in memory, and in ``STATE_DIR/agent/cache.sqlite``) and
answers ``rollback`` when the database shows it an older one, or no row for
a user it has seen: a row written back from a backup, a failover that lost
writes, or SQL by hand (docs/store.md, "Versions").

When a login finds the database unreachable (``Unreachable``: no connection
within the timeouts; not a statement or lock timeout), the agent goes offline
(``storage.offline.max_age`` > 0): that login and the next ones are served from
its copy of the sealed rows, their changes journaled, until ``fleet.link``
reconnects, merges the journals and syncs the copy (docs/many-hosts.md, "When
the database is down"). Every section of a user on this host, online or
offline, holds the user's lock on this host (``Cache.user_lock``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from pam_twofa.core.reconcile import IDENTITY
from pam_twofa.core.record import Record, RecordError, dumps, loads
from pam_twofa.fleet import key as fleetkey
from pam_twofa.fleet.cache import FILE, Cache, private_folder, say
from pam_twofa.fleet.database import Connection, Cursor, Database, Row, Unreachable, describe, is_broken
from pam_twofa.policy import DEFAULT_PATH, PolicyError
from pam_twofa.store import CorruptedRecord, RolledBack, StoreError, storable_name
from pam_twofa.store import protocol as agentproto
from pam_twofa.system import log

MAX_CLIENTS = 512
RETRIED = "a pooled database connection was broken: tried once more on a new one"


def alive(conn: Connection) -> bool:
    """Whether an idle pooled connection still holds, found without a round trip: the server says
    nothing to an idle session unasked (but a notice), so a socket with something to read is one the
    server closed (stopped, restarted, the session terminated), and libpq then finds its end."""
    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        waiting = select.poll()
        waiting.register(conn.fileno(), select.POLLIN)
        for _ in range(16):  # a read takes what has come (the server's last words); the next, the end
            if not waiting.poll(0):
                break
            conn.pgconn.consume_input()  # OperationalError at the end of the stream
    except (OSError, psycopg.Error):
        return False
    return not conn.closed


class Pool:
    """At most ``size`` connections (autocommit); idle ones are kept and checked (``alive``) before
    they are handed out again, dead ones dropped; a connection broken in use is dropped with every
    idle one (made to the same server, likely dead as well), and the next use connects anew.

    Not psycopg_pool (3.1): it makes connections in background threads and, while the database is
    down, tries again after 1, 2, 4 ... s (up to its reconnect_timeout), so that a login waits for its
    whole timeout and gets "couldn't get a connection" instead of libpq's reason, and the first login
    after an outage waits for the next attempt; here a login that finds no live idle connection
    connects itself, at once (docs/store.md, "The agent's connections")."""

    def __init__(self, db: Database, size: int) -> None:
        self.db = db
        self.slots = threading.BoundedSemaphore(size)
        self.idle: list[Connection] = []
        self.lock = threading.Lock()
        # The server's process of each connection (by id of the connection): the rows this agent
        # wrote come back as NOTIFYs from these, and are not news to it.
        self.pids: dict[int, int] = {}

    def acquire(self, timeout: float, fresh: bool = False) -> tuple[Connection, bool]:
        """(connection, reused) within ``timeout``; ``fresh``: a new one; StoreError if none."""
        if not self.slots.acquire(timeout=timeout):
            raise StoreError("every database connection of this agent is busy; try again")
        try:
            while not fresh:
                with self.lock:
                    conn = self.idle.pop() if self.idle else None
                if conn is None:
                    break
                if alive(conn):
                    return conn, True
                self.close(conn)
            # Autocommit: a read is one statement, and a section spells out BEGIN ... COMMIT itself,
            # BEGIN sent together with its first statements (fewer round trips per login).
            conn = self.db.connect(autocommit=True)
            self.pids[id(conn)] = conn.info.backend_pid
            return conn, False
        except BaseException:
            self.slots.release()
            raise

    def release(self, conn: Connection, broken: bool = False) -> None:
        """Give back ``conn``: kept if it is healthy (an open transaction, after a timeout in a
        section, rolled back first), else closed; ``broken``: closed, with every idle one."""
        if not broken and not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                broken = True
        if broken or conn.closed:
            self.close(conn)
            if broken:
                self.drop_idle()
        else:
            with self.lock:
                self.idle.append(conn)
        self.slots.release()

    def drop_idle(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            self.close(conn)

    def close(self, conn: Connection) -> None:
        self.pids.pop(id(conn), None)
        conn.close()


# An offline section that changes a field of reconcile.IDENTITY, which a login never changes (an
# enrollment, new recovery codes, a new address), is refused: such a change needs the database.
OFFLINE_CHANGE = "needs the database (an enrollment or a change of the second factor is never made offline)"


@dataclasses.dataclass
class Section:
    """A client's open section: one transaction on a pooled connection, until ``deadline``; or,
    offline (``conn`` None), the user's record in this host's copy, changes journaled at ``end``.
    Either way it holds the user's section lock on this host (``Cache.user_lock``)."""

    conn: Connection | None
    cur: Cursor | None
    user: str
    deadline: float  # time.monotonic(): rolled back when the client keeps it longer
    lock: threading.Lock
    version: int = 0  # the row's (or the highest seen), then the last one this section wrote
    holds: bool = False  # whether the row holds a record, in this section's view
    wrote: bool = False
    sealed: str | None = None  # online: the row as this section last wrote it
    # Offline: the row the copy holds (sealed, None for no row) at ``version``, the record it started
    # from (the journal's newest, else the row's), and what the client saved.
    base_sealed: str | None = None
    current: Record | None = None
    staged: Record | None = None

    @property
    def offline(self) -> bool:
        return self.conn is None


class Client:
    """One connection from the login path."""

    def __init__(self, agent: Agent, sock: socket.socket) -> None:
        self.agent = agent
        self.sock = sock
        self.frames = agentproto.FrameReader()
        self.section: Section | None = None

    # -- frames -------------------------------------------------------------------

    def _recv(self, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        return self.sock.recv(65536)

    def read_frame(self, deadline: float) -> tuple[str, str] | None:
        """The next request, None when the client went away; TimeoutError past ``deadline``."""
        return self.frames.read(lambda: self._recv(deadline), agentproto.OPERATIONS)

    def send(self, status: str, body: str = "") -> None:
        self.sock.settimeout(self.agent.io_timeout)
        self.sock.sendall(agentproto.frame(status, body))

    # -- the loop -------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while True:
                deadline = self.section.deadline if self.section else time.monotonic() + self.agent.idle_timeout
                try:
                    request = self.read_frame(deadline)
                except TimeoutError:
                    if self.section:
                        say(log.WARNING, f"pam-twofa-agent: section of user={log.clean(self.section.user)} "
                            f"held longer than {self.agent.section_timeout} s: rolled back")  # fmt: skip
                    return
                if request is None:
                    return
                status, body = self.handle(*request)
                self.send(status, body)
        except agentproto.ProtocolError as exc:
            say(log.WARNING, f"pam-twofa-agent: dropped a client: {exc}")
        except OSError:
            pass  # the client went away
        finally:
            self.end_section(commit=False)
            self.sock.close()

    def handle(self, operation: str, body: str) -> tuple[str, str]:
        try:
            if operation in ("load", "lock", "lockw"):
                if not storable_name(body):
                    return "error", "user name cannot be stored (empty, control characters, or too long)"
                if self.section:
                    return "error", "a section is already open on this connection"
                return self.begin(operation, body)
            if operation == "users":
                return self.users()
            if operation == "status":
                return "ok", self.agent.status()
            if not self.section:
                return "error", f"{operation} outside a section"
            section = self.section
            if operation == "save":
                try:
                    record = loads(body, section.user)  # validates every field; the row is written from these
                except RecordError as exc:
                    return "error", f"malformed record for {section.user}: {exc}"
                if section.offline:
                    return self.save_offline(section, record)
                assert section.cur is not None
                section.sealed = self.agent.db.write(section.cur, record, section.version + 1)
                section.version, section.holds, section.wrote = section.version + 1, True, True
                return "ok", ""
            if operation == "delete":
                if not section.holds:
                    return "ok", "0"
                if section.offline:
                    return "error", f"offline: removing the record of {section.user} needs the database; try again"
                assert section.cur is not None
                section.sealed = self.agent.db.remove(section.cur, section.user, section.version + 1)  # a tombstone
                section.version, section.holds, section.wrote = section.version + 1, False, True
                return "ok", "1"
            self.end_section(commit=True)  # "end"
            return "ok", ""
        except RolledBack as exc:
            self.end_section(commit=False)
            return "rollback", str(exc)
        except CorruptedRecord as exc:
            self.agent.report(exc)
            self.end_section(commit=False)
            return "corrupt", str(exc)
        except StoreError as exc:
            self.agent.report(exc)
            self.end_section(commit=False)
            return "error", str(exc)
        except psycopg.Error as exc:
            error = StoreError("database: " + describe(exc))
            self.agent.report(error)
            # A timeout leaves the connection healthy: rolled back, and used again.
            conn = self.section.conn if self.section else None
            self.end_section(commit=False, broken=conn is not None and is_broken(conn, exc))
            return "error", str(error)

    def begin(self, operation: str, user: str) -> tuple[str, str]:
        """``load``, ``lock`` or ``lockw``: from the database, or from this host's copy when the
        database cannot be reached (``Agent.offline``). A section first takes the user's section
        lock on this host, then, online, merges what the user's journal still holds."""
        agent = self.agent
        lock = None
        if operation != "load":
            lock = agent.cache.user_lock(user)
            if not lock.acquire(timeout=agent.op_timeout):
                raise StoreError(f"another login of {user} on this host holds its section; try again")
        try:
            if not agent.offline():
                try:
                    if lock is not None and agent.cache.has_journal(user):
                        agent.link.reconcile(user, locked=True)  # an offline change must never be read past
                    return self.begin_online(operation, user, lock)
                except Unreachable as exc:
                    if not agent.go_offline(str(exc)):
                        raise
            return self.begin_offline(operation, user, lock)
        except BaseException:
            if lock is not None and self.section is None:
                lock.release()
            raise

    def begin_online(self, operation: str, user: str, lock: threading.Lock | None) -> tuple[str, str]:
        """Work that a broken pooled connection failed (a database that went away since, which
        ``alive`` could not tell) is tried once more on a new connection; any other error (a
        statement or lock timeout above all) is not: one timeout, not two. A new connection that
        fails too: ``Unreachable``."""
        agent = self.agent
        for attempt in (1, 2):
            conn, reused = agent.pool.acquire(agent.op_timeout, fresh=attempt == 2)
            try:
                cur = conn.cursor()
                record: Record | None = None
                if operation == "load":
                    row = agent.db.fetch(cur, user)
                else:
                    assert lock is not None
                    # lock and lockw take the same locks; lockw only leaves the record unread.
                    section = Section(conn, cur, user, time.monotonic() + agent.section_timeout, lock)
                    self.section = section
                    row = agent.db.open_section(cur, user, begin=True)
                    if operation == "lock":
                        record = agent.opened(row)
                        section.holds = record is not None
                    else:
                        # Unread, so unchecked (discard: the way out of a corrupted or rolled-back
                        # row); what it writes goes above what this host has seen.
                        section.holds = agent.db.holds_record(row)
                    section.version = max(row.version or 0, agent.cache.known(user))
            except psycopg.Error as exc:
                self.section = None
                broken = is_broken(conn, exc)
                agent.pool.release(conn, broken=broken)  # not broken: rolled back, kept
                if not broken:
                    raise
                if not reused or attempt == 2:
                    raise Unreachable("database: " + describe(exc)) from None
                # A pooled connection the database dropped without a word (its host gone, a failover):
                # once more, on a new connection (release dropped the idle ones too).
                say(log.INFO, f"pam-twofa-agent: {RETRIED} ({describe(exc)})")
                continue
            except BaseException:
                if self.section is None:
                    agent.pool.release(conn)
                raise
            if operation == "load":
                agent.pool.release(conn)
                record = agent.opened(row)  # after the release: it raises RolledBack, CorruptedRecord
            return ("none", "") if record is None else ("record", dumps(record))
        raise AssertionError("unreachable")

    def begin_offline(self, operation: str, user: str, lock: threading.Lock | None) -> tuple[str, str]:
        agent = self.agent
        agent.check_fresh()
        record, base_sealed, version = agent.local_record(user)
        if lock is not None:
            section = Section(None, None, user, time.monotonic() + agent.section_timeout, lock)
            section.version, section.base_sealed, section.current = version, base_sealed, record
            section.holds = record is not None
            self.section = section
            if operation == "lockw":
                return "none", ""
        return ("none", "") if record is None else ("record", dumps(record))

    def save_offline(self, section: Section, record: Record) -> tuple[str, str]:
        before = section.current or Record(section.user)
        if any(getattr(record, name) != getattr(before, name) for name in IDENTITY):
            return "error", f"offline: this change of {section.user} {OFFLINE_CHANGE}; try again"
        section.staged, section.holds = record, True
        return "ok", ""

    def users(self) -> tuple[str, str]:
        if self.agent.offline():
            raise StoreError("offline: the list of enrolled users needs the database")
        for attempt in (1, 2):
            conn, reused = self.agent.pool.acquire(self.agent.op_timeout, fresh=attempt == 2)
            try:
                with conn.cursor() as cur:
                    names = self.agent.db.names(cur)
            except psycopg.Error as exc:
                broken = is_broken(conn, exc)
                self.agent.pool.release(conn, broken=broken)
                if not broken or not reused or attempt == 2:
                    raise
                say(log.INFO, f"pam-twofa-agent: {RETRIED} ({describe(exc)})")
                continue
            except BaseException:
                self.agent.pool.release(conn)
                raise
            self.agent.pool.release(conn)
            return "ok", "\n".join(names)
        raise AssertionError("unreachable")

    def end_section(self, commit: bool, broken: bool = False) -> None:
        if not self.section:
            return
        section, self.section = self.section, None
        try:
            if section.offline:
                if commit and section.staged is not None:
                    self.agent.journal(section)
                return
            assert section.conn is not None and section.cur is not None
            try:
                if not broken:
                    self.agent.db.end_section(section.cur, commit)
            except psycopg.Error as exc:
                self.agent.pool.release(section.conn, broken=is_broken(section.conn, exc))
                if commit:
                    raise
                return
            self.agent.pool.release(section.conn, broken=broken)
            if commit and section.wrote and section.sealed is not None:
                self.agent.cache.saw(section.user, section.version, section.sealed)  # committed at it
                self.agent.link.announce(section.user, section.version)
        finally:
            section.lock.release()


class Agent:
    def __init__(self, policy: Any, pool_size: int, section_timeout: float, name: str | None = None) -> None:
        from pam_twofa.fleet.link import Link

        self.policy = policy
        self.section_timeout = section_timeout
        self.db = Database.from_policy(policy)
        self.db.idle_timeout = int(section_timeout) + 5  # the server's own net under ours
        self.pool = Pool(self.db, pool_size)
        self.op_timeout = policy.pg_statement_timeout + policy.pg_connect_timeout
        self.idle_timeout = 10.0  # a client between operations
        self.io_timeout = 5.0
        self.clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self.listener: socket.socket | None = None
        self.last_report = ("", 0.0)
        self.host = name or socket.gethostname()  # this host in the fleet's log lines
        self.cache = Cache(os.path.join(policy.state_dir, "agent", FILE), keep_rows=policy.offline_max_age > 0)
        self.state = threading.Lock()
        self.offline_since: float | None = None  # time.time() when the database was found unreachable
        self.online_since = time.time()
        self.link = Link(self)

    def now(self) -> float:
        """The wall clock of the offline copy's age (confirmations outlive a restart)."""
        return time.time()

    # -- online and offline ----------------------------------------------------------------

    def offline(self) -> bool:
        return self.offline_since is not None

    def go_offline(self, reason: str) -> bool:
        """Serve logins from the copy from now on (True), unless offline logins are off (False)."""
        if self.policy.offline_max_age <= 0:
            return False
        with self.state:
            if self.offline_since is not None:
                return True
            self.offline_since = self.now()
        confirmed = self.cache.confirmed_at
        age = "never confirmed" if confirmed is None else f"confirmed {self.now() - confirmed:.0f} s ago"
        say(log.WARNING, f"pam-twofa-agent: offline: {reason}; logins are served from this host's copy "
            f"({age}, storage.offline.max_age {self.policy.offline_max_age} s) until the database is back")  # fmt: skip
        self.link.wake()
        return True

    def go_online(self) -> None:
        with self.state:
            since, self.offline_since = self.offline_since, None
            self.online_since = self.now()
        if since is not None:
            say(log.INFO, f"pam-twofa-agent: online: the database is back after {self.now() - since:.0f} s offline")

    def check_fresh(self) -> None:
        """StoreError unless the copy may serve logins: confirmed by the database within max_age."""
        max_age = self.policy.offline_max_age
        confirmed = self.cache.confirmed_at
        if confirmed is None:
            raise StoreError(
                "offline: the database cannot be reached and this host's copy was never confirmed by it "
                "(the agent syncs it once connected): refused"
            )
        age = self.now() - confirmed
        if age > max_age:
            raise StoreError(
                f"offline: the database cannot be reached and this host's copy was last confirmed {age:.0f} s "
                f"ago, more than storage.offline.max_age ({max_age} s): refused"
            )

    def local_record(self, user: str) -> tuple[Record | None, str | None, int]:
        """(the user's record offline, the copy's row it started from, that row's version): the
        journal's newest entry if there is one, else the copy's row; StoreError if the copy does not
        hold the newest row this host has seen (never an older state: a replay)."""
        entries = self.cache.journal(user)
        if entries:
            last = entries[-1]
            try:
                text = fleetkey.open_sealed(self.keyring(), user, last.sealed, last.base_version, fleetkey.JOURNAL)
                return loads(text, user), last.base_sealed, last.base_version
            except (fleetkey.SealError, RecordError) as exc:
                raise CorruptedRecord(f"offline journal of {user}: {exc}; refused") from None
        row = self.cache.row(user)
        known = self.cache.known(user)
        if row is None or row[1] < known:
            if known == 0:
                return None, None, 0  # no row in a confirmed copy: the database had none
            raise StoreError(
                f"offline: this host's copy does not hold the row of {user} at version {known}, the newest it "
                "has seen: refused"
            )
        sealed, version = row
        return self.db.open(Row(user, sealed, version)), sealed, version

    def keyring(self) -> fleetkey.Keyring:
        if self.db.keyring is None:
            raise StoreError("no fleet key loaded")
        return self.db.keyring

    def journal(self, section: Section) -> None:
        """Journal what an offline section saved (before its ``end`` is answered)."""
        record = section.staged
        assert record is not None
        before = section.current.last_step if section.current is not None else -1
        sealed = fleetkey.seal(self.keyring(), section.user, dumps(record), section.version, fleetkey.JOURNAL)
        step = record.last_step if record.last_step > before else None
        self.cache.append(section.user, section.version, section.base_sealed, sealed, step)

    def opened(self, row: Row) -> Record | None:
        """The row's record (None: no row, a tombstone) if it is not older than what this host has
        seen (RolledBack) and opens at its version (CorruptedRecord); its version is then remembered,
        and the row kept in the copy."""
        self.cache.check(row.user, row.exists, row.version)
        record = self.db.open(row)
        if row.exists and row.version is not None:
            self.cache.saw(row.user, row.version, row.sealed)  # only once it opened: a forged row is not believed
        return record

    def status(self) -> str:
        """``twofa-admin db status``: ``key value`` lines."""
        rows, entries, users = self.cache.counts()
        confirmed = self.cache.confirmed_at
        lines = [
            f"host {self.host}",
            f"state {'offline' if self.offline() else 'online'}",
            f"link {'up' if self.link.conn is not None else 'down'}",  # its own connection: LISTEN, sync
            f"since {self.offline_since if self.offline_since is not None else self.online_since:.0f}",
            f"now {self.now():.0f}",
            f"max_age {self.policy.offline_max_age}",
            f"refresh {self.policy.offline_refresh}",
            f"cached {rows}",
            f"confirmed {'never' if confirmed is None else f'{confirmed:.0f}'}",
            f"journal {entries}",
            f"journal_users {users}",
        ]
        return "\n".join(lines)

    def report(self, error: Exception) -> None:
        """One syslog line per distinct problem and second (an outage must not flood the log)."""
        text = str(error)
        now = time.monotonic()
        if self.last_report[0] != text or now - self.last_report[1] > 1:
            say(log.ERR, f"pam-twofa-agent: {text}")
        self.last_report = (text, now)

    def check_database(self) -> None:
        try:
            conn = self.db.connect()
        except StoreError as exc:  # Unreachable: served offline from the copy, when that is on
            if not (isinstance(exc, Unreachable) and self.go_offline(str(exc))):
                say(
                    log.ERR, f"pam-twofa-agent: {exc}; logins fail closed until it is reachable (retried on each login)"
                )
            return
        try:
            with conn.cursor() as cur:
                self.db.canary(cur)
            conn.rollback()
            say(log.INFO, "pam-twofa-agent: database reachable, schema and fleet key OK")
        except StoreError as exc:
            say(log.ERR, f"pam-twofa-agent: {exc}; logins of enrolled users fail closed")
        finally:
            conn.close()

    def bind(self) -> socket.socket:
        path = self.policy.agent_socket
        private_folder(os.path.dirname(path), "the agent's socket folder", "remove it, or set storage.agent_socket")
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # left by an agent that stopped
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(128)
        self.listener = sock
        return sock

    def serve_forever(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn, _addr = self.listener.accept()
            except OSError:
                if self.listener.fileno() < 0:
                    return
                continue
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != 0 or not self.clients.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        try:
            Client(self, conn).serve()
        finally:
            self.clients.release()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pam-twofa-agent",
        description="Serve pam-twofa's logins from the PostgreSQL backend over a root-only Unix socket.",
    )
    p.add_argument("--policy", default=DEFAULT_PATH, metavar="PATH", help=f"policy file (default {DEFAULT_PATH})")
    p.add_argument("--pool", type=int, default=8, metavar="N", help="database connections at most (default 8)")
    p.add_argument(
        "--section-timeout", type=float, default=10.0, metavar="S",
        help="roll back a login's locked section held longer than this (default 10 s)",
    )  # fmt: skip
    p.add_argument(
        "--name", metavar="NAME",
        help="this host's name in the fleet's log lines, e.g. a step accepted on two hosts offline (default: its hostname)",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    from pam_twofa import policy as policy_module

    args = parser().parse_args(argv)
    log.set_ident("pam-twofa-agent")
    if os.geteuid() != 0:
        print("pam-twofa-agent: must run as root", file=sys.stderr)
        return 1
    try:
        loaded = policy_module.load(args.policy)
        if loaded.backend != "postgresql":
            raise StoreError(f"{args.policy}: storage.backend is {loaded.backend}: the agent serves postgresql only")
        agent = Agent(loaded, max(1, args.pool), args.section_timeout, args.name)
        agent.bind()
    except PolicyError as exc:
        for line in exc.errors:
            say(log.ERR, f"pam-twofa-agent: {line}")
        return 2
    except (StoreError, OSError) as exc:
        say(log.ERR, f"pam-twofa-agent: {exc}")
        return 3
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    agent.cache.start()
    agent.check_database()
    agent.link.start()
    say(log.INFO, f"pam-twofa-agent: serving on {loaded.agent_socket}")
    try:
        agent.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        agent.link.stop()
        agent.cache.stop()  # what it saw last, written before it goes
        try:
            os.unlink(loaded.agent_socket)
        except OSError:
            pass
    return 0


def entry() -> None:
    raise SystemExit(main())
