"""Versions and tombstones (schema 2): a row written back, or deleted, behind pam-twofa's back is refused.

The attacker of docs/threat-model.md who holds the database but no host: the
hosts' role password (it may UPDATE and INSERT rows, no longer DELETE them), the
database owner (a DBA), or a backup restored over newer rows. They save a row's
columns, let an agent use a code, lock the user out or disable and re-enroll
them, then write the old columns back (or delete the row, or its tombstone). The
agents, which remember the highest version of each row they have seen, answer
``rollback``. Two agents on one database stand in for two hosts, as in
tests/db/test_agent.py; every check is on a real PostgreSQL 15.
"""

import os
import time
from pathlib import Path

import psycopg
import psycopg.errors
import pytest
from support.records import stored

from pam_twofa.core.record import Record, dumps
from pam_twofa.fleet import key as fleetkey
from pam_twofa.fleet.database import TOMBSTONE
from pam_twofa.store import CorruptedRecord, RolledBack, StoreError
from pam_twofa.store.agent import AgentStore

# The schema of pam-twofa 0.1 (schema 1), as its db init made it: kept here to test the migration.
SCHEMA_1 = (
    "CREATE TABLE twofa_meta (name text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE twofa_records ("
    " user_name text PRIMARY KEY,"
    " sealed text NOT NULL,"
    " key_ids text NOT NULL,"
    " updated_at timestamptz NOT NULL DEFAULT now())",
    "INSERT INTO twofa_meta (name, value) VALUES ('schema_version', '1')",
)
GRANTS_1 = (
    "GRANT USAGE ON SCHEMA public TO twofa",
    "GRANT SELECT ON twofa_meta TO twofa",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON twofa_records TO twofa",
)


def client(fleet, socket=None) -> AgentStore:
    return AgentStore(str(socket or fleet.socket), 5.0)


def sql(fleet, statement, params=(), owner=True):
    """One statement as the database's owner (a DBA, a restore) or as the hosts' role (its password)."""
    if owner:
        conn = psycopg.connect(fleet.server.admin_dsn(fleet.dbname))
    else:
        conn = psycopg.connect(fleet.server.hosts_dsn(fleet.dbname), password=fleet.server.password)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else cur.rowcount
    finally:
        conn.close()


def save_columns(fleet, user):
    (row,) = sql(fleet, "SELECT sealed, key_ids, version FROM twofa_records WHERE user_name = %s", (user,))
    return row


def write_back(fleet, user, columns, owner=False):
    """The attack: the saved columns written over the row (or in place of a deleted one)."""
    sealed, key_ids, version = columns
    done = sql(
        fleet,
        "INSERT INTO twofa_records (user_name, sealed, key_ids, version) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (user_name) DO UPDATE SET sealed = EXCLUDED.sealed, key_ids = EXCLUDED.key_ids, "
        "version = EXCLUDED.version",
        (user, sealed, key_ids, version),
        owner=owner,
    )
    assert done == 1


def version_of(fleet, user):
    return sql(fleet, "SELECT version FROM twofa_records WHERE user_name = %s", (user,))[0][0]


def enrolled(user, key=b"k" * 20, **fields):
    return Record(user, key=key, enrolled_at=1_700_000_000, **fields)


def refused(fleet, store, user, agent, shown, seen):
    """Both ways the login reads (load, a section) answer rollback; the agent's log names it."""
    with pytest.raises(RolledBack, match="rollback"):
        store.load(user)
    with pytest.raises(RolledBack, match="rollback"):
        with store.locked(user):
            pass
    assert f"rollback: user={user} shown {shown}, this host has seen version {seen}" in agent.output()


def second_host(fleet, tmp_path, name="b") -> tuple[Path, Path]:
    """Another host's policy: the same database and key, its own socket and state folder (its own memory)."""
    state = tmp_path / f"state-{name}"
    state.mkdir(mode=0o700)
    socket = Path(str(fleet.socket) + "-" + name)
    text = fleet.policy_text(socket=socket).replace(f"state_dir: {fleet.state_dir}", f"state_dir: {state}")
    path = tmp_path / "etc" / f"{name}.yaml"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path, socket


