"""twofa-admin: the root tool (SPEC §7)."""

from __future__ import annotations

import argparse

from pam_twofa.cli import UsageError, require_root, run
from pam_twofa.policy import DEFAULT_PATH

EPILOG = """exit codes: 0 ok, 1 usage or unknown user, 2 policy invalid, 3 store unreadable

examples:
  twofa-admin check
  twofa-admin unlock alice
  twofa-admin pam-config --stack key
"""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="twofa-admin",
        description="Administer pam-twofa (two-factor authentication for SSH).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--policy", default=DEFAULT_PATH, metavar="PATH", help=f"policy file (default {DEFAULT_PATH})")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate the policy (exit 0, or 2 with one line per error)")
    check.add_argument("--policy", default=argparse.SUPPRESS, metavar="PATH")
    unlock = sub.add_parser("unlock", help="clear the failure counter and lockout of USER")
    unlock.add_argument("user")
    unlock.add_argument("--policy", default=argparse.SUPPRESS, metavar="PATH")
    config = sub.add_parser("pam-config", help="print the /etc/pam.d/sshd and sshd_config lines")
    config.add_argument("--stack", choices=("password", "key"), default="password",
                        help="password+code (default) or SSH key+code")
    config.add_argument("--policy", default=argparse.SUPPRESS, metavar="PATH")
    return top


def cmd_check(args) -> int:
    from pam_twofa import policy

    loaded = policy.load(args.policy, use_cache=False)
    print(f"{args.policy}: OK (enforce.mode: {loaded.mode}, state_dir: {loaded.state_dir})")
    return 0


def cmd_unlock(args) -> int:
    from pam_twofa import accounts, log, policy
    from pam_twofa.store import FileStore

    loaded = policy.load(args.policy)
    store = FileStore(loaded.state_dir)
    if accounts.lookup(args.user) is None and store.load(args.user) is None:
        raise UsageError(f"unknown user {args.user!r}")

    def clear(record):
        if record is None:
            return None
        record = record.copy()
        record.failures = []
        record.locked_until = 0
        return record

    was = store.load(args.user)
    store.update(args.user, clear)
    log.emit(log.NOTICE, f"twofa-admin: unlock user={log.clean(args.user)} by={log.clean(invoker())}")
    if was is None:
        print(f"{args.user} has no 2FA record; nothing to unlock")
    else:
        print(f"{args.user}: unlocked, failure counter cleared")
    return 0


def cmd_pam_config(args) -> int:
    from pam_twofa.pamconfig import render

    print(render(args.stack, args.policy), end="")
    return 0


def invoker() -> str:
    """Who is running this, for audit lines: the login user behind sudo/su if known."""
    import os

    try:
        with open("/proc/self/loginuid", encoding="ascii") as handle:
            uid = int(handle.read().strip())
        if uid != 4294967295:
            import pwd

            return pwd.getpwuid(uid).pw_name
    except (OSError, ValueError, KeyError):
        pass
    return os.environ.get("SUDO_USER") or "root"


def main(argv) -> int:
    args = parser().parse_args(argv)
    if args.command != "pam-config":
        require_root("twofa-admin")
    return {"check": cmd_check, "unlock": cmd_unlock, "pam-config": cmd_pam_config}[args.command](args)


def entry() -> int:
    raise SystemExit(run(main))
