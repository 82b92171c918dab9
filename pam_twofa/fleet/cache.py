"""The agent's local state: the versions it has seen, its offline copy, its offline journal.

One root-only SQLite file, ``STATE_DIR/agent/cache.sqlite`` (WAL), holds:

- ``versions``: the highest version of each user's row this host has seen (the rollback check:
  docs/store.md, "Versions");
- ``rows``: the copy of the database's rows, as sealed in the database (never plaintext), each at
  the version it was read or written at, when offline logins are on (``storage.offline.max_age``);
- ``journal``: what logins changed while the database could not be reached, one entry per
  section, each sealed as a journal entry (``fleet.key.JOURNAL``: it can never pass for a row), with
  the row it started from, until it merges on reconnect (docs/many-hosts.md, "When the database is
  down");
- ``meta``: when the database last confirmed the whole copy (``confirmed_at``).

The check reads maps in memory, under a lock. What the database showed (versions, rows) is written
by a writer thread, woken after each change, so that a login's answer never waits for a disk sync;
the price: an agent that crashes (or a host that loses power) within milliseconds of a write may
forget that last batch. A journal entry is written before its login is answered (a replay refused
offline must stay refused after the agent restarts). ``synchronous=NORMAL`` in WAL mode: a commit is
in the file when it returns, the disk sync waits for the checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
import sys
import threading
import time

from pam_twofa.store import RolledBack, StoreError
from pam_twofa.system import log
from pam_twofa.system.fileio import owner_mode_problem

FILE = "cache.sqlite"

TABLES = (
    "CREATE TABLE IF NOT EXISTS versions (user_name TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rows (user_name TEXT PRIMARY KEY, sealed TEXT NOT NULL, version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_name TEXT NOT NULL,"
    " base_version INTEGER NOT NULL, base_sealed TEXT, sealed TEXT NOT NULL, step INTEGER, at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS journal_user ON journal (user_name, seq)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


@dataclasses.dataclass
class Entry:
    """One offline section's result: ``sealed`` (a journal sealing, at ``base_version``) is the record
    it left; ``base_sealed`` the database's row at ``base_version`` it started from (None: no row);
    ``step`` the TOTP step it accepted, if it accepted one."""

    seq: int
    user: str
    base_version: int
    base_sealed: str | None
    sealed: str
    step: int | None
    at: int


def say(priority: int, message: str) -> None:
    """A line for syslog and the agent's standard error (the journal of its systemd unit)."""
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