# -- the attacks --------------------------------------------------------------------------


@pytest.mark.parametrize("owner", [False, True], ids=["hosts-role", "owner"])
def test_a_used_code_written_back_is_refused(fleet, owner):
    agent = fleet.start_agent()
    store = client(fleet)
    store.update("alice", lambda old: enrolled("alice", last_step=100))
    before = save_columns(fleet, "alice")
    store.update("alice", lambda old: _set(old, last_step=101))  # a login used the code of step 101
    assert version_of(fleet, "alice") == before[2] + 1
    write_back(fleet, "alice", before, owner=owner)
    refused(fleet, store, "alice", agent, f"version {before[2]}", before[2] + 1)
    # A new, honest write goes on from the version the host had seen, and is read again.
    assert store.discard("alice") is True
    assert store.load("alice") is None
    assert version_of(fleet, "alice") == before[2] + 2


def _set(record, **fields):
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def test_a_lockout_written_back_away_is_refused_on_both_hosts(fleet, tmp_path):
    agent_a = fleet.start_agent()
    policy_b, socket_b = second_host(fleet, tmp_path)
    agent_b = fleet.start_agent(policy_b)
    a, b = client(fleet), client(fleet, socket_b)
    a.update("alice", lambda old: enrolled("alice"))
    before = save_columns(fleet, "alice")
    a.update("alice", lambda old: _set(old, failures=[1_700_000_000] * 3, locked_until=1_900_000_000))
    assert stored(b, "alice").locked_until == 1_900_000_000  # host B saw the lockout too
    write_back(fleet, "alice", before)
    refused(fleet, a, "alice", agent_a, "version 1", 2)
    refused(fleet, b, "alice", agent_b, "version 1", 2)


def test_a_disabled_secret_written_back_after_re_enrollment_is_refused(fleet):
    agent = fleet.start_agent()
    store = client(fleet)
    store.update("alice", lambda old: enrolled("alice", key=b"1" * 20))
    old_secret = save_columns(fleet, "alice")
    assert store.delete("alice") is True  # twofa-admin disable: a tombstone, not a DELETE
    assert sql(fleet, "SELECT count(*) FROM twofa_records WHERE user_name = 'alice'") == [(1,)]
    assert store.load("alice") is None and store.users() == []
    store.update("alice", lambda old: enrolled("alice", key=b"2" * 20))
    assert version_of(fleet, "alice") == 3  # enrolled 1, disabled 2, enrolled again 3
    write_back(fleet, "alice", old_secret)
    refused(fleet, store, "alice", agent, "version 1", 3)


def test_a_deleted_row_is_refused_not_read_as_not_enrolled(fleet):
    agent = fleet.start_agent()
    store = client(fleet)
    store.update("alice", lambda old: enrolled("alice"))
    # The hosts' role may not delete rows any more; the owner (a DBA) still can.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sql(fleet, "DELETE FROM twofa_records WHERE user_name = 'alice'", owner=False)
    assert sql(fleet, "DELETE FROM twofa_records WHERE user_name = 'alice'") == 1
    refused(fleet, store, "alice", agent, "no row", 1)


def test_a_deleted_tombstone_is_refused_and_so_is_the_old_row_put_in_its_place(fleet):
    agent = fleet.start_agent()
    store = client(fleet)
    store.update("alice", lambda old: enrolled("alice"))
    enrolled_row = save_columns(fleet, "alice")
    store.discard("alice")
    assert store.load("alice") is None  # the tombstone reads as no record
    assert sql(fleet, "DELETE FROM twofa_records WHERE user_name = 'alice'") == 1
    refused(fleet, store, "alice", agent, "no row", 2)
    write_back(fleet, "alice", enrolled_row, owner=True)
    with pytest.raises(RolledBack, match="rollback"):
        store.load("alice")


