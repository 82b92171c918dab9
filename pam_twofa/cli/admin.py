"""twofa-admin: the root tool (docs/admin-guide.md)."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pam_twofa import __version__, policy
from pam_twofa.cli import Parser, UsageError, run
from pam_twofa.cli.backends import storage_problems, store_for
from pam_twofa.cli.pamconfig import render
from pam_twofa.core import trust
from pam_twofa.core.decision import DENY, EMAIL, ENROLL, ERROR, SKIP, TOTP, TRUSTED, Decision, decide
from pam_twofa.core.network import parse_address
from pam_twofa.core.record import Record
from pam_twofa.login.flow import Options
from pam_twofa.policy import DEFAULT_PATH, Policy, PolicyError
from pam_twofa.store import CorruptedRecord, Store, StoreError, shell_word, storable_name
from pam_twofa.system import accounts, log, mail, pamd
from pam_twofa.system.mail import valid_address

EPILOG = """exit codes: 0 ok, 1 usage, unknown user or not root, 2 policy invalid, 3 store unreadable,
  4 unexpected error (nothing changed; please report it), 130 interrupted (nothing changed)

examples:
  twofa-admin check
  twofa-admin status
  twofa-admin status alice --json
  twofa-admin explain alice --rhost 203.0.113.9
  twofa-admin disable alice            # lost phone: remove the secret and recovery codes
  twofa-admin unlock alice
  twofa-admin email alice alice@example.com
  twofa-admin invite --unenrolled --dry-run   # who would be mailed how to enroll
  twofa-admin invite alice bob
  twofa-admin pam-config --stack key
  twofa-admin db check                 # the database backend (docs/many-hosts.md)
