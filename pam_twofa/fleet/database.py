"""The PostgreSQL backend: records sealed under the fleet key, one row per user (docs/store.md).

Used by ``pam-twofa-agent`` (for the logins) and by the commands (directly);
never imported on the login path: psycopg2 and cryptography together cost
several times a whole login there.

Schema (version ``SCHEMA_VERSION``)::

    twofa_meta(name text primary key, value text)           -- schema_version, canary
    twofa_records(user_name text primary key,
                  sealed text,       -- the record text (record.dumps), sealed per key: fleetkey.seal
                  key_ids text,      -- the key ids it is sealed under, for rotations
                  updated_at timestamptz)

A locked section is one transaction: an advisory transaction lock on the
user's name (so that a user without a row is serialised too), then
``SELECT ... FOR UPDATE`` of the row, then the writes, then COMMIT; any
exception rolls it back. Every statement is a constant with parameters.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from pam_twofa.core.record import Record, RecordError, dumps, loads
from pam_twofa.fleet import key as fleetkey
from pam_twofa.store import CorruptedRecord, Section, Store, StoreError, shell_word, storable_name

SCHEMA_VERSION = 1
CANARY_USER = "\0canary"  # no account can have this name: storable_name refuses control characters
CANARY_TEXT = "pam-twofa canary 1"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS twofa_meta (name text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS twofa_records ("
    " user_name text PRIMARY KEY,"
    " sealed text NOT NULL,"
    " key_ids text NOT NULL,"
    " updated_at timestamptz NOT NULL DEFAULT now())",
)

GRANTS = """-- run as the database owner; {role} is the role every host's agent logs in as
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT ON twofa_meta TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON twofa_records TO {role};
"""


def describe(exc: Exception) -> str:
    """A database error as one line for syslog or a terminal: libpq's text, never the password."""
    if isinstance(exc, psycopg2.extensions.QueryCanceledError):
        return "the database did not answer within storage.postgresql.statement_timeout"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


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
    def from_policy(cls, policy, dsn: str | None = None, need_key: bool = True) -> Database:
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

    def connect(self, check_schema: bool = True):
        options = (
            f"-c statement_timeout={self.statement_timeout * 1000} "
            f"-c lock_timeout={self.statement_timeout * 1000} "
            f"-c idle_in_transaction_session_timeout={self.idle_timeout * 1000}"
        )
        kwargs = {"connect_timeout": self.connect_timeout, "options": options, "application_name": "pam-twofa"}
        if self.password is not None:
            kwargs["password"] = self.password
        try:
            conn = psycopg2.connect(self.dsn, **kwargs)
        except psycopg2.Error as exc:
            raise StoreError("database: cannot connect: " + describe(exc)) from None
        if check_schema:
            try:
                self.check_schema(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def check_schema(self, conn) -> int:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT value FROM twofa_meta WHERE name = 'schema_version'")
                row = cur.fetchone()
            conn.rollback()
        except psycopg2.errors.UndefinedTable:
            conn.rollback()
            raise StoreError("database: the pam-twofa tables are missing: run twofa-admin db init") from None
        except psycopg2.Error as exc:
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

    def read(self, cur, user: str) -> Record | None:
        """The user's record as it is now, without a lock (a ``load``)."""
        if not storable_name(user):
            raise StoreError("user name cannot be stored (empty, control characters, or too long)")
        cur.execute("SELECT sealed FROM twofa_records WHERE user_name = %s", (user,))
        row = cur.fetchone()
        return None if row is None else self.unseal(user, row[0])

    def open_section(self, cur, user: str, read: bool, begin: bool = False) -> Record | None:
        """Lock the user's section in the transaction of ``cur``: the advisory lock on the name, then
        the row ``FOR UPDATE``, whether or not the record is wanted, so that every section of a user
        (the agent's ``lock`` and ``lockw``, PgStore's) excludes every other by the same two locks.
        The record with ``read``, else None without opening it (a corrupted record being discarded);
        ``begin``: open the transaction too, for an autocommit connection (one round trip for all)."""
        if not storable_name(user):
            raise StoreError("user name cannot be stored (empty, control characters, or too long)")
        cur.execute(
            ("BEGIN; " if begin else "") + "SELECT pg_advisory_xact_lock(%s); "
            "SELECT sealed FROM twofa_records WHERE user_name = %s FOR UPDATE",
            (lock_key(user), user),
        )
        row = cur.fetchone()
        return None if row is None or not read else self.unseal(user, row[0])

    def end_section(self, cur, commit: bool) -> None:
        """COMMIT or ROLLBACK a section opened with ``begin`` (an autocommit connection)."""
        cur.execute("COMMIT" if commit else "ROLLBACK")

    def unseal(self, user: str, sealed: str) -> Record:
        if self.keyring is None:
            raise StoreError("no fleet key loaded")
        try:
            return loads(fleetkey.open_sealed(self.keyring, user, sealed), user)
        except (fleetkey.SealError, RecordError) as exc:
            raise CorruptedRecord(
                f"database record of {user}: {exc}; restore it from backup or run "
                f"twofa-admin disable {shell_word(user)} and re-enroll"
            ) from None

    def write(self, cur, record: Record, keyring: fleetkey.Keyring | None = None) -> None:
        keyring = keyring or self.keyring
        if keyring is None:
            raise StoreError("no fleet key loaded")
        if not storable_name(record.user):
            raise StoreError("user name cannot be stored (empty, control characters, or too long)")
        sealed = fleetkey.seal(keyring, record.user, dumps(record))
        cur.execute(
            "INSERT INTO twofa_records (user_name, sealed, key_ids) VALUES (%s, %s, %s) "
            "ON CONFLICT (user_name) DO UPDATE SET sealed = EXCLUDED.sealed, key_ids = EXCLUDED.key_ids, "
            "updated_at = now()",
            (record.user, sealed, ",".join(keyring.ids)),
        )

    def remove(self, cur, user: str) -> bool:
        cur.execute("DELETE FROM twofa_records WHERE user_name = %s", (user,))
        return cur.rowcount > 0

    def names(self, cur) -> list[str]:
        cur.execute('SELECT user_name FROM twofa_records ORDER BY user_name COLLATE "C"')
        return [row[0] for row in cur.fetchall()]

    def census(self, cur) -> list[tuple[str, int]]:
        """(key ids, number of records sealed under them) for each set of key ids in use."""
        cur.execute("SELECT key_ids, count(*) FROM twofa_records GROUP BY key_ids ORDER BY key_ids")
        return [(row[0], row[1]) for row in cur.fetchall()]

    def canary(self, cur, keyring: fleetkey.Keyring | None = None) -> None:
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

    def write_canary(self, cur, keyring: fleetkey.Keyring) -> None:
        cur.execute(
            "INSERT INTO twofa_meta (name, value) VALUES ('canary', %s) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            (fleetkey.seal(keyring, CANARY_USER, CANARY_TEXT),),
        )

    def init(self, conn) -> list[str]:
        """Create or complete the schema (idempotent); what it did, one line each."""
        done = []
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('twofa_meta') IS NOT NULL, to_regclass('twofa_records') IS NOT NULL")
            existed = cur.fetchone()
            for statement in SCHEMA:
                cur.execute(statement)
            if not all(existed):
                done.append("created the tables twofa_meta and twofa_records")
            cur.execute("SELECT value FROM twofa_meta WHERE name = 'schema_version'")
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    "INSERT INTO twofa_meta (name, value) VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),)
                )
                done.append(f"schema version {SCHEMA_VERSION} recorded")
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