def test_an_edited_version_column_does_not_open_and_is_not_remembered(fleet):
    agent = fleet.start_agent()
    store = client(fleet)
    store.update("alice", lambda old: enrolled("alice"))
    sql(fleet, "UPDATE twofa_records SET version = version + 1000 WHERE user_name = 'alice'", owner=False)
    with pytest.raises(CorruptedRecord, match="does not open"):
        store.load("alice")
    with pytest.raises(CorruptedRecord, match="does not open"):
        fleet.store().load("alice")  # the commands check the seal against the column too
    sql(fleet, "UPDATE twofa_records SET version = 1 WHERE user_name = 'alice'", owner=False)
    assert store.load("alice") is not None  # version 1001 was not believed
    sql(fleet, "ALTER TABLE twofa_records ALTER COLUMN version DROP NOT NULL")  # the owner may
    sql(fleet, "UPDATE twofa_records SET version = NULL WHERE user_name = 'alice'")
    with pytest.raises(RolledBack, match="rollback"):
        store.load("alice")
    assert "shown a row without version, this host has seen version 1" in agent.output()


def test_a_row_moved_to_another_version_and_resealed_needs_the_key(fleet):
    # Without the fleet key a row cannot be sealed at a higher version: writing the old one's text at
    # version+1 with a sealing from elsewhere (another user's row at that version) does not open.
    fleet.start_agent()
    store = client(fleet)
    store.update("alice", lambda old: enrolled("alice"))
    store.update("alice", lambda old: _set(old, last_step=7))
    store.update("bob", lambda old: enrolled("bob"))
    store.update("bob", lambda old: _set(old, last_step=7))
    store.update("bob", lambda old: _set(old, last_step=8))
    sealed, key_ids, _version = save_columns(fleet, "bob")
    write_back(fleet, "alice", (sealed, key_ids, 3))
    with pytest.raises(CorruptedRecord):
        store.load("alice")


# -- the agent's memory -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_the_memory_survives_a_restart_of_the_agent(fleet, how):
    agent = fleet.start_agent()
    store = client(fleet)
    store.update("alice", lambda old: enrolled("alice"))
    before = save_columns(fleet, "alice")
    store.update("alice", lambda old: _set(old, last_step=9))
    if how == "stopped":
        agent.stop()  # SIGTERM: what it saw last is written before it goes
    else:
        time.sleep(0.5)  # the writer thread syncs right after the answer, not before it
        agent.kill()
    versions = fleet.state_dir / "agent" / "cache.sqlite"
    assert os.stat(versions.parent).st_mode & 0o777 == 0o700
    assert os.stat(versions).st_mode & 0o777 == 0o600
    write_back(fleet, "alice", before)
    again = fleet.start_agent()
    with pytest.raises(RolledBack, match="rollback"):
        store.load("alice")
    assert "rollback: user=alice shown version 1, this host has seen version 2" in again.output()


def test_a_fresh_agent_with_no_memory_accepts_what_it_is_shown(fleet, tmp_path):
    # The documented limit (docs/threat-model.md): a host that never saw the newer row cannot tell.
    fleet.start_agent()
    store = client(fleet)
    store.update("alice", lambda old: enrolled("alice", last_step=1))
    before = save_columns(fleet, "alice")
    store.update("alice", lambda old: _set(old, last_step=2))
    write_back(fleet, "alice", before)
    with pytest.raises(RolledBack):
        store.load("alice")
    policy_b, socket_b = second_host(fleet, tmp_path, "new")
    fleet.start_agent(policy_b)
    fresh = client(fleet, socket_b)
    assert stored(fresh, "alice").last_step == 1
    fresh.update("alice", lambda old: _set(old, last_step=3))  # and writes on from there: version 2
    assert version_of(fleet, "alice") == 2
    # Host A had seen version 2 too (another row of that number): not older, so A takes it as well.
    assert stored(store, "alice").last_step == 3


def test_the_agent_refuses_a_state_file_others_may_read(fleet):
    folder = fleet.state_dir / "agent"
    folder.mkdir(mode=0o700)
    (folder / "cache.sqlite").write_bytes(b"")
    os.chmod(folder / "cache.sqlite", 0o644)
    agent = fleet.start_agent(wait=False)
    assert agent.proc.wait(20) == 3
    assert "cache.sqlite: the agent's state file is mode 0644, readable by others" in agent.output()
    os.chmod(folder / "cache.sqlite", 0o600)
    os.chmod(folder, 0o755)
    agent = fleet.start_agent(wait=False)
    assert agent.proc.wait(20) == 3
    assert "the agent's state folder is mode 0755" in agent.output()