"""


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="twofa-admin",
        description="Administer pam-twofa (two-factor authentication for SSH).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--policy", default=DEFAULT_PATH, metavar="PATH", help=f"policy file (default {DEFAULT_PATH})")
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--policy", default=argparse.SUPPRESS, metavar="PATH", help="policy file")
        return cmd

    check = command(
        "check",
        "validate the policy and the PAM configuration: the pam_twofa lines of /etc/pam.d/sshd, and pam_python.so"
        " in any other service (exit 0, or 2 with one file:line: message per error)",
    )
    check.add_argument("--pam-dir", default=None, help=argparse.SUPPRESS)  # tests: a scratch /etc/pam.d
    disable = command("disable", "turn 2FA off for USER: remove the secret, recovery codes, pending codes and state")
    disable.add_argument("user")
    disable.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    status = command("status", "show enrollment, enforcement, lockout and last login per user")
    status.add_argument("user", nargs="?")
    status.add_argument(
        "--json", action="store_true", help="machine-readable output (format: docs/admin-guide.md, status --json)"
    )
    command("unlock", "clear the failure counter and lockout of USER").add_argument("user")
    explain = command("explain", "show what the policy decides for USER, and the rule that decides it")
    explain.add_argument("user")
    explain.add_argument("--rhost", metavar="ADDR", help="client address (default: none)")
    explain.add_argument("--service", default="sshd", metavar="NAME", help="PAM service (default sshd)")
    email = command("email", "record the address USER's emailed codes go to (overrides email.address)")
    email.add_argument("user")
    email.add_argument("address")
    invite = command(
        "invite",
        "mail enforced users who have not enrolled how to set up 2FA (at most once a day per user unless --force)",
    )
    invite.add_argument("users", nargs="*", metavar="USER", help="the users to invite")
    invite.add_argument(
        "--unenrolled",
        action="store_true",
        help="every enforced user this host knows who has not enrolled (docs/admin-guide.md, Inviting users)",
    )
    invite.add_argument("--dry-run", action="store_true", help="list who would be mailed; send and write nothing")
    invite.add_argument("--force", action="store_true", help="mail users invited less than a day ago too")
    config = command(
        "pam-config",
        "print the /etc/pam.d/sshd and sshd_config lines for this install (sshd only: pam_python in any other"
        " service, su, sudo or common-auth, is a local root hole)",
    )
    config.add_argument(
        "--stack", choices=("password", "key"), default="password", help="password+code (default) or SSH key+code"
    )
    _db_parsers(command)
    return top


def _db_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``command(name, help)`` makes a subparser of twofa-admin; db has its own subcommands."""
    db = command("db", "the database backend: keygen, init, migrate, check, status, rotate-key")
    sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")

    def leaf(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--policy", default=argparse.SUPPRESS, metavar="PATH", help="policy file")
        return cmd

    keygen = leaf("keygen", "write a new fleet key file at PATH (root-owned 0600; never overwrites)")
    keygen.add_argument("path")
    keygen.add_argument(
        "--keep", metavar="KEY_FILE", help="also keep the keys of KEY_FILE, after the new one (for rotate-key)"
    )
    init = leaf("init", "create the schema (idempotent) and print the GRANTs for the hosts' role")
    init.add_argument("--dsn", help="connect as the database owner with this connection string (default: the policy's)")
    init.add_argument("--role", help="the hosts' role in the GRANTs (default: user= of the policy's dsn)")
    migrate = leaf("migrate", "copy this host's file store into the database (safe to re-run)")
    migrate.add_argument("--state-dir", metavar="DIR", help="the file store to read (default: storage.state_dir)")
    leaf("check", "connect, check the schema version and that the fleet key opens the canary")
    leaf("status", "this host's agent: online or offline since when, its offline copy and journal")
    rotate = leaf("rotate-key", "re-seal every row under the keys of PATH, while logins go on")
    rotate.add_argument("path")
    rotate.add_argument("--dsn", help="connect as the database owner (the hosts' role cannot rewrite the canary)")
    rotate.add_argument(
        "--final", action="store_true", help="seal under PATH's first key only, and drop the other keys from PATH"
    )


HOLE = "pam_python.so is loaded outside sshd — a local root hole (see docs/threat-model.md); remove it"


def pam_problems(pam_dir: str | None, policy_path: str) -> tuple[list[str], list[str]]:
    """(errors, notes) about /etc/pam.d and /usr/lib/pam.d: bad pam_twofa arguments in sshd, pam_python.so elsewhere."""

    folder = pam_dir or pamd.PAM_DIR
    errors: list[str] = []
    notes: list[str] = []
    sshd = pamd.service_path("sshd", folder)  # /etc/pam.d/sshd, else libpam's /usr/lib/pam.d/sshd
    try:
        lines = pamd.twofa_entries("sshd", folder)
    except pamd.PamdError as exc:
        lines = []
        notes.append(f"note: {exc}: cannot check the pam_twofa lines of sshd")
    else:
        if not lines:
            notes.append(f"note: {sshd} has no pam_twofa line yet (twofa-admin pam-config prints it)")
    for entry in lines:
        options = Options(entry.args[1:])
        errors += [f"{entry.where}: pam_twofa {problem}" for problem in options.problems()]
        if not options.bad and os.path.abspath(policy_path) != options.policy:
            notes.append(
                f"warning: {entry.where} names the policy {options.policy}, not {policy_path} checked here:"
                f" run twofa-admin check --policy {options.policy}"
            )
    problems: list[str] = []
    for _service, entry in pamd.pam_python_outside_sshd(folder, problems=problems):
        errors.append(f"{entry.path_text()}: {HOLE}")
    notes += [f"note: {problem}" for problem in problems]
    return errors, notes


def cmd_check(args: argparse.Namespace) -> int:
    errors, notes = pam_problems(getattr(args, "pam_dir", None), args.policy)
    try:
        loaded = policy.load(args.policy, use_cache=False)
    except PolicyError as exc:
        raise PolicyError([*exc.errors, *errors]) from None
    group_errors, group_notes = group_problems(args.policy, loaded)
    errors, notes = [*group_errors, *errors], [*group_notes, *notes]
    if loaded.backend == "postgresql":
        with open(args.policy, encoding="utf-8") as handle:
            storage_errors, storage_warnings = storage_problems(loaded, handle.read())
        errors, notes = [*storage_errors, *errors], [*(f"warning: {w}" for w in storage_warnings), *notes]
        where = f"backend: postgresql via {loaded.agent_socket}"
    else:
        where = f"state_dir: {loaded.state_dir}"
    print(f"{args.policy}: OK (enforce.mode: {loaded.mode}, {where})")
    for note in notes:
        print(note)
    for error in errors:
        print(error, file=sys.stderr)
    return 2 if errors else 0


def group_problems(path: str, loaded: Policy) -> tuple[list[str], list[str]]:
    """(errors, warnings) for policy groups this system's group database does not resolve.

    This asks NSS, so ``check`` reports an outage of SSSD/LDAP too: an enforce group that does not
    resolve makes logins of users outside the other enforce groups apply on_error (never "not a
    member"); an exempt group that does not resolve exempts nobody.
    """

    errors: list[str] = []
    notes: list[str] = []
    wanted = loaded.exempt_groups + (loaded.enforce_groups if loaded.mode == "groups" else ())
    found = accounts.group_ids(wanted) if wanted else {}
    if loaded.mode == "groups":
        for name in loaded.enforce_groups:
            if found.get(name) is None:
                errors.append(
                    f"{path}: enforce.groups: group {name!r} does not resolve on this system (no such group, or "
                    f"the group database is not answering): logins of users not in another enforce group will get "
                    f"on_error ({loaded.on_error}); fix the name or the group source"
                )
    for name in loaded.exempt_groups:
        if found.get(name) is None:
            notes.append(
                f"{path}: warning: exempt.groups: group {name!r} does not resolve on this system: it exempts nobody"
            )
    return errors, notes


def _context(args: argparse.Namespace) -> tuple[Policy, Store]:
    loaded = policy.load(args.policy)
    return loaded, store_for(loaded)


def _known(store: Store, user: str) -> tuple[accounts.Account | None, Record | None]:
    """(account or None, record or None); UsageError if the user is neither on the system nor in the store."""

    if not storable_name(user):
        raise UsageError(f"invalid user name {user!r} (empty, control characters, or too long)")
    account = accounts.lookup(user)
    # The account's own spelling: with a case-insensitive directory every spelling shares one record.
    record = store.load(account.name if account is not None else user)
    if account is None and record is None:
        raise UsageError(f"unknown user {user!r}: no such account and no 2FA record")
    return account, record


def _audit(action: str, user: str) -> None:
    log.emit(log.NOTICE, f"twofa-admin: {action} user={log.clean(user)} by={log.clean(invoker())}")


def cmd_unlock(args: argparse.Namespace) -> int:
    loaded, store = _context(args)
    _account, record = _known(store, args.user)
    if record is None or not (record.failures or record.locked_until):
        print(f"{args.user}: not locked; nothing to do")
        return 0

    def clear(current: Record | None) -> Record | None:
        if current is None:
            return None
        current = current.copy()
        current.failures = []
        current.locked_until = 0
        return current

    store.update(args.user, clear)
    _audit("unlock", args.user)
    print(f"{args.user}: unlocked, failure counter cleared")
    return 0


def _confirm(question: str, refusal: str) -> bool:
    """Ask on the terminal; without one, refuse (the caller must pass --yes)."""

    if not sys.stdin.isatty():
        raise UsageError(refusal)
    return input(question + " [y/N] ").strip().lower() in ("y", "yes")


def cmd_disable(args: argparse.Namespace) -> int:
    loaded, store = _context(args)
    try:
        account, record = _known(store, args.user)
    except CorruptedRecord as exc:
        # The login refuses it and says to run this: remove it without reading it.
        question = f"{exc}\nRemove this record (the user must enroll again)?"
        if not args.yes and not _confirm(question, f"{exc}\nrefusing to remove it without confirmation: pass --yes"):
            print("nothing changed")
            return 1
        store.discard(args.user)
        _audit("disable (corrupted record removed)", args.user)
        print(f"{args.user}: corrupted record removed.")
        return _print_next_decision(loaded, store, args.user)
    if record is None or (not record.enrolled and record == Record(record.user, email=record.email)):
        print(f"{args.user}: 2FA is not enrolled and there is no login state; nothing to disable")
        return 0
    question = f"Disable 2FA for {args.user} (removes the secret and recovery codes)?"
    if not args.yes and not _confirm(question, "refusing to disable without confirmation: pass --yes"):
        print("nothing changed")
        return 1

    def wipe(current: Record | None) -> Record | None:
        # Keep only the admin-recorded address, so an enforced user's emailed
        # codes still go where the admin said.
        if current is None or not current.email:
            return None
        return Record(current.user, email=current.email)

    store.update(args.user, wipe)
    _audit("disable", args.user)
    if record.enrolled:
        print(f"{args.user}: 2FA disabled (secret, recovery codes, trusted clients and login state removed).")
    else:
        print(f"{args.user}: was not enrolled; pending emailed code, failures, lockout and trusted clients removed.")
    return _print_next_decision(loaded, store, args.user)


def _print_next_decision(loaded: Policy, store: Store, user: str) -> int:
    account = accounts.lookup(user)
    if account is not None:
        decision = _decide(loaded, store, account, None)
        print(f"From the next login, the policy decides: {_DESCRIBE[decision.action]}")
        print(f"  rule: {decision.rule}")
    return 0


_DESCRIBE = {
    SKIP: "no code is asked",
    TOTP: "the authenticator (or a recovery) code is asked",
    EMAIL: "a one-time code is emailed and asked for (2FA stays on for this enforced account)",
    DENY: "the login is refused until the user enrolls (enforce.unenrolled: deny)",
    ENROLL: "a one-time code is emailed and asked for, then the authenticator app is set up in the same login"
    " (enforce.unenrolled: enroll)",
    TRUSTED: "no code is asked: a code was accepted from this client within trust.seconds",
    ERROR: "the facts cannot be read (a policy group does not resolve): the policy's on_error applies",
}


def _decide(loaded: Policy, store: Store, account: accounts.Account, rhost: str | None, now: float = 0.0) -> Decision:
    return decide(loaded, accounts.facts(loaded, account, store.load(account.name), rhost, now))


def _trust_note(loaded: Policy, record: Record | None, rhost: str | None, decision: Decision, now: float) -> str | None:
    """What trusted clients mean for this login (None when trust is off or would not matter)."""

    if not loaded.trust_seconds or decision.action not in (TOTP, EMAIL, TRUSTED):
        return None
    key = trust.client_key(rhost)
    if key is None:
        if rhost and parse_address(rhost) is not None:
            return "trust: a link-local or zoned address is never trusted (another host on another link may have it)"
        what = "no client address" if not rhost else "the client is not an IP address"
        return f"trust: {what}: never trusted (trust.seconds needs an IP address)"
    until = trust.until(record, rhost)
    if decision.action == TRUSTED:
        return f"trust: {key} is trusted until {_iso(until)}; only a login that is asked and passes renews it"
    if trust.applies(until, loaded.trust_seconds, now):
        return f"trust: {key} is trusted until {_iso(until)}, but the account is locked: the code is asked"
    return f"trust: {key} is not trusted; a correct code from it trusts it for {loaded.trust_seconds} s"


def cmd_explain(args: argparse.Namespace) -> int:
    loaded, store = _context(args)
    account, _record = _known(store, args.user)
    if account is None:
        raise UsageError(f"unknown user {args.user!r}: logins as this name are asked for a code and refused")
    if args.rhost is not None and parse_address(args.rhost) is None:
        note = " (not an IP address: matches no network)"
    else:
        note = ""

    now = time.time()
    decision = _decide(loaded, store, account, args.rhost, now)
    print(f"user {account.name}, client {args.rhost or '(none)'}{note}, service {args.service}")
    print(f"decision: {decision.action}: {_DESCRIBE[decision.action]}")
    print(f"rule: {decision.rule}")
    record = store.load(account.name)
    trust_note = _trust_note(loaded, record, args.rhost, decision, now)
    if trust_note:
        print(trust_note)
    count = len(_trusted_rows(loaded, record, now))
    print(f"trusted clients: {count}" + ("" if loaded.trust_seconds else " (trust.seconds is 0: trust is off)"))
    return 0


def _iso(timestamp: float) -> str | None:
    if not timestamp:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _trusted_rows(loaded: Policy, record: Record | None, now: float) -> list[dict[str, str | None]]:
    """The client addresses a login is not asked from (trust.seconds), soonest expiry first."""

    if record is None:
        return []
    entries = sorted((until, address) for address, until in record.trusted.items())
    return [
        {"address": address, "until": _iso(until)}
        for until, address in entries
        if trust.applies(until, loaded.trust_seconds, now)
    ]


def status_rows(loaded: Policy, store: Store, only: str | None = None) -> list[dict[str, Any]]:
    """One dict per user in the store or enforced by the policy (the ``--json`` format)."""

    now = time.time()
    if only is not None:
        names: list[str] | set[str] = [only]
    else:
        names = set(store.users())
        # Every account the policy names, exempt ones included: a break-glass account in an
        # enforced group and an exempt group is exactly what an auditor looks for.
        candidates = {account.name: account for account in accounts.login_accounts()}
        for name in (*loaded.exempt_users, *accounts.group_members(loaded.exempt_groups)):
            account = accounts.lookup(name)
            if account is not None:
                candidates.setdefault(account.name, account)
        for account in candidates.values():
            if account.name in names:
                continue
            decision = decide(loaded, accounts.facts(loaded, account, None, None))
            if decision.action != SKIP or decision.exempt:
                names.add(account.name)
        names = sorted(names)
    rows: list[dict[str, Any]] = []
    for name in names:
        account = accounts.lookup(name)
        record = store.load(name)
        row: dict[str, Any] = {
            "user": name,
            "account": account is not None,
            "enrolled": bool(record and record.enrolled),
            "enrolled_at": _iso(record.enrolled_at) if record and record.enrolled else None,
        }
        if account is not None:
            decision = decide(loaded, accounts.facts(loaded, account, record, None))
            unenrolled = decide(loaded, accounts.facts(loaded, account, None, None))
            row["decision"] = decision.action
            row["rule"] = decision.rule
            row["exempt"] = decision.exempt
            row["enforced"] = unenrolled.action in ENFORCED_ACTIONS
        else:
            row.update(decision=None, rule="no such account on this system", exempt=False, enforced=False)
        locked_until = record.locked_until if record is not None else 0
        locked = locked_until > now
        row["locked"] = locked
        row["locked_until"] = _iso(locked_until) if locked else None
        row["failures"] = len([t for t in record.failures if t > now - loaded.failure_window]) if record else 0
        row["recovery_codes_left"] = len(record.recovery_hashes) if record and record.enrolled else 0
        row["last_success"] = (
            {"at": _iso(record.last_success_at), "rhost": record.last_success_rhost or None}
            if record and record.last_success_at
            else None
        )
        row["email"] = record.email if record and record.email else None
        row["trusted"] = _trusted_rows(loaded, record, now)
        rows.append(row)
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    loaded, store = _context(args)
    if args.user is not None:
        _known(store, args.user)
    rows = status_rows(loaded, store, args.user)
    if args.json:
        print(json.dumps({"version": 1, "policy": loaded.path, "users": rows}, indent=2))
        return 0
    table: list[tuple[str, ...]] = [("USER", "ENROLLED", "POLICY", "LOCKED", "RECOVERY", "LAST SUCCESS")]
    for row in rows:
        policy_text = "exempt" if row["exempt"] else ("enforced" if row["enforced"] else "optional")
        if row["decision"] is None:
            policy_text = "no account"
        last = row["last_success"]
        table.append(
            (
                row["user"],
                row["enrolled_at"][:10] if row["enrolled"] else "no",
                policy_text,
                ("until " + row["locked_until"]) if row["locked"] else "no",
                str(row["recovery_codes_left"]) if row["enrolled"] else "-",
                f"{last['at']} from {last['rhost'] or '?'}" if last else "never",
            )
        )
    if loaded.trust_seconds:
        # The count in the table, each address on a line below it (there may be up to 16).
        table = [table[0] + ("TRUSTED",)] + [
            r + (str(len(row["trusted"])) if row["trusted"] else "no",) for r, row in zip(table[1:], rows)
        ]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip())
    for row in rows:
        for entry in row["trusted"]:
            print(f"{row['user']}: trusted client {entry['address']} until {entry['until']}")
    if args.user is not None:
        print(f"rule: {rows[0]['rule']}")
    return 0


