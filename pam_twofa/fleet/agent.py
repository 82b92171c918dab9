"""``pam-twofa-agent``: the host agent of the database backend (docs/many-hosts.md, docs/store.md).

A foreground daemon (systemd: config/pam-twofa-agent.service). It holds the
database connections and the fleet key, and serves the login path over a
root-only Unix socket (``storage.agent_socket``; its folder root-owned 0700;
peers other than uid 0 are dropped on accept, by SO_PEERCRED). The
protocol is ``store.protocol``. Each client runs in a thread of its own; database
connections come from a bounded pool, are made again when one breaks, and a
section (``lock`` ... ``end``) is one transaction, rolled back when its client
goes away or keeps it longer than ``--section-timeout``. The agent runs no SQL
of its own: every statement is a method of ``fleet.database.Database`` (``lock``
and ``lockw`` open a section alike, through ``Database.open_section``); a record
the client sends is parsed and written again from the parsed fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from typing import Any

import psycopg2

from pam_twofa.core.record import Record, RecordError, dumps, loads
from pam_twofa.fleet.database import Database, describe
from pam_twofa.policy import DEFAULT_PATH, PolicyError
from pam_twofa.store import CorruptedRecord, StoreError, storable_name
from pam_twofa.store import protocol as agentproto
from pam_twofa.system import log
from pam_twofa.system.fileio import owner_mode_problem

_BROKEN = (psycopg2.OperationalError, psycopg2.InterfaceError)
MAX_CLIENTS = 512


def say(priority: int, message: str) -> None:
    log.emit(priority, message)
    print(message, file=sys.stderr, flush=True)


class Pool:
    """At most ``size`` connections; idle ones are kept, broken ones dropped (the next use reconnects)."""

    def __init__(self, db: Database, size: int) -> None:
        self.db = db
        self.slots = threading.BoundedSemaphore(size)
        self.idle: list = []
        self.lock = threading.Lock()

    def acquire(self, timeout: float):
        """(connection, reused) within ``timeout``; StoreError if none."""
        if not self.slots.acquire(timeout=timeout):
            raise StoreError("every database connection of this agent is busy; try again")
        with self.lock:
            conn = self.idle.pop() if self.idle else None
        if conn is not None and not conn.closed:
            return conn, True
        try:
            conn = self.db.connect()
        except BaseException:
            self.slots.release()
            raise
        # Autocommit: a read is one statement, and a section spells out BEGIN ... COMMIT itself,
        # BEGIN sent together with its first statements (fewer round trips per login).
        conn.autocommit = True
        return conn, False

    def release(self, conn, broken: bool = False) -> None:
        if broken or conn.closed:
            try:
                conn.close()
            except psycopg2.Error:
                pass
        else:
            with self.lock:
                self.idle.append(conn)
        self.slots.release()


@dataclasses.dataclass(frozen=True)
class Section:
    """A client's open section: one transaction on a pooled connection, until ``deadline``."""

    conn: Any
    cur: Any
    user: str
    deadline: float  # time.monotonic(): rolled back when the client keeps it longer


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
                self.agent.db.write(section.cur, record)
                return "ok", ""
            if operation == "delete":
                return "ok", "1" if self.agent.db.remove(section.cur, section.user) else "0"
            self.end_section(commit=True)  # "end"
            return "ok", ""
        except CorruptedRecord as exc:
            self.agent.report(exc)
            self.end_section(commit=False)
            return "corrupt", str(exc)
        except StoreError as exc:
            self.agent.report(exc)
            self.end_section(commit=False)
            return "error", str(exc)
        except psycopg2.Error as exc:
            error = StoreError("database: " + describe(exc))
            self.agent.report(error)
            self.end_section(commit=False, broken=isinstance(exc, _BROKEN))
            return "error", str(error)

    def begin(self, operation: str, user: str) -> tuple[str, str]:
        agent = self.agent
        for attempt in (1, 2):
            conn, reused = agent.pool.acquire(agent.op_timeout)
            try:
                cur = conn.cursor()
                record: Record | None
                if operation == "load":
                    record = agent.db.read(cur, user)
                    agent.pool.release(conn)
                else:
                    # lock and lockw take the same locks; lockw only leaves the record unread.
                    self.section = Section(conn, cur, user, time.monotonic() + agent.section_timeout)
                    record = agent.db.open_section(cur, user, read=operation == "lock", begin=True)
                return ("none", "") if record is None else ("record", dumps(record))
            except _BROKEN:
                # A pooled connection the database dropped (restarted, failed over): once more, anew.
                self.section = None
                agent.pool.release(conn, broken=True)
                if not reused or attempt == 2:
                    raise
            except BaseException:
                if self.section is None:
                    agent.pool.release(conn)
                raise
        raise AssertionError("unreachable")

    def users(self) -> tuple[str, str]:
        conn, _reused = self.agent.pool.acquire(self.agent.op_timeout)
        try:
            with conn.cursor() as cur:
                names = self.agent.db.names(cur)
        except psycopg2.Error:
            self.agent.pool.release(conn, broken=True)
            raise
        self.agent.pool.release(conn)
        return "ok", "\n".join(names)

    def end_section(self, commit: bool, broken: bool = False) -> None:
        if not self.section:
            return
        section, self.section = self.section, None
        try:
            if not broken:
                self.agent.db.end_section(section.cur, commit)
        except psycopg2.Error:
            self.agent.pool.release(section.conn, broken=True)
            if commit:
                raise
            return
        self.agent.pool.release(section.conn, broken=broken)


class Agent:
    def __init__(self, policy, pool_size: int, section_timeout: float) -> None:
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
        folder = os.path.dirname(path)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(
                f"{folder}: the agent's socket folder is not a folder: remove it, or set storage.agent_socket"
            )
        problem = owner_mode_problem(
            st, folder, "the agent's socket folder", fix=f"chown root:root {folder}; chmod 700 {folder}"
        )
        if problem:
            raise StoreError(problem)
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


def main(argv=None) -> int:
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
    agent.check_database()
    say(log.INFO, f"pam-twofa-agent: serving on {loaded.agent_socket}")
    try:
        agent.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        try:
            os.unlink(loaded.agent_socket)
        except OSError:
            pass
    return 0


def entry() -> None:
    raise SystemExit(main())
