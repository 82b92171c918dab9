"""The PostgreSQL backend: records sealed under the fleet key, one row per user (docs/store.md).

Used by ``pam-twofa-agent`` (for the logins) and by the commands (directly);
never imported on the login path: psycopg and cryptography together cost
several times a whole login there.

Schema (version ``SCHEMA_VERSION``)::

    twofa_meta(name text primary key, value text)           -- schema_version, canary
    twofa_records(user_name text primary key,
                  sealed text,       -- the record text (record.dumps) or TOMBSTONE, sealed per key
                                     -- (fleetkey.seal), every sealing bound to (user, key id, version)
                  key_ids text,      -- the key ids it is sealed under, for rotations
                  version bigint,    -- one more at every write of the row, never less (schema 2)
                  updated_at timestamptz)

A row is never deleted: removing a record writes a sealed TOMBSTONE at the
next version, which reads as "no record", so that the hosts' agents, which
remember the highest version they have seen of each user, can tell a removed
record from a row deleted or written back behind pam-twofa's back (a
``RolledBack``; docs/store.md, "Versions").

A locked section is one transaction: an advisory transaction lock on the
user's name (so that a user without a row is serialised too), then
``SELECT ... FOR UPDATE`` of the row, then the writes, then COMMIT; any
exception rolls it back. Every statement is a constant with parameters.

The driver is psycopg 3, its cursors binding parameters on the client
(``psycopg.ClientCursor``: values quoted by libpq's rules), so
that the statements that open a section travel together in one round trip (the
server-side binding allows one statement per query), and without prepared
statements (``prepare_threshold=None``: a pooler in transaction mode in front of
the database would break them).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import psycopg.errors

from pam_twofa.core.record import Record, RecordError, dumps, loads
from pam_twofa.fleet import key as fleetkey
from pam_twofa.store import CorruptedRecord, Section, Store, StoreError, shell_word, storable_name

SCHEMA_VERSION = 2
CANARY_USER = "\0canary"  # no account can have this name: storable_name refuses control characters
CANARY_TEXT = "pam-twofa canary 1"
TOMBSTONE = "pam-twofa tombstone 1"  # a removed record; record.loads refuses it, so it is never a record

_T = TypeVar("_T")
Connection = psycopg.Connection[tuple[Any, ...]]
Cursor = psycopg.Cursor[tuple[Any, ...]]

CHANNEL = "pam_twofa_records"  # NOTIFY'd with "USER<TAB>VERSION" after every write of a row (``announce``)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS twofa_meta (name text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS twofa_records ("
    " user_name text PRIMARY KEY,"
    " sealed text NOT NULL,"
    " key_ids text NOT NULL,"
    " version bigint NOT NULL,"
    " updated_at timestamptz NOT NULL DEFAULT now())",
    # Which host accepted which step of a user while cut off from the database, written when its
    # journal merges: a step found there for two hosts is a code used twice (a WARNING naming both).
    "CREATE TABLE IF NOT EXISTS twofa_offline_steps ("
    " user_name text NOT NULL,"
    " step bigint NOT NULL,"
    " host text NOT NULL,"
    " merged_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (user_name, step, host))",
    # A NOTIFY trigger of an earlier build of 0.2: a NOTIFY in the writing transaction serialises
    # every commit of the database on one lock (half its capacity, bench (11)); writes are announced
    # after their commit instead (``announce``).
    "DROP TRIGGER IF EXISTS twofa_records_notify ON twofa_records",
    "DROP FUNCTION IF EXISTS twofa_records_notify()",
)

# Schema 1 to 2 (db init): in the transaction of the migration, after a lock on the whole table.
MIGRATE_1_TO_2 = (
    "LOCK TABLE twofa_records IN ACCESS EXCLUSIVE MODE",
    "ALTER TABLE twofa_records ADD COLUMN IF NOT EXISTS version bigint",
)
MIGRATE_1_TO_2_END = "ALTER TABLE twofa_records ALTER COLUMN version SET NOT NULL"

GRANTS = """-- run as the database owner; {role} is the role every host's agent logs in as
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT ON twofa_meta TO {role};
GRANT SELECT, INSERT, UPDATE ON twofa_records TO {role};
REVOKE DELETE ON twofa_records FROM {role};
GRANT SELECT, INSERT ON twofa_offline_steps TO {role};
"""


# After the writes' commit, in a transaction of its own: PostgreSQL serialises the commits of
# notifying transactions on one lock, so that one is short, holds many rows (an agent announces its
# writes in batches: fleet.link), and need not wait for its WAL to reach the disk (a notification
# lost in a crash costs an agent's copy the time to its next sync).
ANNOUNCE = "SELECT set_config('synchronous_commit', 'off', true), pg_notify(%s, p) FROM unnest(%s::text[]) AS p"


class Unreachable(StoreError):
    """The database cannot be reached (no connection within the timeouts, or it went away): the one
    failure the agent answers from its offline copy (a timeout or a schema problem is not one)."""


def describe(exc: Exception) -> str:
    """A database error as one line for syslog or a terminal: libpq's text, never the password."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "the database did not answer within storage.postgresql.statement_timeout"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def is_broken(conn: Connection, exc: BaseException) -> bool:
    """Whether ``exc`` left ``conn`` unusable (the server went away, the socket closed): only such a
    connection is dropped, and a login's work tried once more on a new one. A statement or lock
    timeout (QueryCanceled 57014, LockNotAvailable 55P03) leaves a healthy connection: it is rolled
    back and used again, and the work is not tried twice (twice the timeout would pass the login's
    deadline)."""
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and conn.closed