def cmd_email(args: argparse.Namespace) -> int:
    loaded, store = _context(args)
    account, _record = _known(store, args.user)
    if account is None:
        raise UsageError(f"unknown user {args.user!r}")
    if not valid_address(args.address):
        raise UsageError(f"not a valid email address: {args.address!r} (expected name@domain)")

    def set_address(current: Record | None) -> Record:
        new = current.copy() if current is not None else Record(account.name)
        new.email = args.address
        return new

    store.update(account.name, set_address)
    _audit("email", args.user)
    print(f"{args.user}: emailed codes go to {args.address}")
    return 0


# -- invite ---------------------------------------------------------------------------------

# What a login of an enforced user who has not enrolled gets (docs/policy.md step 3).
ENFORCED_ACTIONS = (EMAIL, DENY, ENROLL)
INVITE_INTERVAL = 86400  # a user is mailed at most once a day, unless --force


def invite_candidates(loaded: Policy, store: Store) -> tuple[list[str], list[str]]:
    """(names to check, problems) for ``invite --unenrolled``: who the policy may enforce on this host.

    ``groups``: the members of each enforce group, supplementary (the group's member list) and primary
    (accounts whose primary group it is). ``all``: the user database's human accounts (a uid within
    login.defs' UID_MIN..UID_MAX, a login shell that is not nologin or false) and every user with a record.
    Only what NSS enumerates is found: directory users (SSSD, LDAP) are listed when enumeration is on,
    or once they have a record, or when named on the command line.
    """

    names: set[str] = set()
    problems: list[str] = []
    if loaded.mode == "groups":
        names.update(accounts.group_members(loaded.enforce_groups, primary=True))
        problems += [
            f"enforce.groups: group {name!r} does not resolve on this system: its members cannot be listed"
            " (twofa-admin check)"
            for name, gid in accounts.group_ids(loaded.enforce_groups).items()
            if gid is None
        ]
    elif loaded.mode == "all":
        names.update(account.name for account in accounts.login_accounts(root=False))
        names.update(store.users())
    return sorted(names), problems


