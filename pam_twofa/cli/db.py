"""``twofa-admin db ...``: the database backend's key, schema, migration and checks (docs/many-hosts.md).

The subcommands' parsers are in ``admin``: this module loads psycopg and cryptography, which the
other commands and hosts on the file backend do not need.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict as parse_dsn

from pam_twofa import policy
from pam_twofa.cli import UsageError
from pam_twofa.fleet import key as fleetkey
from pam_twofa.fleet.database import GRANTS, SCHEMA_VERSION, Database, PgStore, Replication, describe
from pam_twofa.store import CorruptedRecord, StoreError
from pam_twofa.store.files import FileStore


def run(args: argparse.Namespace) -> int:
    try:
        return _COMMANDS[args.db_command](args)
    except psycopg.Error as exc:
        raise StoreError("database: " + describe(exc)) from None


def _commands() -> dict[str, Callable[[argparse.Namespace], int]]:
    return {
        "keygen": cmd_keygen,
        "init": cmd_init,
        "migrate": cmd_migrate,
        "check": cmd_check,
        "status": cmd_status,
        "rotate-key": cmd_rotate,
    }


def _policy(args: argparse.Namespace) -> policy.Policy:
    return policy.load(args.policy)


def _keyring(path: str) -> fleetkey.Keyring:
    try:
        return fleetkey.load(path)
    except fleetkey.FleetKeyError as exc:
        raise UsageError(str(exc)) from None


def cmd_keygen(args: argparse.Namespace) -> int:
    if not os.path.isabs(args.path):
        raise UsageError(f"{args.path}: give an absolute path")
    ring = fleetkey.Keyring.generate()
    if args.keep:
        old = _keyring(args.keep)
        ring = fleetkey.Keyring(ring.keys + [k for k in old.keys if k[0] not in ring.ids][: fleetkey.MAX_KEYS - 1])
    try:
        fleetkey.write_new(args.path, ring)
    except fleetkey.FleetKeyError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.path}: new fleet key {ring.ids[0]}" + (f" (keeping {', '.join(ring.ids[1:])})" if args.keep else ""))
    print("Copy it to storage.postgresql.key_file on every host (root-owned 0600), e.g. with scp -p.")
    return 0


def _open(args: argparse.Namespace, dsn: str | None = None) -> tuple[policy.Policy, Database]:
    loaded = _policy(args)
    return loaded, Database.from_policy(loaded, dsn=dsn)


def cmd_init(args: argparse.Namespace) -> int:
    loaded, db = _open(args, args.dsn)
    conn = db.connect(check_schema=False)
    try:
        done = db.init(conn)
    finally:
        conn.close()
    for line in done or [f"schema already at version {SCHEMA_VERSION}; key canary opens: nothing to do"]:
        print(line)
    params = parse_dsn(loaded.pg_dsn) if loaded.pg_dsn else {}
    role = args.role or params.get("user") or "twofa"
    database = (parse_dsn(args.dsn) if args.dsn else params).get("dbname") or "twofa"
    print("\nLeast privilege for the hosts' role (they need nothing else):")
    print(GRANTS.format(role=_ident(role), database=_ident(database)), end="")
    return 0


def _ident(name: str) -> str:
    if name.replace("_", "a").isalnum() and name.isascii() and name.islower() and not name[0].isdigit():
        return name
    return '"' + name.replace('"', '""') + '"'


def cmd_check(args: argparse.Namespace) -> int:
    loaded, db = _open(args)
    store = PgStore(db)
    count, by_key = store.check()  # connects, checks the schema version, opens the canary
    print(f"database: {store.connected_to()}")
    may_delete = store.may_delete()
    replication = store.replication()
    offline_tables = store.has_offline_tables()
    role = store.connection().info.user
    store.close()
    print(f"schema: version {SCHEMA_VERSION}")
    assert db.keyring is not None  # _open loads it
    print(f"key: {loaded.pg_key_file} opens the canary (keys {', '.join(db.keyring.ids)})")
    # Rows: tombstones (removed records, docs/store.md) included.
    print(f"records: {count}" + "".join(f"; {n} sealed under {k}" for k, n in by_key))
    if may_delete:
        # Schema 2 never deletes a row; a role that may is one a rollback can use (docs/many-hosts.md).
        print(
            f"WARNING: the role {role} may DELETE rows of twofa_records, which pam-twofa never needs since schema 2;"
            f" run as the database owner: REVOKE DELETE ON twofa_records FROM {_ident(role)};"
        )
    if not offline_tables:
        print(
            "WARNING: the table twofa_offline_steps is missing (a database made by an older pam-twofa): a code used"
            " on two hosts while they were cut off from the database goes unnoticed; run twofa-admin db init as the"
            " database owner, and the GRANT lines it prints"
        )
    for line in _replication(replication):
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Ask this host's agent (its socket: root only) how it stands; 0 online, 1 offline or its link down."""
    import time

    from pam_twofa.store.agent import AgentStore

    loaded = _policy(args)
    if loaded.backend != "postgresql":
        raise UsageError(f"{loaded.path}: storage.backend is {loaded.backend}: there is no agent to ask")
    fields = dict(line.partition(" ")[::2] for line in AgentStore(loaded.agent_socket, 5).status().splitlines())
    now = float(fields["now"])

    def ago(when: str) -> str:
        seconds = max(0, int(now - float(when)))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(when)))
        return f"{stamp} ({seconds} s ago)"

    offline = fields["state"] == "offline"
    down = fields.get("link") == "down"
    max_age = int(fields["max_age"])
    print(f"agent: {loaded.agent_socket} on {fields['host']}")
    print(f"database: {'OFFLINE' if offline else 'connected'} since {ago(fields['since'])}")
    if down:
        print(
            "link: DOWN: the agent's own connection (changes pushed by the other hosts, syncs) cannot reach the "
            "database; " + ("it tries every second" if offline else "logins try it themselves")
        )
    if max_age:
        print(f"offline logins: on (storage.offline.max_age {max_age} s, refresh {fields['refresh']} s)")
    else:
        print("offline logins: off (storage.offline.max_age: 0)")
    confirmed = fields["confirmed"]
    print(f"cached records: {fields['cached']}")
    if confirmed == "never":
        print("confirmed by the database: never (the copy cannot serve logins yet)")
    else:
        expired = max_age and now - float(confirmed) > max_age
        print(f"confirmed by the database: {ago(confirmed)}" + (", older than max_age: NOT USED" if expired else ""))
    print(f"journal: {fields['journal']} pending entr{'y' if fields['journal'] == '1' else 'ies'} "
          f"of {fields['journal_users']} user(s)")  # fmt: skip
    return 1 if offline or down else 0


