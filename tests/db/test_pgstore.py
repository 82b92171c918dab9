"""The PostgreSQL store and ``twofa-admin db``, against a real PostgreSQL 15 (tests/pgserver.py)."""

import base64
import os
import threading
import time

import psycopg
import psycopg.errors
import pytest

from pam_twofa.core.record import Record
from pam_twofa.fleet import key as fleetkey
from pam_twofa.store import CorruptedRecord, StoreError
from pam_twofa.store.files import FileStore

SECRET = bytes.fromhex("3132333435363738393031323334353637383930")  # RFC 6238's, for the dump search


def enrolled(user, key=SECRET, **fields):
    return Record(
        user,
        key=key,
        enrolled_at=1_700_000_000,
        recovery_salt=os.urandom(16),
        recovery_hashes=[os.urandom(32) for _ in range(3)],
        **fields,
    )


def test_round_trip_users_and_delete(fleet):
    store = fleet.store()
    record = enrolled("alice", last_step=123, failures=[1, 2], locked_until=99, trusted={"192.0.2.1": 5})
    store.update("alice", lambda old: record)
    store.update("b ö'b", lambda old: Record("b ö'b", email="x@example.com"))
    assert store.load("alice") == record
    assert store.users() == ["alice", "b ö'b"]
    assert store.delete("alice") is True
    assert store.load("alice") is None
    assert store.delete("alice") is False


def test_an_exception_in_a_section_rolls_back(fleet):
    store = fleet.store()
    store.update("alice", lambda old: enrolled("alice"))
    with pytest.raises(RuntimeError):
        with store.locked("alice") as section:
            section.save(enrolled("alice", last_step=7))
            raise RuntimeError("the login crashed")
    assert store.load("alice").last_step == -1


def test_sections_of_one_user_exclude_each_other_even_without_a_row(fleet):
    first, second = fleet.store(), fleet.store()
    order = []
    entered = threading.Event()

    def hold():
        with first.locked("nobody-yet") as section:
            entered.set()
            time.sleep(1.0)
            order.append("first done")
            section.save(Record("nobody-yet", last_step=1))

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait(5)
    with second.locked("nobody-yet") as section:
        order.append("second in")
        assert section.record is not None and section.record.last_step == 1  # it saw the first one's write
    thread.join()
    assert order == ["first done", "second in"]


def test_a_lock_held_past_statement_timeout_is_a_store_error(fleet):
    fleet.write_policy(statement_timeout=1)
    holder, waiter = fleet.store(), fleet.store()
    with holder.locked("alice"):
        started = time.monotonic()
        with pytest.raises(StoreError, match="database"):
            with waiter.locked("alice"):
                pass
        assert time.monotonic() - started < 3


def test_database_down_is_a_store_error_naming_the_cause_without_the_password(fleet, tmp_path):
    from pgserver import free_port

    fleet.write_policy(dsn=f"host=127.0.0.1 port={free_port()} dbname=x user=twofa")
    with pytest.raises(StoreError) as info:
        fleet.store().load("alice")
    assert "cannot connect" in str(info.value) and "refused" in str(info.value)
    assert fleet.server.password not in str(info.value)


def test_the_wrong_key_fails_closed_as_a_corrupted_record(fleet, tmp_path):
    fleet.store().update("alice", lambda old: enrolled("alice"))
    other = tmp_path / "other.key"
    fleetkey.write_new(str(other), fleetkey.Keyring.generate())
    fleet.write_policy(key_file=other)
    with pytest.raises(CorruptedRecord, match="wrong fleet key"):
        fleet.store().load("alice")


def test_a_row_copied_onto_another_user_fails_to_open(fleet):
    store = fleet.store()
    store.update("alice", lambda old: enrolled("alice"))
    store.update("bob", lambda old: enrolled("bob", key=b"\x07" * 20))
    fleet.server.psql(
        "UPDATE twofa_records SET sealed = (SELECT sealed FROM twofa_records WHERE user_name = 'alice') "
        "WHERE user_name = 'bob'",
        fleet.dbname,
    )
    with pytest.raises(CorruptedRecord, match="another user"):
        store.load("bob")