def _age(seconds: float) -> str:
    hours = int(seconds // 3600)
    return f"{hours} h" if hours else f"{int(seconds // 60)} min"


def _invited(user: str, sent_at: int) -> Callable[[Record | None], Record]:
    """The store change that records an invitation mailed at ``sent_at`` (under the user's lock)."""

    def mark(current: Record | None) -> Record:
        new = current if current is not None else Record(user)
        new.invited_at = max(new.invited_at, sent_at)
        return new

    return mark


def cmd_invite(args: argparse.Namespace) -> int:
    import socket

    if args.users and args.unenrolled:
        raise UsageError("name the users to invite or pass --unenrolled, not both")
    if not args.users and not args.unenrolled:
        raise UsageError("name the users to invite, or pass --unenrolled for every enforced user who has not enrolled")
    loaded, store = _context(args)
    problems = 0  # users the admin must look at: exit 1
    found: dict[str, accounts.Account] = {}
    if args.users:
        # Every name is checked before anything is sent: a typo must not leave half the list mailed.
        unknown = []
        for name in args.users:
            if not storable_name(name):
                raise UsageError(f"invalid user name {name!r} (empty, control characters, or too long)")
            account = accounts.lookup(name)
            if account is None:
                unknown.append(name)
            else:
                found.setdefault(account.name, account)
        if unknown:
            raise UsageError(
                f"unknown user{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: no such account;"
                " nothing was sent"
            )
    else:
        if loaded.mode == "off":
            print("enforce.mode is off: nobody is enforced, so nobody is invited")
            return 0
        names, notes = invite_candidates(loaded, store)
        for note in notes:
            print(f"twofa-admin: {note}", file=sys.stderr)
        problems += len(notes)
        for name in names:
            account = accounts.lookup(name)  # the account's own spelling, as in the store (None: no account)
            if account is not None:
                found.setdefault(account.name, account)

    hostname = socket.gethostname()
    now = time.time()
    mailed = skipped = failed = 0
    if args.dry_run:
        print("dry run: nothing is sent or written")
    for account in found.values():
        user = account.name
        shown = log.clean_text(user, 128)
        try:
            record = store.load(user)
        except CorruptedRecord as exc:
            print(f"{shown}: skipped: {exc}", file=sys.stderr)
            problems += 1
            continue
        decision = decide(loaded, accounts.facts(loaded, account, record, None))
        if decision.action == ERROR:
            print(f"{shown}: skipped: {decision.rule}", file=sys.stderr)
            problems += 1
            continue
        if decision.action not in ENFORCED_ACTIONS:
            if args.users:  # a name the admin gave: say why it is not invited; --unenrolled lists only invitees
                why = "already enrolled" if record is not None and record.enrolled else "not enforced"
                print(f"{shown}: skipped: {why} ({decision.rule})")
                problems += 1
            continue
        address = loaded.mail_address(user, hostname, record.email if record is not None else "")
        if not valid_address(address):
            print(
                f"{shown}: {log.clean_text(repr(address), 300)}: skipped: no valid address;"
                f" set one with: twofa-admin email {shell_word(user)} ADDRESS"
            )
            problems += 1
            continue
        invited_at = record.invited_at if record is not None else 0
        if not args.force and invited_at and now - invited_at < INVITE_INTERVAL:
            # (a time ahead of the clock, after the clock went back, counts as just now)
            print(f"{shown}: {address}: skipped: invited {_age(max(now - invited_at, 0))} ago; --force to mail again")
            skipped += 1
            continue
        if args.dry_run:
            print(f"{shown}: {address}: would mail")
            mailed += 1
            continue
        message = mail.build_invitation(loaded, user, address, loaded.unenrolled, now, hostname)
        try:
            mail.send(loaded, message)
        except mail.MailError as exc:
            print(f"{shown}: {address}: mail failed: {exc}; not marked as invited", file=sys.stderr)
            failed += 1
            continue

        _audit(f"invite (mailed {mail.mask(address)})", user)
        try:
            store.update(user, _invited(user, int(now)))
        except StoreError as exc:
            print(f"{shown}: {address}: mailed, but not marked as invited: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{shown}: {address}: mailed")
        mailed += 1
    if args.dry_run:
        print(f"dry run: {mailed} would be mailed, {skipped} skipped (invited within a day)")
    else:
        print(f"{mailed} mailed, {skipped} skipped (invited within a day), {failed} failed")
    return 1 if problems or failed else 0


def cmd_pam_config(args: argparse.Namespace) -> int:
    print(render(args.stack, args.policy), end="")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from pam_twofa.cli import db  # psycopg and cryptography: only for the db commands (see its docstring)

    return db.run(args)


def invoker() -> str:
    """Who is running this, for audit lines: the login user behind sudo/su if known."""

    try:
        with open("/proc/self/loginuid", encoding="ascii") as handle:
            uid = int(handle.read().strip())
        if uid != 4294967295:
            return pwd.getpwuid(uid).pw_name
    except (OSError, ValueError, KeyError):
        pass
    return os.environ.get("SUDO_USER") or "root"


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": cmd_check,
    "disable": cmd_disable,
    "status": cmd_status,
    "unlock": cmd_unlock,
    "explain": cmd_explain,
    "email": cmd_email,
    "invite": cmd_invite,
    "pam-config": cmd_pam_config,
    "db": cmd_db,
}


def main(argv: Sequence[str]) -> int:
    # Root only, before anything is read; --help and --version still work for everyone.
    if os.geteuid() != 0 and not any(a in ("-h", "--help", "--version") for a in argv):
        raise UsageError("must be run as root (try: sudo twofa-admin ...)")
    args = parser().parse_args(argv)
    if getattr(args, "user", None):
        # The account's own spelling: with a case-insensitive directory (SSSD, winbind) every
        # spelling of a name must reach the one record the login path uses.

        account = accounts.lookup(args.user)
        if account is not None:
            args.user = account.name
    return COMMANDS[args.command](args)


def entry() -> NoReturn:
    raise SystemExit(run(main))
