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
(``Versions``: in memory, and in ``STATE_DIR/agent/versions.sqlite``) and
answers ``rollback`` when the database shows it an older one, or no row for
a user it has seen: a row written back from a backup, a failover that lost
writes, or SQL by hand (docs/store.md, "Versions").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import select
import signal
import socket
import sqlite3
import stat
import struct
import sys
import threading
import time
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from pam_twofa.core.record import Record, RecordError, dumps, loads
from pam_twofa.fleet.database import Connection, Cursor, Database, Row, describe, is_broken
from pam_twofa.policy import DEFAULT_PATH, PolicyError
from pam_twofa.store import CorruptedRecord, RolledBack, StoreError, storable_name
from pam_twofa.store import protocol as agentproto
from pam_twofa.system import log
from pam_twofa.system.fileio import owner_mode_problem

MAX_CLIENTS = 512
RETRIED = "a pooled database connection was broken: tried once more on a new one"


def say(priority: int, message: str) -> None:
    log.emit(priority, message)
    print(message, file=sys.stderr, flush=True)


def private_folder(folder: str, what: str, not_a_folder: str) -> None:
    """Make ``folder`` root-only (0700) if it is missing; StoreError if it is not a folder (``not_a_folder``
    says what to do) or others may enter it. lstat: a link in its place is not a folder."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{folder}: {what} is not a folder: {not_a_folder}")
    problem = owner_mode_problem(st, folder, what, fix=f"chown root:root {folder}; chmod 700 {folder}")
    if problem:
        raise StoreError(problem)


class Versions:
    """The highest version of each user's row this host has seen: the rollback check.

    The check reads a map in memory, under a lock; what is new in it is written to a
    root-only SQLite file (WAL, one transaction per batch) by a writer thread,
    woken after each change, so that a login's answer never waits for a disk sync. The
    price: an agent that crashes (or a host that loses power) within milliseconds of a
    write may forget that last batch, and then accepts the row at the version it
    remembers instead (one write older). On start the map is loaded from the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.stopping = False
        self.db = self._open()
        self.seen = dict(self.db.execute("SELECT user_name, version FROM versions").fetchall())
        self.writer: threading.Thread | None = None

    def _open(self) -> sqlite3.Connection:
        folder = os.path.dirname(self.path)
        parent = os.path.dirname(folder)
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            raise StoreError(f"{parent}: missing (storage.state_dir): mkdir -m 700 {parent}") from None
        problem = owner_mode_problem(st, parent, "the state folder (storage.state_dir)", forbidden=0o022)
        if problem:
            raise StoreError(problem)
        private_folder(folder, "the agent's state folder", "remove it")
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                st = os.lstat(name)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{name}: the agent's versions file is not a regular file: remove it")
            problem = owner_mode_problem(
                st, name, "the agent's versions file", fix=f"chown root:root {name}; chmod 600 {name}"
            )
            if problem:
                raise StoreError(problem)
        old = os.umask(0o077)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit is in the file when it returns (an agent killed loses
            # nothing), the disk sync waits for the checkpoint: no fsync per login beside PostgreSQL's.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS versions (user_name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: the agent's versions file cannot be used ({exc})") from None
        finally:
            os.umask(old)
        return db

    def start(self) -> None:
        self.writer = threading.Thread(target=self._write_loop, name="versions", daemon=True)
        self.writer.start()

    def check(self, row: Row) -> None:
        """RolledBack if ``row`` is older than the user's row this host has seen (or missing, or
        without a version, after it was seen)."""
        with self.lock:
            known = self.seen.get(row.user)
        if known is None:
            return
        if not row.exists or row.version is None or row.version < known:
            shown = "no row" if not row.exists else "a row without version" if row.version is None else (
                f"version {row.version}")  # fmt: skip
            message = (
                f"rollback: user={log.clean(row.user)} shown {shown}, this host has seen version {known}: the "
                "database was written back (a restore, a failover that lost writes, or by hand); refused"
            )
            say(log.ERR, f"pam-twofa-agent: {message}")
            raise RolledBack(message)

    def saw(self, user: str, version: int) -> None:
        """Remember ``version`` of the user's row if it is higher than what this host has seen."""
        with self.lock:
            if version > self.seen.get(user, 0):
                self.seen[user] = version
                self.pending[user] = version
                self.wake.notify()

    def known(self, user: str) -> int:
        with self.lock:
            return self.seen.get(user, 0)

    def _write_loop(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.stopping:
                    self.wake.wait()
                if not self.pending and self.stopping:
                    return
            self.flush()

    def flush(self) -> None:
        """Write what is new to the file, in one transaction."""
        with self.lock:
            batch, self.pending = self.pending, {}
        if not batch:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT INTO versions (user_name, version) VALUES (?, ?) ON CONFLICT (user_name) "
                "DO UPDATE SET version = max(version, excluded.version)",
                sorted(batch.items()),
            )
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            with self.lock:  # kept in memory, and tried again with the next batch
                for user, version in batch.items():
                    self.pending[user] = max(version, self.pending.get(user, 0))
            say(log.ERR, f"pam-twofa-agent: {self.path}: cannot record the versions seen ({exc})")
            time.sleep(1)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.wake.notify()
        if self.writer is not None:
            self.writer.join(timeout=5)
        self.flush()


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
                conn.close()
            # Autocommit: a read is one statement, and a section spells out BEGIN ... COMMIT itself,
            # BEGIN sent together with its first statements (fewer round trips per login).
            return self.db.connect(autocommit=True), False
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
            conn.close()
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
            conn.close()


@dataclasses.dataclass
class Section:
    """A client's open section: one transaction on a pooled connection, until ``deadline``."""

    conn: Connection
    cur: Cursor
    user: str
    deadline: float  # time.monotonic(): rolled back when the client keeps it longer
    version: int = 0  # the row's (or the highest seen), then the last one this section wrote
    holds: bool = False  # whether the row holds a record, in this section's view
    wrote: bool = False


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
            if not self.section:
                return "error", f"{operation} outside a section"
            section = self.section
            if operation == "save":
                try:
                    record = loads(body, section.user)  # validates every field; the row is written from these
                except RecordError as exc:
                    return "error", f"malformed record for {section.user}: {exc}"
                self.agent.db.write(section.cur, record, section.version + 1)
                section.version, section.holds, section.wrote = section.version + 1, True, True
                return "ok", ""
            if operation == "delete":
                if not section.holds:
                    return "ok", "0"
                self.agent.db.remove(section.cur, section.user, section.version + 1)  # a tombstone
                section.version, section.holds, section.wrote = section.version + 1, False, True
                return "ok", "1"
            self.end_section(commit=True)  # "end"
            if section.wrote:  # committed: the row is now at this version
                self.agent.versions.saw(section.user, section.version)
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
            self.end_section(commit=False, broken=self.section is not None and is_broken(self.section.conn, exc))
            return "error", str(error)

    def begin(self, operation: str, user: str) -> tuple[str, str]:
        """``load``, ``lock`` or ``lockw``. Work that a broken pooled connection failed (a database
        that went away since, which ``alive`` could not tell) is tried once more on a new connection;
        any other error (a statement or lock timeout above all) is not: one timeout, not two."""
        agent = self.agent
        for attempt in (1, 2):
            conn, reused = agent.pool.acquire(agent.op_timeout, fresh=attempt == 2)
            try:
                cur = conn.cursor()
                record: Record | None = None
                if operation == "load":
                    row = agent.db.fetch(cur, user)
                else:
                    # lock and lockw take the same locks; lockw only leaves the record unread.
                    section = Section(conn, cur, user, time.monotonic() + agent.section_timeout)
                    self.section = section
                    row = agent.db.open_section(cur, user, begin=True)
                    if operation == "lock":
                        record = agent.opened(row)
                        section.holds = record is not None
                    else:
                        # Unread, so unchecked (discard: the way out of a corrupted or rolled-back
                        # row); what it writes goes above what this host has seen.
                        section.holds = agent.db.holds_record(row)
                    section.version = max(row.version or 0, agent.versions.known(user))
            except psycopg.Error as exc:
                self.section = None
                broken = is_broken(conn, exc)
                agent.pool.release(conn, broken=broken)  # not broken: rolled back, kept
                if not broken or not reused or attempt == 2:
                    raise
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

    def users(self) -> tuple[str, str]:
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
            if not broken:
                self.agent.db.end_section(section.cur, commit)
        except psycopg.Error as exc:
            self.agent.pool.release(section.conn, broken=is_broken(section.conn, exc))
            if commit:
                raise
            return
        self.agent.pool.release(section.conn, broken=broken)


class Agent:
    def __init__(self, policy: Any, pool_size: int, section_timeout: float) -> None:
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
        self.versions = Versions(os.path.join(policy.state_dir, "agent", "versions.sqlite"))

    def opened(self, row: Row) -> Record | None:
        """The row's record (None: no row, a tombstone) if it is not older than what this host has
        seen (RolledBack) and opens at its version (CorruptedRecord); its version is then remembered."""
        self.versions.check(row)
        record = self.db.open(row)
        if row.exists and row.version is not None:
            self.versions.saw(row.user, row.version)  # only once it opened: a forged column is not believed
        return record

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
        except StoreError as exc:
            say(log.ERR, f"pam-twofa-agent: {exc}; logins fail closed until it is reachable (retried on each login)")
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
        agent = Agent(loaded, max(1, args.pool), args.section_timeout)
        agent.bind()
    except PolicyError as exc:
        for line in exc.errors:
            say(log.ERR, f"pam-twofa-agent: {line}")
        return 2
    except (StoreError, OSError) as exc:
        say(log.ERR, f"pam-twofa-agent: {exc}")
        return 3
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    agent.versions.start()
    agent.check_database()
    say(log.INFO, f"pam-twofa-agent: serving on {loaded.agent_socket}")
    try:
        agent.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        agent.versions.stop()  # what it saw last, written before it goes
        try:
            os.unlink(loaded.agent_socket)
        except OSError:
            pass
    return 0


def entry() -> None:
    raise SystemExit(main())