def _one(cur: Cursor) -> tuple[Any, ...]:
    row = cur.fetchone()
    if row is None:
        raise StoreError("database: a statement that returns one row returned none")
    return row


def lock_key(user: str) -> int:
    """A signed 64-bit advisory lock key for ``user`` (collisions only serialise two users)."""
    digest = hashlib.sha256(b"pam-twofa\0" + user.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def read_password(path: str | None) -> str | None:
    """The role's password: the first line of a root-only secret file (pam_twofa.system.secretfile)."""
    from pam_twofa.system import secretfile

    if path is None:
        return None
    try:
        return secretfile.read_password(path, "the database password file")
    except secretfile.SecretFileError as exc:
        raise StoreError(str(exc)) from None


@dataclasses.dataclass
class Row:
    """A user's row as read, before it is opened: ``version`` 0 and ``sealed`` None when there is
    no row, ``version`` None when the row's version column is empty (edited by hand)."""

    user: str
    sealed: str | None
    version: int | None

    @property
    def exists(self) -> bool:
        return self.sealed is not None


@dataclasses.dataclass
class Replication:
    """What the server connected to says of its standbys (``db check``). ``synchronous`` is how many
    of them are in ``sync`` or ``quorum`` state, None when the role may not see their states (they
    need pg_read_all_stats)."""

    standby_names: str  # synchronous_standby_names
    commit: str  # synchronous_commit
    standbys: int  # standbys streaming from it now (WAL senders)
    synchronous: int | None
    in_recovery: bool  # it is a standby itself

    @property
    def waits_for_a_standby(self) -> bool:
        """Whether a commit returns only once a standby has it (a failover then loses no commit)."""
        return bool(self.standby_names.strip()) and self.commit not in ("off", "local")


class Database:
    """How to reach the database, and the key; statements run on connections it makes."""

    def __init__(
        self,
        dsn: str,
        keyring: fleetkey.Keyring | None,
        password: str | None = None,
        connect_timeout: int = 3,
        statement_timeout: int = 3,
        idle_timeout: int = 30,
    ) -> None:
        self.dsn = dsn
        self.keyring = keyring
        self.password = password
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.idle_timeout = idle_timeout

    @classmethod
    def from_policy(cls, policy: Any, dsn: str | None = None, need_key: bool = True) -> Database:
        if policy.backend != "postgresql" and dsn is None:
            raise StoreError(
                f"{policy.path}: storage.backend is {policy.backend}, not postgresql: set it (and storage.postgresql.dsn)"
            )
        keyring = None
        if need_key:
            try:
                keyring = fleetkey.load(policy.pg_key_file)
            except fleetkey.FleetKeyError as exc:
                raise StoreError(f"{exc} (storage.postgresql.key_file)") from None
        return cls(
            dsn or policy.pg_dsn,
            keyring,
            None if dsn else read_password(policy.pg_password_file),
            policy.pg_connect_timeout,
            policy.pg_statement_timeout,
        )

    def connect(self, check_schema: bool = True, autocommit: bool = False, name: str = "pam-twofa") -> Connection:
        """A new connection (``name``: its application_name, seen in pg_stat_activity); Unreachable
        if there is none within the timeouts."""
        options = (
            f"-c statement_timeout={self.statement_timeout * 1000} "
            f"-c lock_timeout={self.statement_timeout * 1000} "
            f"-c idle_in_transaction_session_timeout={self.idle_timeout * 1000}"
        )
        try:
            conn = psycopg.connect(
                self.dsn,
                autocommit=autocommit,
                prepare_threshold=None,
                cursor_factory=psycopg.ClientCursor,
                connect_timeout=self.connect_timeout,
                options=options,
                application_name=name,
                password=self.password,  # None: not passed (libpq's ~/.pgpass, or none)
                # A server that vanishes without a word (a cut network) must not hang a login until
                # the kernel gives up: unacknowledged data fails after the statement timeout.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=3,
                keepalives_count=3,
                tcp_user_timeout=self.statement_timeout * 1000,
            )
        except psycopg.Error as exc:
            raise Unreachable("database: cannot connect: " + describe(exc)) from None
        if check_schema:
            try:
                self.check_schema(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def check_schema(self, conn: Connection) -> int:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT value FROM twofa_meta WHERE name = 'schema_version'")
                row = cur.fetchone()
            conn.rollback()
        except psycopg.errors.UndefinedTable:
            conn.rollback()
            raise StoreError("database: the pam-twofa tables are missing: run twofa-admin db init") from None
        except psycopg.Error as exc:
            if not conn.closed:
                conn.rollback()
            raise StoreError("database: " + describe(exc)) from None
        if row is None or not row[0].isdigit():
            raise StoreError("database: no schema version recorded: run twofa-admin db init")
        version = int(row[0])
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"database: schema version {version}, this pam-twofa uses {SCHEMA_VERSION}: "
                + ("upgrade pam-twofa on this host" if version > SCHEMA_VERSION else "run twofa-admin db init")
            )
        return version

    # -- statements (cursor of an open transaction) ------------------------------------

    def fetch(self, cur: Cursor, user: str) -> Row:
        """The user's row as it is now, unopened, without a lock."""
        if not storable_name(user):
            raise StoreError("user name cannot be stored (empty, control characters, or too long)")
        cur.execute("SELECT sealed, version FROM twofa_records WHERE user_name = %s", (user,))
        return self._row(user, cur.fetchone())

    @staticmethod
    def _row(user: str, found: tuple[str, int | None] | None) -> Row:
        return Row(user, None, 0) if found is None else Row(user, found[0], found[1])

    def read(self, cur: Cursor, user: str) -> Record | None:
        """The user's record as it is now, without a lock (a ``load``); None for no row or a tombstone."""
        return self.open(self.fetch(cur, user))

    def open_section(self, cur: Cursor, user: str, begin: bool = False) -> Row:
        """Lock the user's section in the transaction of ``cur``: the advisory lock on the name, then
        the row ``FOR UPDATE``, whether or not the record is wanted, so that every section of a user
        (the agent's ``lock`` and ``lockw``, PgStore's) excludes every other by the same two locks.
        The row, unopened (``open`` it for the record; a corrupted record being discarded is not);
        ``begin``: open the transaction too, for an autocommit connection (one round trip for all)."""
        if not storable_name(user):
            raise StoreError("user name cannot be stored (empty, control characters, or too long)")
        # One query of three statements (a ClientCursor: parameters quoted on the client); its
        # rows are the last statement's.
        cur.execute(
            ("BEGIN; " if begin else "") + "SELECT pg_advisory_xact_lock(%s); "
            "SELECT sealed, version FROM twofa_records WHERE user_name = %s FOR UPDATE",
            (lock_key(user), user),
        )
        while cur.nextset():
            pass
        return self._row(user, cur.fetchone())

    def end_section(self, cur: Cursor, commit: bool) -> None:
        """COMMIT or ROLLBACK a section opened with ``begin`` (an autocommit connection)."""
        cur.execute("COMMIT" if commit else "ROLLBACK")

    def announce(self, cur: Cursor, rows: list[tuple[str, int]]) -> None:
        """Tell the listening agents that each user's row is now at its version (after the writes'
        commit, in an autocommit connection or a transaction of its own)."""
        cur.execute(ANNOUNCE, (CHANNEL, [f"{user}\t{version}" for user, version in rows]))

    def _corrupted(self, user: str, why: str) -> CorruptedRecord:
        return CorruptedRecord(
            f"database record of {user}: {why}; restore it from backup or run "
            f"twofa-admin disable {shell_word(user)} and re-enroll"
        )

    def open_text(self, row: Row) -> str | None:
        """The row's text (a record's, or TOMBSTONE), opened at the row's version; None for no row.
        CorruptedRecord if it does not open at that version (tampered, its version column edited)."""
        if row.sealed is None:
            return None
        if self.keyring is None:
            raise StoreError("no fleet key loaded")
        if row.version is None:
            raise self._corrupted(row.user, "the row has no version (edited by hand)")
        try:
            return fleetkey.open_sealed(self.keyring, row.user, row.sealed, row.version)
        except fleetkey.SealError as exc:
            raise self._corrupted(row.user, str(exc)) from None

    def open(self, row: Row) -> Record | None:
        """The row's record; None for no row or a tombstone; CorruptedRecord if it does not open."""
        text = self.open_text(row)
        if text is None or text == TOMBSTONE:
            return None
        try:
            return loads(text, row.user)
        except RecordError as exc:
            raise self._corrupted(row.user, str(exc)) from None

    def holds_record(self, row: Row) -> bool:
        """Whether the row holds a record, readable or not (not no row, not a tombstone)."""
        try:
            return self.open_text(row) not in (None, TOMBSTONE)
        except CorruptedRecord:
            return True

    def write(self, cur: Cursor, record: Record, version: int, keyring: fleetkey.Keyring | None = None) -> str:
        """Write the user's record as the row's ``version`` (one more than the row's, or than the last
        a host saw); a row already at ``version`` or above is a StoreError, nothing written. The row's
        sealed text (for the agent's offline copy)."""
        return self.put(cur, record.user, dumps(record), version, keyring)

    def remove(self, cur: Cursor, user: str, version: int) -> str:
        """Write the user's TOMBSTONE as the row's ``version``: the row is never deleted."""
        return self.put(cur, user, TOMBSTONE, version, None)

    def put(self, cur: Cursor, user: str, text: str, version: int, keyring: fleetkey.Keyring | None) -> str:
        keyring = keyring or self.keyring
        if keyring is None:
            raise StoreError("no fleet key loaded")
        if not storable_name(user):
            raise StoreError("user name cannot be stored (empty, control characters, or too long)")
        sealed = fleetkey.seal(keyring, user, text, version)
        # The WHERE: never write a row back to a version it has passed (a bug, or two writers at once).
        cur.execute(
            "INSERT INTO twofa_records (user_name, sealed, key_ids, version) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (user_name) DO UPDATE SET sealed = EXCLUDED.sealed, key_ids = EXCLUDED.key_ids, "
            "version = EXCLUDED.version, updated_at = now() "
            "WHERE twofa_records.version IS NULL OR twofa_records.version < EXCLUDED.version",
            (user, sealed, ",".join(keyring.ids), version),
        )
        if cur.rowcount != 1:
            raise StoreError(f"database: the row of {user} is already at version {version} or above: nothing written")
        return sealed

    def rows(self, cur: Cursor) -> list[Row]:
        cur.execute('SELECT user_name, sealed, version FROM twofa_records ORDER BY user_name COLLATE "C"')
        return [Row(name, sealed, version) for name, sealed, version in cur.fetchall()]

    def versions(self, cur: Cursor) -> dict[str, int | None]:
        """Every row's version, by user (the agent's sync: it fetches the rows that moved)."""
        cur.execute("SELECT user_name, version FROM twofa_records")
        return dict(cur.fetchall())

    def fetch_many(self, cur: Cursor, users: list[str]) -> list[Row]:
        """The rows of ``users`` that exist, unopened."""
        cur.execute("SELECT user_name, sealed, version FROM twofa_records WHERE user_name = ANY(%s)", (users,))
        return [Row(name, sealed, version) for name, sealed, version in cur.fetchall()]

    def ping(self, cur: Cursor) -> None:
        cur.execute("SELECT 1")

    def listen(self, cur: Cursor) -> None:
        cur.execute(f"LISTEN {CHANNEL}")

    def offline_steps(self, cur: Cursor, user: str, steps: list[int], host: str) -> list[tuple[int, str]]:
        """Record that ``host`` accepted ``steps`` of ``user`` while cut off; the (step, other host)
        pairs another host recorded for the same steps: codes accepted twice."""
        for step in steps:
            cur.execute(
                "INSERT INTO twofa_offline_steps (user_name, step, host) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (user, step, host),
            )
        cur.execute(
            "SELECT step, host FROM twofa_offline_steps WHERE user_name = %s AND step = ANY(%s) AND host <> %s "
            'ORDER BY step, host COLLATE "C"',
            (user, steps, host),
        )
        return [(step, other) for step, other in cur.fetchall()]

    def has_offline_tables(self, cur: Cursor) -> bool:
        """Whether ``db init`` made the offline steps table (``db check``)."""
        cur.execute("SELECT to_regclass('twofa_offline_steps') IS NOT NULL")
        return bool(_one(cur)[0])

    def names(self, cur: Cursor) -> list[str]:
        """Every user whose row holds a record (a corrupted one too; not a tombstone)."""
        return [row.user for row in self.rows(cur) if self.holds_record(row)]

    def has_delete(self, cur: Cursor) -> bool:
        """Whether the role connected may DELETE rows (a database from before schema 2 kept the GRANT)."""
        cur.execute("SELECT has_table_privilege(current_user, 'twofa_records', 'DELETE')")
        return bool(_one(cur)[0])

    def replication(self, cur: Cursor) -> Replication:
        """The server's synchronous replication settings and its standbys now (pg_stat_replication)."""
        cur.execute(
            "SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit'), "
            "pg_is_in_recovery(), count(r.pid), count(r.pid) FILTER (WHERE r.sync_state IN ('sync', 'quorum')), "
            "count(r.pid) FILTER (WHERE r.sync_state IS NULL) FROM (SELECT 1) AS one "
            "LEFT JOIN pg_stat_replication AS r ON true"
        )
        names, commit, in_recovery, standbys, synchronous, hidden = _one(cur)
        return Replication(names, commit, standbys, None if hidden else synchronous, in_recovery)

    def census(self, cur: Cursor) -> list[tuple[str, int]]:
        """(key ids, number of records sealed under them) for each set of key ids in use."""
        cur.execute("SELECT key_ids, count(*) FROM twofa_records GROUP BY key_ids ORDER BY key_ids")
        return [(row[0], row[1]) for row in cur.fetchall()]

    def canary(self, cur: Cursor, keyring: fleetkey.Keyring | None = None) -> None:
        """StoreError unless the canary opens with the key (``db check``, the agent's start)."""
        keyring = keyring or self.keyring
        if keyring is None:
            raise StoreError("no fleet key loaded")
        cur.execute("SELECT value FROM twofa_meta WHERE name = 'canary'")
        row = cur.fetchone()
        if row is None:
            raise StoreError("database: no key canary: run twofa-admin db init")
        try:
            ok = fleetkey.open_sealed(keyring, CANARY_USER, row[0]) == CANARY_TEXT
        except fleetkey.SealError as exc:
            raise StoreError(f"the fleet key does not open the database's canary: {exc}") from None
        if not ok:
            raise StoreError("the fleet key does not open the database's canary")

    def write_canary(self, cur: Cursor, keyring: fleetkey.Keyring) -> None:
        cur.execute(
            "INSERT INTO twofa_meta (name, value) VALUES ('canary', %s) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            (fleetkey.seal(keyring, CANARY_USER, CANARY_TEXT),),
        )

    def init(self, conn: Connection) -> list[str]:
        """Create or complete the schema, or migrate schema 1 to 2 (idempotent, one transaction);
        what it did, one line each."""
        done = []
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('twofa_meta') IS NOT NULL, to_regclass('twofa_records') IS NOT NULL")
            existed = _one(cur)
            offline = all(existed) and self.has_offline_tables(cur)
            for statement in SCHEMA:
                cur.execute(statement)
            if not all(existed):
                done.append("created the tables twofa_meta and twofa_records")
            if not offline:
                done.append("created the table twofa_offline_steps (which host accepted which step offline)")
            cur.execute("SELECT value FROM twofa_meta WHERE name = 'schema_version' FOR UPDATE")
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    "INSERT INTO twofa_meta (name, value) VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),)
                )
                done.append(f"schema version {SCHEMA_VERSION} recorded")
            elif row[0] == "1":
                self.canary(cur)  # the key must open the rows before they are sealed again
                done.extend(self.migrate_1_to_2(cur))
            elif row[0] != str(SCHEMA_VERSION):
                conn.rollback()
                raise StoreError(f"database: schema version {row[0]} is not {SCHEMA_VERSION}: upgrade pam-twofa")
            cur.execute("SELECT 1 FROM twofa_meta WHERE name = 'canary'")
            if cur.fetchone() is None:
                if self.keyring is None:
                    raise StoreError("no fleet key loaded")
                self.write_canary(cur, self.keyring)
                done.append("key canary written (sealed under key " + ", ".join(self.keyring.ids) + ")")
            else:
                self.canary(cur)
        conn.commit()
        return done

    def migrate_1_to_2(self, cur: Cursor) -> list[str]:
        """Schema 1 to 2 in the caller's transaction: every row gets version 1 and is sealed again
        with the (user, key id, version) associated data; a row that does not open with the key is
        kept as it is (it stays unreadable: twofa-admin disable USER)."""
        if self.keyring is None:
            raise StoreError("no fleet key loaded")
        for statement in MIGRATE_1_TO_2:
            cur.execute(statement)
        cur.execute("SELECT user_name, sealed FROM twofa_records WHERE version IS NULL")
        resealed, unreadable = 0, []
        for user, sealed in cur.fetchall():
            try:
                text = fleetkey.open_sealed(self.keyring, user, sealed)
            except fleetkey.SealError:
                unreadable.append(user)
                cur.execute("UPDATE twofa_records SET version = 1 WHERE user_name = %s", (user,))
                continue
            cur.execute(
                "UPDATE twofa_records SET sealed = %s, key_ids = %s, version = 1 WHERE user_name = %s",
                (fleetkey.seal(self.keyring, user, text, 1), ",".join(self.keyring.ids), user),
            )
            resealed += 1
        cur.execute(MIGRATE_1_TO_2_END)
        cur.execute("UPDATE twofa_meta SET value = %s WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))
        done = [f"migrated schema 1 to {SCHEMA_VERSION}: {resealed} record(s) at version 1, sealed again"]
        done += [
            f"NOT RE-SEALED (does not open with the key; run twofa-admin disable {shell_word(u)})" for u in unreadable
        ]
        return done


class _PgSection(Section):
    def __init__(self, store: PgStore, user: str, read: bool) -> None:
        self.store = store
        self.user = user
        self.read = read
        self.record: Record | None = None
        self.cur: Cursor | None = None
        self.version = 0  # the row's version, then the last one this section wrote
        self.holds = False  # whether the row holds a record, in this section's view
        self.wrote = False

    def __enter__(self) -> _PgSection:
        conn = self.store.connection()
        try:
            self.cur = cur = conn.cursor()
            db = self.store.db
            row = db.open_section(cur, self.user)
            if self.read:
                self.record = db.open(row)  # checks the seal's version against the column
                self.holds = self.record is not None
            else:
                self.holds = db.holds_record(row)
            self.version = row.version or 0
        except psycopg.Error as exc:
            self.store.broken()
            raise StoreError("database: " + describe(exc)) from None
        except BaseException:
            conn.rollback()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        conn = self.store.conn
        if conn is None:
            return
        try:
            if exc_type is None:
                conn.commit()
            else:
                conn.rollback()
        except psycopg.Error as error:
            self.store.broken()
            if exc_type is None:
                raise StoreError("database: the change was not committed: " + describe(error)) from None
            return
        if exc_type is None and self.wrote:
            self.store.announce(self.user, self.version)

    def _cursor(self) -> Cursor:
        if self.cur is None:
            raise StoreError("the section is not open")
        return self.cur

    def save(self, record: Record) -> None:
        if record.user != self.user:
            raise StoreError("a record can only be saved in its own user's section")
        try:
            self.store.db.write(self._cursor(), record, self.version + 1)
        except psycopg.Error as exc:
            raise StoreError("database: " + describe(exc)) from None
        self.version += 1
        self.record = record
        self.holds = True
        self.wrote = True

    def delete(self) -> bool:
        existed = self.holds
        if existed:
            try:
                self.store.db.remove(self._cursor(), self.user, self.version + 1)
            except psycopg.Error as exc:
                raise StoreError("database: " + describe(exc)) from None
            self.version += 1
            self.wrote = True
        self.record = None
        self.holds = False
        return existed


class PgStore(Store):
    """The Store over one database connection (the commands; the agent pools its own). It has no
    memory of versions (the agents have): it checks each row's seal against its version column."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn: Connection | None = None

    def connection(self) -> Connection:
        if self.conn is None or self.conn.closed:
            self.conn = self.db.connect()
        return self.conn

    def announce(self, user: str, version: int) -> None:
        """Tell the agents of a committed write (their copies); a failure costs them only the wait
        for their next sync, never the command."""
        conn = self.conn
        if conn is None:
            return
        try:
            with conn.cursor() as cur:
                self.db.announce(cur, [(user, version)])
            conn.commit()
        except psycopg.Error:
            self.broken()

    def broken(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None

    def close(self) -> None:
        self.broken()

    def _run(self, work: Callable[[Cursor], _T]) -> _T:
        conn = self.connection()
        try:
            with conn.cursor() as cur:
                result = work(cur)
            conn.commit()
            return result
        except psycopg.Error as exc:
            self.broken()
            raise StoreError("database: " + describe(exc)) from None
        except BaseException:
            conn.rollback()
            raise

    def load(self, user: str) -> Record | None:
        return self._run(lambda cur: self.db.read(cur, user))

    def locked(self, user: str, read: bool = True) -> _PgSection:
        return _PgSection(self, user, read)

    def users(self) -> list[str]:
        return self._run(self.db.names)

    # -- for twofa-admin db ----------------------------------------------------------------

    def check(self) -> tuple[int, list[tuple[str, int]]]:
        """StoreError unless the fleet key opens the canary; else (rows, [(key ids, rows)])."""

        def work(cur: Cursor) -> list[tuple[str, int]]:
            self.db.canary(cur)
            return self.db.census(cur)

        by_key = self._run(work)
        return sum(n for _ids, n in by_key), by_key

    def may_delete(self) -> bool:
        """Whether this connection's role still has DELETE on the rows (``db check`` warns)."""
        return self._run(self.db.has_delete)

    def has_offline_tables(self) -> bool:
        """Whether ``db init`` made the offline steps table (``db check`` warns)."""
        return self._run(self.db.has_offline_tables)

    def replication(self) -> Replication:
        """The replication of the server connected to (``db check`` warns without a synchronous standby)."""
        return self._run(self.db.replication)

    def connected_to(self) -> str:
        """Where the connection goes, for ``db check`` (libpq's view of it: host, port, TLS)."""
        conn = self.connection()
        info = conn.info
        tls = "TLS" if conn.pgconn.ssl_in_use else "no TLS"
        return f"connected to {info.host} port {info.port}, database {info.dbname} as {info.user} ({tls})"

    def rewrite_canary(self, reading: fleetkey.Keyring, new: fleetkey.Keyring) -> None:
        """Check the canary with ``reading``'s keys and seal it again under ``new`` (a key rotation)."""

        def work(cur: Cursor) -> None:
            self.db.canary(cur, reading)
            self.db.write_canary(cur, new)

        self._run(work)

    def reseal(self, user: str, keyring: fleetkey.Keyring) -> None:
        """Write the user's record again, sealed under ``keyring``, in its section (a key rotation): at
        the next version, every sealing of the row bound to it."""

        def work(cur: Cursor) -> int | None:
            row = self.db.open_section(cur, user)
            text = self.db.open_text(row)  # a record's or a tombstone's: tombstones must open after the rotation too
            if text is None:
                return None
            self.db.put(cur, user, text, (row.version or 0) + 1, keyring)
            return (row.version or 0) + 1

        version = self._run(work)
        if version is not None:
            self.announce(user, version)

    def every_row(self) -> list[str]:
        """Every user with a row, tombstones too (a key rotation seals them all again)."""
        return self._run(lambda cur: [row.user for row in self.db.rows(cur)])