def background() -> None:
    """Lower the calling thread's CPU priority (nice 10): its work (the copy, the sync) must not
    slow the logins this agent is answering."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except OSError:
        pass


class Cache:
    """The agent's local state in ``path``; ``keep_rows``: keep the offline copy (``max_age`` > 0),
    else the copy is emptied and only the versions (and a journal left to merge) are kept."""

    def __init__(self, path: str, keep_rows: bool = True) -> None:
        self.path = path
        self.keep_rows = keep_rows
        self.lock = threading.Lock()  # the maps in memory
        self.db_lock = threading.Lock()  # the SQLite connection
        self.wake = threading.Condition(self.lock)
        self.stopping = False
        self.pending: dict[str, int] = {}
        self.pending_rows: dict[str, tuple[str, int]] = {}
        self.pending_confirmed: float | None = None
        self.user_locks: dict[str, threading.Lock] = {}
        self.db = self._open()
        self.seen: dict[str, int] = dict(self.db.execute("SELECT user_name, version FROM versions").fetchall())
        if not keep_rows:
            self.db.execute("DELETE FROM rows")
            self.db.execute("DELETE FROM meta WHERE name = 'confirmed_at'")
        # The version of each row in the copy (the file's, then what the writer will add), and the
        # users with journal entries: an online section asks at each login, without SQL.
        self.copied: dict[str, int] = dict(self.db.execute("SELECT user_name, version FROM rows").fetchall())
        self.journaled: set[str] = {user for (user,) in self.db.execute("SELECT DISTINCT user_name FROM journal")}
        found = self.db.execute("SELECT value FROM meta WHERE name = 'confirmed_at'").fetchone()
        self.confirmed_at: float | None = float(found[0]) if found else None
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
                raise StoreError(f"{name}: the agent's state file is not a regular file: remove it")
            problem = owner_mode_problem(
                st, name, "the agent's state file", fix=f"chown root:root {name}; chmod 600 {name}"
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
            for statement in TABLES:
                db.execute(statement)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: the agent's state file cannot be used ({exc})") from None
        finally:
            os.umask(old)
        return db

    # -- the versions seen: the rollback check ------------------------------------------------

    def check(self, user: str, exists: bool, version: int | None) -> None:
        """RolledBack if the user's row (``exists``, at ``version``) is older than the one this host
        has seen (or missing, or without a version, after it was seen)."""
        with self.lock:
            known = self.seen.get(user)
        if known is None:
            return
        if not exists or version is None or version < known:
            shown = "no row" if not exists else "a row without version" if version is None else f"version {version}"
            message = (
                f"rollback: user={log.clean(user)} shown {shown}, this host has seen version {known}: the "
                "database was written back (a restore, a failover that lost writes, or by hand); refused"
            )
            say(log.ERR, f"pam-twofa-agent: {message}")
            raise RolledBack(message)

    def saw(self, user: str, version: int, sealed: str | None = None) -> None:
        """Remember ``version`` of the user's row if it is not lower than what this host has seen,
        and its ``sealed`` text (opened by the caller: a forged row is never kept) in the copy."""
        with self.lock:
            known = self.seen.get(user, 0)
            if version < known:
                return
            if version > known:
                self.seen[user] = version
                self.pending[user] = version
            if sealed is not None and self.keep_rows and self.copied.get(user, -1) < version:
                self.copied[user] = version  # a row the copy has at this version is not written again
                self.pending_rows[user] = (sealed, version)
            self.wake.notify()

    def known(self, user: str) -> int:
        with self.lock:
            return self.seen.get(user, 0)

    def seen_items(self) -> list[tuple[str, int]]:
        with self.lock:
            return list(self.seen.items())

    def confirmed(self, when: float) -> None:
        """The database confirmed the whole copy as of ``when`` (a sync that began then ended)."""
        with self.lock:
            if self.confirmed_at is None or when > self.confirmed_at:
                self.confirmed_at = when
                self.pending_confirmed = when
                self.wake.notify()

    # -- the copy -----------------------------------------------------------------------------

    def row(self, user: str) -> tuple[str, int] | None:
        """The user's row in the copy (sealed, version), the newest: not yet written ones first."""
        with self.lock:
            held = self.pending_rows.get(user)
        if held is not None:
            return held
        with self.db_lock:
            found = self.db.execute("SELECT sealed, version FROM rows WHERE user_name = ?", (user,)).fetchone()
        return (found[0], found[1]) if found else None

    def held(self, user: str) -> int:
        """The version of the user's row in the copy (0: none)."""
        with self.lock:
            return self.copied.get(user, 0)

    def rows(self) -> dict[str, int]:
        """Every row's version in the copy (the sync compares them with the database's)."""
        with self.lock:
            return dict(self.copied)

    # -- the journal --------------------------------------------------------------------------

    def append(self, user: str, base_version: int, base_sealed: str | None, sealed: str, step: int | None) -> None:
        """Add an offline section's result, in the file before this returns."""
        try:
            with self.db_lock:
                self.db.execute(
                    "INSERT INTO journal (user_name, base_version, base_sealed, sealed, step, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (user, base_version, base_sealed, sealed, step, int(time.time())),
                )
                with self.lock:
                    self.journaled.add(user)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot journal the offline change ({exc})") from None

    def journal(self, user: str) -> list[Entry]:
        with self.db_lock:
            found = self.db.execute(
                "SELECT seq, user_name, base_version, base_sealed, sealed, step, at FROM journal "
                "WHERE user_name = ? ORDER BY seq",
                (user,),
            ).fetchall()
        return [Entry(*entry) for entry in found]

    def journal_users(self) -> list[str]:
        with self.lock:
            return sorted(self.journaled)

    def has_journal(self, user: str) -> bool:
        with self.lock:
            return user in self.journaled

    def drop(self, user: str, last_seq: int) -> None:
        """Remove the user's entries up to ``last_seq`` (merged, or dropped after a tombstone)."""
        with self.db_lock:
            self.db.execute("DELETE FROM journal WHERE user_name = ? AND seq <= ?", (user, last_seq))
            left = self.db.execute("SELECT 1 FROM journal WHERE user_name = ? LIMIT 1", (user,)).fetchone()
            if left is None:
                with self.lock:
                    self.journaled.discard(user)

    def counts(self) -> tuple[int, int, int]:
        """(rows in the copy, journal entries, users with journal entries)."""
        with self.db_lock:
            entries, users = self.db.execute("SELECT count(*), count(DISTINCT user_name) FROM journal").fetchone()
        with self.lock:
            rows = len(self.copied)
        return rows, entries, users

    def user_lock(self, user: str) -> threading.Lock:
        """The lock of the user's sections on this host (online and offline alike)."""
        with self.lock:
            lock = self.user_locks.get(user)
            if lock is None:
                lock = self.user_locks[user] = threading.Lock()
            return lock

    # -- the writer ---------------------------------------------------------------------------

    def start(self) -> None:
        self.writer = threading.Thread(target=self._write_loop, name="cache", daemon=True)
        self.writer.start()

    def _write_loop(self) -> None:
        background()
        while True:
            with self.lock:
                while not self._dirty() and not self.stopping:
                    self.wake.wait()
                if not self._dirty() and self.stopping:
                    return
            self.flush()

    def _dirty(self) -> bool:
        return bool(self.pending or self.pending_rows or self.pending_confirmed is not None)

    def flush(self) -> None:
        """Write what is new to the file, in one transaction."""
        with self.lock:
            batch, self.pending = self.pending, {}
            rows, self.pending_rows = self.pending_rows, {}
            confirmed, self.pending_confirmed = self.pending_confirmed, None
        if not batch and not rows and confirmed is None:
            return
        try:
            with self.db_lock:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    self.db.executemany(
                        "INSERT INTO versions (user_name, version) VALUES (?, ?) ON CONFLICT (user_name) "
                        "DO UPDATE SET version = max(version, excluded.version)",
                        sorted(batch.items()),
                    )
                    self.db.executemany(
                        "INSERT INTO rows (user_name, sealed, version) VALUES (?, ?, ?) ON CONFLICT (user_name) "
                        "DO UPDATE SET sealed = excluded.sealed, version = excluded.version "
                        "WHERE excluded.version >= rows.version",
                        [(user, sealed, version) for user, (sealed, version) in sorted(rows.items())],
                    )
                    if confirmed is not None:
                        self.db.execute(
                            "INSERT INTO meta (name, value) VALUES ('confirmed_at', ?) ON CONFLICT (name) "
                            "DO UPDATE SET value = excluded.value",
                            (repr(confirmed),),
                        )
                    self.db.execute("COMMIT")
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            with self.lock:  # kept in memory, and tried again with the next batch
                for user, version in batch.items():
                    self.pending[user] = max(version, self.pending.get(user, 0))
                for user, held in rows.items():
                    if user not in self.pending_rows or self.pending_rows[user][1] < held[1]:
                        self.pending_rows[user] = held
                if confirmed is not None and self.pending_confirmed is None:
                    self.pending_confirmed = confirmed
            say(log.ERR, f"pam-twofa-agent: {self.path}: cannot record what the database showed ({exc})")
            time.sleep(1)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.wake.notify()
        if self.writer is not None:
            self.writer.join(timeout=5)
        self.flush()