# -- PgStore, tombstones, versions -------------------------------------------------------


@pytest.mark.parametrize("via_agent", [False, True], ids=["database", "agent"])
def test_versions_go_on_over_disable_and_re_enrollment(fleet, via_agent):
    if via_agent:
        fleet.start_agent()
    store = client(fleet) if via_agent else fleet.store()
    store.update("alice", lambda old: enrolled("alice"))
    store.update("alice", lambda old: _set(old, last_step=5))
    assert version_of(fleet, "alice") == 2
    assert store.delete("alice") is True
    assert store.delete("alice") is False  # a tombstone is no record: nothing more written
    assert store.discard("alice") is False
    assert version_of(fleet, "alice") == 3
    assert store.load("alice") is None and store.users() == []
    store.update("alice", lambda old: enrolled("alice"))
    assert version_of(fleet, "alice") == 4 and store.users() == ["alice"]
    keyring = fleetkey.load(str(fleet.key_file))
    (sealed,) = sql(fleet, "SELECT sealed FROM twofa_records WHERE user_name = 'alice'")[0]
    assert fleetkey.open_sealed(keyring, "alice", sealed, 4) == dumps(stored(store, "alice"))
    with pytest.raises(fleetkey.SealError):
        fleetkey.open_sealed(keyring, "alice", sealed, 3)


def test_a_row_is_never_written_back_to_a_version_it_passed(fleet):
    store = fleet.store()
    store.update("alice", lambda old: enrolled("alice"))
    with store.locked("alice") as section:
        section.version = 0  # as a bug would: a write at the version the row already has
        with pytest.raises(StoreError, match="already at version 1 or above"):
            section.save(enrolled("alice", last_step=1))


def test_tombstones_are_sealed_again_by_a_key_rotation(fleet, tmp_path):
    store = fleet.store()
    store.update("alice", lambda old: enrolled("alice"))
    store.delete("alice")
    next_key = tmp_path / "etc" / "next.key"
    rc, out = fleet.admin(["db", "keygen", str(next_key), "--keep", str(fleet.key_file)])
    assert rc == 0, out
    owner = ["--dsn", fleet.server.admin_dsn(fleet.dbname)]
    rc, out = fleet.admin(["db", "rotate-key", str(next_key), "--final", *owner])
    assert rc == 0, out
    new_host = fleet.write_policy(path=tmp_path / "etc" / "new.yaml", key_file=next_key)
    assert fleet.store(new_host).load("alice") is None  # the tombstone opens with the new key alone
    assert fleet.store(new_host).users() == []
    assert version_of(fleet, "alice") == 3


# -- schema 1 to 2 ------------------------------------------------------------------------


def schema_1_database(fleet, users):
    """A database as pam-twofa 0.1 left it: its tables, rows sealed without versions, its GRANTs."""
    name = fleet.server.create_database()
    for statement in SCHEMA_1:
        fleet.server.psql(statement, name)
    keyring = fleetkey.load(str(fleet.key_file))
    conn = psycopg.connect(fleet.server.admin_dsn(name))
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO twofa_meta (name, value) VALUES ('canary', %s)",
            (fleetkey.seal(keyring, "\0canary", "pam-twofa canary 1"),),
        )
        for record in users:
            cur.execute(
                "INSERT INTO twofa_records (user_name, sealed, key_ids) VALUES (%s, %s, %s)",
                (record.user, fleetkey.seal(keyring, record.user, dumps(record)), ",".join(keyring.ids)),
            )
        cur.execute("INSERT INTO twofa_records (user_name, sealed, key_ids) VALUES ('broken', 'x 00 00', 'x')")
    conn.close()
    fleet.server.psql(f"GRANT CONNECT ON DATABASE {name} TO twofa", name)
    for statement in GRANTS_1:
        fleet.server.psql(statement, name)
    return name