def _replication(state: Replication) -> list[str]:
    """``db check``'s lines on replication: a failover without a synchronous standby loses commits."""
    sync = " (their states need pg_read_all_stats)" if state.synchronous is None else f", {state.synchronous} sync"
    lines = [
        f"replication: {state.standbys} standby(s) streaming{sync}; synchronous_standby_names = "
        f"'{state.standby_names}', synchronous_commit = {state.commit}"
    ]
    if state.in_recovery:
        lines.append(
            "WARNING: this server is a standby (read-only): logins cannot be recorded; list every server in the dsn"
            ' with target_session_attrs=read-write (docs/many-hosts.md, "Failover")'
        )
    elif not state.waits_for_a_standby:
        why = "no standby streams from this server" if not state.standbys else "its standbys are asynchronous"
        lines.append(
            f"WARNING: no synchronous standby ({why}): a failover (or a restore) can forget the last commits, that"
            " is the codes just used, failures, lockouts and disables; the agents that saw them then refuse those"
            " users' rows as rollbacks (their logins fail) until an admin intervenes. Set synchronous_standby_names"
            ' and synchronous_commit = on (or remote_apply) on the primary (docs/many-hosts.md, "Failover")'
        )
    elif state.synchronous == 0:
        lines.append(
            f"WARNING: synchronous_standby_names is '{state.standby_names}' but no synchronous standby is connected:"
            ' every commit, so every login, waits until one is (docs/many-hosts.md, "Failover")'
        )
    return lines


def cmd_migrate(args: argparse.Namespace) -> int:
    loaded, db = _open(args)
    files = FileStore(args.state_dir or loaded.state_dir)
    store = PgStore(db)
    moved, same, conflicts, unreadable = [], [], [], []
    for user in files.users():
        try:
            record = files.load(user)
        except CorruptedRecord as exc:
            unreadable.append(f"{user}: {exc}")
            continue
        if record is None:
            continue
        with store.locked(user) as section:
            if section.record is None:
                section.save(record)
                moved.append(user)
            elif section.record == record:
                same.append(user)
            else:
                conflicts.append(user)
    store.close()
    for user in moved:
        print(f"moved: {user}")
    for user in same:
        print(f"already in the database (same content): {user}")
    for user in conflicts:
        print(f"CONFLICT: {user}: the database holds a different record; kept the database's, the file is unchanged")
    for line in unreadable:
        print(f"SKIPPED (unreadable): {line}")
    print(
        f"{len(moved)} moved, {len(same)} already there, {len(conflicts)} conflicting, {len(unreadable)} unreadable"
        f" (files under {files.users_dir} are left in place)"
    )
    return 1 if conflicts or unreadable else 0


def cmd_rotate(args: argparse.Namespace) -> int:
    loaded, db = _open(args, args.dsn)
    new = _keyring(args.path)
    if args.final:
        new = fleetkey.Keyring(new.keys[:1])
    if db.keyring is None:
        raise UsageError("no fleet key is configured (storage.postgresql.key_file): rotate-key needs the current one")
    # Read with every key known here, write under exactly the new keyring.
    reading = fleetkey.Keyring(new.keys + [k for k in db.keyring.keys if k[0] not in new.ids])
    db.keyring = reading
    store = PgStore(db)
    store.rewrite_canary(reading, new)
    done, failed = 0, []
    for user in store.every_row():
        try:
            store.reseal(user, new)
            done += 1
        except CorruptedRecord as exc:
            failed.append(f"{user}: {exc}")
    store.close()
    if failed:
        for line in failed:
            print(f"NOT RE-SEALED: {line}")
        raise StoreError(f"{len(failed)} record(s) could not be opened with the known keys; nothing else is wrong")
    print(f"{done} record(s) re-sealed under key(s) {', '.join(new.ids)}")
    if args.final:
        fleetkey.replace(args.path, new)
        print(f"{args.path}: now holds only key {new.ids[0]}; hosts holding it (or the previous file) keep working.")
        print("Copy it to every host's key_file; the old key can then be destroyed.")
    else:
        print(f"Next: copy {args.path} to storage.postgresql.key_file on every host and restart pam-twofa-agent there;")
        print(f"then run: twofa-admin db rotate-key {args.path} --final")
    return 0


_COMMANDS = _commands()
