"""A PostgreSQL 15 primary and its streaming standby for the failover tests (tests/db/test_failover.py).

Two servers of tests/pgserver.py on 127.0.0.1, each on its own port and in its
own scratch folder: the primary made as pgserver makes one (TLS certificate,
scram-sha-256 over TCP, the hosts' role), the standby a ``pg_basebackup -R`` of
it streaming through a replication slot, so the two have the same roles,
databases, pg_hba.conf and server certificate (valid for 127.0.0.1), and one
multi-host dsn with ``target_session_attrs=read-write`` reaches whichever of
them accepts writes. Synchronous (the primary's ``synchronous_standby_names``
names the standby, ``synchronous_commit = remote_apply``: a commit returns once
the standby has applied it) or asynchronous. Every wait is bounded.

The synchronous settings are made on the primary only, after the base backup:
a promoted standby that inherited them would wait forever for a standby of its
own at each commit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from pgserver import BIN, HOSTS_ROLE, PgServer

STANDBY_NAME = "twofa_standby"  # its cluster_name, so its walreceiver's application_name
SLOT = "twofa_standby_slot"


def wait_for(what: str, check, timeout: float = 30.0, every: float = 0.05):
    """``check()``'s first true value within ``timeout`` seconds; AssertionError naming ``what`` if none."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


class Pair:
    """A primary and a standby; ``primary`` and ``standby`` are PgServer objects (psql, admin_dsn)."""

    def __init__(self, synchronous: bool) -> None:
        self.synchronous = synchronous
        self.primary = PgServer()
        self.standby = PgServer()
        self.killed_at: float | None = None  # time.monotonic() of kill_primary
        self.conninfo = ""  # the standby's primary_conninfo, while cut_replication has emptied it

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Pair:
        primary, standby = self.primary, self.standby
        primary.init()
        with open(primary.data / "postgresql.conf", "a") as conf:
            # A WAL sender for the standby and its slot; no archive. (wal_level replica is the default.)
            conf.write("max_wal_senders = 4\nmax_replication_slots = 4\nwal_keep_size = 64MB\n")
        primary.start()
        primary.setup_role()
        primary.psql(f"SELECT pg_create_physical_replication_slot('{SLOT}')")
        # The standby: a base backup over the primary's Unix socket (initdb's "local replication all
        # trust"), -R writing primary_conninfo and standby.signal; the same role password, CA and
        # server certificate (pgserver's configuration points at the primary's tls folder).
        standby.password = primary.password
        standby.ca = primary.ca
        os.chown(standby.root, standby.pg_uid, standby.pg_gid)
        standby._as_postgres(
            BIN / "pg_basebackup", "-h", primary.root, "-p", primary.port, "-U", "postgres",
            "-D", standby.data, "-R", "-S", SLOT, "-X", "stream", "--no-sync", "-c", "fast",
        )  # fmt: skip
        with open(standby.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {standby.port}\nunix_socket_directories = '{standby.root}'\nhot_standby = on\n"
                f"wal_receiver_status_interval = 1s\ncluster_name = '{STANDBY_NAME}'\n"
            )
        standby.start()
        wait_for("the standby streams from the primary", lambda: self.streaming())
        # pgserver's synchronous_commit = off would lose the primary's last commits to the kill even
        # without a standby: here a commit is flushed locally (async) or applied on the standby (sync).
        self.primary.psql(f"ALTER SYSTEM SET synchronous_commit = '{'remote_apply' if self.synchronous else 'on'}'")
        if self.synchronous:
            self.primary.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
        self.primary.psql("SELECT pg_reload_conf()")
        if self.synchronous:
            wait_for("the standby is synchronous", lambda: self.sync_states() == ["sync"])
        return self

    def destroy(self) -> None:
        for server in (self.standby, self.primary):
            if (server.data / "postmaster.pid").exists():
                server._as_postgres(BIN / "pg_ctl", "-D", server.data, "-m", "immediate", "-w", "stop", check=False)
            shutil.rmtree(server.root, ignore_errors=True)

    # -- state --------------------------------------------------------------------------

    def streaming(self) -> bool:
        return self.primary.psql("SELECT state FROM pg_stat_replication").split() == ["streaming"]

    def sync_states(self) -> list[str]:
        return self.primary.psql("SELECT sync_state FROM pg_stat_replication").split()

    def caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the standby has replayed everything the primary wrote so far."""
        target = self.primary.psql("SELECT pg_current_wal_insert_lsn()").strip()
        wait_for(
            f"the standby replays up to {target}",
            lambda: self.standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn").strip() == "t",
            timeout,
        )

    def dsn(self, dbname: str, tls: bool = True) -> str:
        """libpq's multi-host dsn: the first of the two that accepts writes (either may be the primary)."""
        dsn = (
            f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port} dbname={dbname} "
            f"user={HOSTS_ROLE} target_session_attrs=read-write"
        )
        if tls:
            return dsn + f" sslmode=verify-full sslrootcert={self.primary.ca}"
        return dsn + " sslmode=disable"

    # -- failures ---------------------------------------------------------------------------

    def cut_replication(self, timeout: float = 30.0) -> None:
        """Stop the standby receiving WAL (an empty primary_conninfo, reloaded, ends its walreceiver):
        what the primary commits from now on never reaches it, deterministically. (Pausing the replay
        would not do: a promotion first replays all the WAL already received.)"""
        self.conninfo = self.standby.psql("SHOW primary_conninfo").strip()
        self.standby.psql("ALTER SYSTEM SET primary_conninfo = ''")
        self.standby.psql("SELECT pg_reload_conf()")
        wait_for(
            "the standby's walreceiver stops",
            lambda: (
                self.standby.psql("SELECT count(*) FROM pg_stat_wal_receiver").strip() == "0"
                and self.primary.psql("SELECT count(*) FROM pg_stat_replication").strip() == "0"
            ),
            timeout,
        )

    def restore_replication(self, timeout: float = 30.0) -> None:
        """Undo ``cut_replication``: the standby streams again (and is the synchronous one again)."""
        quoted = self.conninfo.replace("'", "''")
        self.standby.psql(f"ALTER SYSTEM SET primary_conninfo = '{quoted}'")
        self.standby.psql("SELECT pg_reload_conf()")
        wait_for("the standby streams again", self.streaming, timeout)
        if self.synchronous:
            wait_for("the standby is synchronous again", lambda: self.sync_states() == ["sync"], timeout)

    def kill_primary(self, timeout: float = 30.0) -> float:
        """SIGKILL the primary's postmaster and every process of it, as a host dying would (no
        shutdown checkpoint, no last WAL sent); returns time.monotonic() of the kill, once they are gone."""
        pid = int((self.primary.data / "postmaster.pid").read_text().split()[0])
        children = [
            int(p)
            for p in subprocess.run(
                ["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True, check=False
            ).stdout.split()
        ]
        self.killed_at = time.monotonic()
        for victim in [pid, *children]:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for("the primary's processes are gone", lambda: not any(_alive(p) for p in [pid, *children]), timeout)
        return self.killed_at

    def promote(self, timeout: int = 30) -> None:
        """``pg_ctl promote -w``: returns once the standby accepts writes."""
        self.standby._as_postgres(BIN / "pg_ctl", "-D", self.standby.data, "-w", "-t", timeout, "promote")
        assert self.standby.psql("SELECT pg_is_in_recovery()").strip() == "f"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