def test_db_init_migrates_a_schema_1_database(fleet):
    alice, bob = enrolled("alice", last_step=42), enrolled("bob", failures=[1_700_000_000])
    name = schema_1_database(fleet, [alice, bob])
    fleet.dbname = name
    fleet.write_policy(dsn=fleet.server.hosts_dsn(name))
    with pytest.raises(StoreError, match="schema version 1, this pam-twofa uses 2: run twofa-admin db init"):
        fleet.store().load("alice")
    rc, out = fleet.admin(["db", "init", "--dsn", fleet.server.admin_dsn(name)])
    assert rc == 0, out
    assert "migrated schema 1 to 2: 2 record(s) at version 1, sealed again" in out, out
    assert "NOT RE-SEALED (does not open with the key; run twofa-admin disable broken)" in out, out
    assert "REVOKE DELETE ON twofa_records FROM twofa;" in out
    assert sql(fleet, "SELECT user_name, version FROM twofa_records ORDER BY 1") == [
        ("alice", 1),
        ("bob", 1),
        ("broken", 1),
    ]
    assert sql(fleet, "SELECT value FROM twofa_meta WHERE name = 'schema_version'") == [("2",)]
    assert sql(
        fleet,
        "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'twofa_records' AND column_name = 'version'",
    ) == [("NO",)]
    store = fleet.store()
    assert store.load("alice") == alice and store.load("bob") == bob
    with pytest.raises(CorruptedRecord):
        store.load("broken")
    # A sealing of schema 1 (no version in its associated data) does not open as a schema 2 row.
    keyring = fleetkey.load(str(fleet.key_file))
    with pytest.raises(fleetkey.SealError):
        fleetkey.open_sealed(keyring, "alice", fleetkey.seal(keyring, "alice", dumps(alice)), 1)
    # Idempotent: a second run changes nothing.
    dump = sql(fleet, "SELECT user_name, sealed, version FROM twofa_records ORDER BY 1")
    rc, out = fleet.admin(["db", "init", "--dsn", fleet.server.admin_dsn(name)])
    assert rc == 0 and "schema already at version 2; key canary opens: nothing to do" in out, out
    assert sql(fleet, "SELECT user_name, sealed, version FROM twofa_records ORDER BY 1") == dump
    # db check names the schema, and the DELETE the old GRANTs left to the hosts' role.
    rc, out = fleet.admin(["db", "check"])
    assert rc == 0 and "schema: version 2" in out, out
    assert "WARNING: the role twofa may DELETE rows of twofa_records" in out, out
    assert "REVOKE DELETE ON twofa_records FROM twofa;" in out, out
    fleet.server.psql("REVOKE DELETE ON twofa_records FROM twofa", name)
    rc, out = fleet.admin(["db", "check"])
    assert rc == 0 and "may DELETE" not in out and "REVOKE" not in out, out
    # And an agent serves the migrated rows, and remembers them.
    fleet.start_agent()
    assert client(fleet).load("alice") == alice


def test_a_failed_migration_changes_nothing(fleet, tmp_path):
    name = schema_1_database(fleet, [enrolled("alice")])
    fleet.dbname = name
    other = tmp_path / "etc" / "other.key"
    fleetkey.write_new(str(other), fleetkey.Keyring.generate())
    fleet.write_policy(dsn=fleet.server.hosts_dsn(name), key_file=other)
    rc, out = fleet.admin(["db", "init", "--dsn", fleet.server.admin_dsn(name)])
    assert rc != 0 and "does not open the database's canary" in out, out
    assert sql(fleet, "SELECT value FROM twofa_meta WHERE name = 'schema_version'") == [("1",)]
    columns = sql(fleet, "SELECT column_name FROM information_schema.columns WHERE table_name = 'twofa_records'")
    assert ("version",) not in columns


def test_tombstone_text_is_never_a_record():
    from pam_twofa.core.record import RecordError, loads

    with pytest.raises(RecordError):
        loads(TOMBSTONE, "alice")