class _PgSection(Section):
    def __init__(self, store: PgStore, user: str, read: bool) -> None:
        self.store = store
        self.user = user
        self.read = read
        self.record = None
        self.cur: Any = None

    def __enter__(self) -> _PgSection:
        conn = self.store.connection()
        try:
            self.cur = conn.cursor()
            self.record = self.store.db.open_section(self.cur, self.user, read=self.read)
        except psycopg2.Error as exc:
            self.store.broken()
            raise StoreError("database: " + describe(exc)) from None
        except BaseException:
            conn.rollback()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        conn = self.store.conn
        if conn is None:
            return
        try:
            if exc_type is None:
                conn.commit()
            else:
                conn.rollback()
        except psycopg2.Error as error:
            self.store.broken()
            if exc_type is None:
                raise StoreError("database: the change was not committed: " + describe(error)) from None

    def save(self, record: Record) -> None:
        if record.user != self.user:
            raise StoreError("a record can only be saved in its own user's section")
        try:
            self.store.db.write(self.cur, record)
        except psycopg2.Error as exc:
            raise StoreError("database: " + describe(exc)) from None
        self.record = record

    def delete(self) -> bool:
        try:
            existed = self.store.db.remove(self.cur, self.user)
        except psycopg2.Error as exc:
            raise StoreError("database: " + describe(exc)) from None
        self.record = None
        return existed


class PgStore(Store):
    """The Store over one database connection (the commands; the agent pools its own)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn: Any = None

    def connection(self):
        if self.conn is None or self.conn.closed:
            self.conn = self.db.connect()
        return self.conn

    def broken(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.conn = None

    def close(self) -> None:
        self.broken()

    def _run(self, work):
        conn = self.connection()
        try:
            with conn.cursor() as cur:
                result = work(cur)
            conn.commit()
            return result
        except psycopg2.Error as exc:
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
        """StoreError unless the fleet key opens the canary; else (records, [(key ids, records)])."""

        def work(cur):
            self.db.canary(cur)
            return self.db.census(cur)

        by_key = self._run(work)
        return sum(n for _ids, n in by_key), by_key

    def connected_to(self) -> str:
        """Where the connection goes, for ``db check`` (libpq's view of it: host, port, TLS)."""
        info = self.connection().info
        tls = "TLS" if info.ssl_in_use else "no TLS"
        return f"connected to {info.host} port {info.port}, database {info.dbname} as {info.user} ({tls})"

    def rewrite_canary(self, reading: fleetkey.Keyring, new: fleetkey.Keyring) -> None:
        """Check the canary with ``reading``'s keys and seal it again under ``new`` (a key rotation)."""

        def work(cur):
            self.db.canary(cur, reading)
            self.db.write_canary(cur, new)

        self._run(work)

    def reseal(self, user: str, keyring: fleetkey.Keyring) -> None:
        """Write the user's record again, sealed under ``keyring``, in its section (a key rotation)."""
        with self.locked(user) as section:
            if section.record is not None:
                try:
                    self.db.write(section.cur, section.record, keyring=keyring)
                except psycopg2.Error as exc:
                    raise StoreError("database: " + describe(exc)) from None