def test_tls_verify_full_against_the_harness_certificate(fleet):
    fleet.write_policy(tls=True)
    rc, out = fleet.admin(["db", "check"])
    assert rc == 0, out
    assert "(TLS)" in out and "opens the canary" in out
    # And verify-full really verifies: a name the certificate does not hold is refused.
    fleet.write_policy(dsn=fleet.server.hosts_dsn(fleet.dbname, tls=True).replace("127.0.0.1", "127.0.0.2"))
    with pytest.raises(StoreError, match="cannot connect"):
        fleet.store().load("alice")


def test_a_dump_of_an_enrolled_fleet_holds_no_secret_in_any_encoding(fleet):
    store = fleet.store()
    secrets = {}
    for index in range(5):
        user = f"user{index}"
        key = os.urandom(20)
        record = enrolled(user, key=key, email_code_salt=os.urandom(16), email_code_hash=os.urandom(32))
        secrets[user] = record
        store.update(user, lambda old, r=record: r)
    dump = fleet.dump()
    assert "user3" in dump  # the dump is really of this database
    # Also look inside every hex or base64 run of the dump, decoded (a secret hexed twice is still there).
    import re

    layers = [dump]
    for run in re.findall(r"[0-9a-fA-F]{32,}", dump):
        layers.append(bytes.fromhex(run[: len(run) // 2 * 2]).decode("latin-1"))
    for run in re.findall(r"[A-Za-z0-9+/=]{32,}", dump):
        try:
            layers.append(base64.b64decode(run + "=" * (-len(run) % 4)).decode("latin-1"))
        except ValueError:
            pass
    dump = "\n".join(layers)
    for record in secrets.values():
        for value in (record.key, record.email_code_hash, *record.recovery_hashes):
            for encoded in (
                value.hex(),
                value.hex().upper(),
                base64.b32encode(value).decode().rstrip("="),
                base64.b32encode(value).decode().rstrip("=").lower(),
                base64.b64encode(value).decode().rstrip("="),
                base64.urlsafe_b64encode(value).decode().rstrip("="),
            ):
                assert encoded not in dump
            assert value not in dump.encode("utf-8", "surrogateescape")
            assert value.decode("latin-1") not in dump
    assert "pam-twofa-record" not in dump and "recovery_hashes" not in dump  # no record text at all


def test_db_init_is_idempotent_and_prints_the_grants(fleet):
    rc, out = fleet.admin(["db", "init", "--dsn", fleet.server.admin_dsn(fleet.dbname)])
    assert rc == 0, out
    assert "nothing to do" in out
    assert "GRANT SELECT, INSERT, UPDATE ON twofa_records TO twofa;" in out
    assert "REVOKE DELETE ON twofa_records FROM twofa;" in out  # schema 2 never deletes a row
    # The hosts' role has exactly that: it cannot change the schema, nor delete a row.
    for statement in ("DROP TABLE twofa_records", "DELETE FROM twofa_records"):
        conn = psycopg.connect(fleet.server.hosts_dsn(fleet.dbname), password=fleet.server.password)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.cursor().execute(statement)
        conn.close()


def test_db_check_reports_a_missing_schema(fleet, pg_server):
    empty = pg_server.create_database()
    fleet.write_policy(dsn=pg_server.hosts_dsn(empty))
    pg_server.psql("GRANT CONNECT ON DATABASE " + empty + " TO twofa", empty)
    rc, out = fleet.admin(["db", "check"])
    assert rc == 3 and "run twofa-admin db init" in out, out


def test_db_check_with_the_wrong_key(fleet, tmp_path):
    other = tmp_path / "other.key"
    fleetkey.write_new(str(other), fleetkey.Keyring.generate())
    fleet.write_policy(key_file=other)
    rc, out = fleet.admin(["db", "check"])
    assert rc == 3 and "does not open the database's canary" in out, out


def _file_store_in_every_state(state_dir):
    files = FileStore(str(state_dir))
    records = [
        enrolled("enrolled", last_step=55_000_000, last_success_at=1_700_000_100, last_success_rhost="192.0.2.7"),
        enrolled("locked", failures=[1_700_000_000] * 3, locked_until=1_900_000_000),
        Record(
            "pending",
            email="p@example.com",
            email_code_salt=b"s" * 16,
            email_code_hash=b"h" * 32,
            email_code_expires=1_900_000_000,
            email_sends=[1_700_000_000],
        ),  # fmt: skip
        enrolled("used-recovery", trusted={"198.51.100.2": 1_900_000_000}),
    ]
    records[3].recovery_hashes = records[3].recovery_hashes[:1]
    for record in records:
        files.update(record.user, lambda old, r=record: r)
    return records


def test_db_migrate_moves_every_field_is_safe_to_rerun_and_reports_conflicts(fleet):
    records = _file_store_in_every_state(fleet.state_dir)
    rc, out = fleet.admin(["db", "migrate"])
    assert rc == 0, out
    assert "4 moved, 0 already there, 0 conflicting" in out
    store = fleet.store()
    for record in records:
        assert store.load(record.user) == record  # every field, the replay step included
    rc, out = fleet.admin(["db", "migrate"])
    assert rc == 0 and "0 moved, 4 already there" in out, out
    store.update("locked", lambda old: Record("locked"))  # an admin unlocked it in the database meanwhile
    rc, out = fleet.admin(["db", "migrate"])
    assert rc == 1 and "CONFLICT: locked" in out and "0 moved, 3 already there, 1 conflicting" in out, out
    assert store.load("locked") == Record("locked")  # not overwritten


def test_rotate_key_keeps_both_keys_working_then_final_leaves_only_the_new(fleet, tmp_path):
    store = fleet.store()
    store.update("alice", lambda old: enrolled("alice"))
    old_key = fleet.key_file
    next_key = tmp_path / "etc" / "next.key"
    rc, out = fleet.admin(["db", "keygen", str(next_key), "--keep", str(old_key)])
    assert rc == 0, out
    owner = ["--dsn", fleet.server.admin_dsn(fleet.dbname)]  # the canary is the owner's to rewrite
    rc, out = fleet.admin(["db", "rotate-key", str(next_key), *owner])
    assert rc == 0 and "1 record(s) re-sealed" in out, out
    ring = fleetkey.load(str(next_key))
    old_host = fleet.write_policy(path=tmp_path / "etc" / "old.yaml", key_file=old_key)
    new_host = fleet.write_policy(path=tmp_path / "etc" / "new.yaml", key_file=next_key)
    # During the rotation a host holding either file reads every row, whichever of them wrote it.
    fleet.store(old_host).update("bob", lambda old: enrolled("bob"))
    fleet.store(new_host).update("carol", lambda old: enrolled("carol"))
    for host in (old_host, new_host):
        for user in ("alice", "bob", "carol"):
            assert fleet.store(host).load(user) is not None, (host, user)
    rc, out = fleet.admin(["db", "check"], policy=new_host)  # mid-rotation: the rows by the keys they are under
    assert rc == 0, out
    assert "records: 3; " in out, out
    line = next(line for line in out.splitlines() if line.startswith("records: "))
    parts = sorted(line.split("; ")[1:])
    assert parts == [f"1 sealed under {ring.ids[1]}", f"2 sealed under {ring.ids[0]},{ring.ids[1]}"], out
    rc, out = fleet.admin(["db", "rotate-key", str(next_key), "--final", *owner])
    assert rc == 0 and "3 record(s) re-sealed" in out, out
    assert fleetkey.load(str(next_key)).ids == ring.ids[:1]
    assert fleet.store(new_host).load("bob") is not None
    with pytest.raises(CorruptedRecord, match="wrong fleet key"):
        fleet.store(old_host).load("alice")
    dump = fleet.dump()
    assert ring.ids[0] in dump and ring.ids[1] not in dump  # no row is sealed under the old key any more
    rc, out = fleet.admin(["db", "check"], policy=new_host)
    assert rc == 0, out


def test_the_commands_use_the_database(fleet, monkeypatch):
    from pam_twofa.system import accounts

    alice = accounts.Account("alice", 2001, 2001, {2001}, "/home/alice")
    monkeypatch.setattr(accounts, "lookup", lambda user: alice if user == "alice" else None)
    store = fleet.store()
    store.update("alice", lambda old: enrolled("alice", failures=[int(time.time())] * 3, locked_until=2**31))
    rc, out = fleet.admin(["status", "alice"])
    assert rc == 0 and "until" in out, out
    rc, out = fleet.admin(["unlock", "alice"])
    assert rc == 0 and "unlocked" in out, out
    assert store.load("alice").locked_until == 0
    rc, out = fleet.admin(["email", "alice", "alice@example.com"])
    assert rc == 0, out
    assert store.load("alice").email == "alice@example.com"
    rc, out = fleet.admin(["disable", "alice", "--yes"])
    assert rc == 0 and "disabled" in out, out
    assert not store.load("alice").enrolled
    assert not (fleet.state_dir / "users").exists()  # nothing went to the file store


def test_check_refuses_unsafe_secret_files_and_warns_about_plain_network_dsn(fleet, tmp_path):
    rc, out = fleet.admin(["check"])
    assert rc == 0 and "backend: postgresql" in out, out
    os.chmod(fleet.key_file, 0o644)
    rc, out = fleet.admin(["check"])
    assert rc == 2 and "storage.postgresql.key_file" in out and "0600" in out, out
    assert f"{fleet.policy_path}:" in out
    os.chmod(fleet.key_file, 0o600)
    link = tmp_path / "etc" / "pw-link"
    link.symlink_to(fleet.password_file)
    text = fleet.policy_text().replace(str(fleet.password_file), str(link))
    fleet.policy_path.write_text(text)
    rc, out = fleet.admin(["check"])
    assert rc == 2 and "password_file" in out and "symbolic link" in out, out
    fleet.write_policy(dsn="host=db1.example,127.0.0.1 dbname=twofa user=twofa sslmode=require")
    rc, out = fleet.admin(["check"])
    assert rc == 0 and "warning:" in out and "db1.example" in out and "pose as the database" in out, out
    fleet.write_policy(dsn="host=db1.example dbname=twofa user=twofa sslmode=verify-full")
    rc, out = fleet.admin(["check"])
    assert rc == 0 and "warning" not in out, out
    fleet.write_policy(dsn="host=127.0.0.1 dbname=twofa user=twofa password=hunter2")
    rc, out = fleet.admin(["check"])
    assert rc == 2 and "password_file" in out and "hunter2" not in out, out


def test_disable_removes_a_record_that_does_not_open(fleet, monkeypatch):
    from pam_twofa.system import accounts

    alice = accounts.Account("alice", 2001, 2001, {2001}, "/home/alice")
    monkeypatch.setattr(accounts, "lookup", lambda user: alice if user == "alice" else None)
    fleet.store().update("alice", lambda old: enrolled("alice"))
    fleet.server.psql("UPDATE twofa_records SET sealed = 'x 00 00' WHERE user_name = 'alice'", fleet.dbname)
    rc, out = fleet.admin(["status", "alice"])
    assert rc == 3 and "database record of alice" in out and "twofa-admin disable alice" in out, out
    rc, out = fleet.admin(["disable", "alice", "--yes"])
    assert rc == 0 and "corrupted record removed" in out, out
    assert fleet.store().users() == []


@pytest.mark.parametrize("read", [True, False], ids=["locked", "locked-without-reading"])
def test_a_section_holds_the_row_against_any_other_writer(fleet, read):
    store = fleet.store()
    store.update("alice", lambda old: enrolled("alice"))
    other = psycopg.connect(fleet.server.hosts_dsn(fleet.dbname), password=fleet.server.password)
    try:
        with store.locked("alice", read=read) as section:
            assert (section.record is not None) is read
            with other.cursor() as cur:
                cur.execute("SET lock_timeout = '300ms'")
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    cur.execute("UPDATE twofa_records SET updated_at = now() WHERE user_name = 'alice'")
            other.rollback()
        with other.cursor() as cur:  # and free again once the section ends
            cur.execute("UPDATE twofa_records SET updated_at = now() WHERE user_name = 'alice'")
            assert cur.rowcount == 1
        other.rollback()
    finally:
        other.close()


def test_db_check_counts_the_records(fleet):
    rc, out = fleet.admin(["db", "check"])
    assert rc == 0 and "records: 0\n" in out, out
    store = fleet.store()
    for user in ("alice", "bob"):
        store.update(user, lambda old, u=user: enrolled(u))
    rc, out = fleet.admin(["db", "check"])
    ids = ",".join(fleetkey.load(str(fleet.key_file)).ids)
    assert rc == 0 and f"records: 2; 2 sealed under {ids}\n" in out, out
    assert "database: connected to 127.0.0.1 port " in out and f"database {fleet.dbname} as twofa (no TLS)" in out, out
