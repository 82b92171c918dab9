"""twofa-enroll: create and activate a user's TOTP secret (SPEC §5).

This version is the root provisioning path (``--user``, ``--secret``,
``--code``); self-service enrollment by unprivileged users builds on it.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import sys
import time

from pam_twofa.cli import Parser, UsageError, require_root, run
from pam_twofa.policy import DEFAULT_PATH

EPILOG = """exit codes: 0 enrolled, 1 usage, refused or wrong code, 2 policy invalid, 3 store unreadable

examples:
  twofa-enroll --user alice                      # shows the secret, asks for a code
  twofa-enroll --user alice --secret JBSWY3DPEHPK3PXP --code 123456
"""


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="twofa-enroll",
        description="Turn on two-factor authentication (TOTP) for an account.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--user", required=True, help="account to enroll (root only)")
    p.add_argument("--secret", metavar="BASE32", help="use this secret instead of a new one")
    p.add_argument("--code", metavar="CODE", help="verification code (otherwise asked)")
    p.add_argument("--force", action="store_true", help="replace an existing enrollment without asking")
    p.add_argument("--policy", default=DEFAULT_PATH, metavar="PATH", help=f"policy file (default {DEFAULT_PATH})")
    return p


def decode_secret(text: str) -> bytes:
    cleaned = "".join(text.split()).replace("-", "").upper()
    if not cleaned or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567=" for c in cleaned):
        raise UsageError("--secret must be base32 (letters A-Z and digits 2-7)")
    try:
        key = base64.b32decode(cleaned.rstrip("=") + "=" * (-len(cleaned.rstrip("=")) % 8))
    except ValueError:
        raise UsageError("--secret is not valid base32") from None
    if len(key) < 10:
        raise UsageError("--secret is too short: at least 80 bits (16 base32 characters)")
    return key


def group4(text: str) -> str:
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def expand(template: str, **values) -> str:
    values.setdefault("hostname", socket.gethostname())
    return template.format(**values)


def main(argv) -> int:
    from pam_twofa import accounts, auth, log, policy, recovery, totp
    from pam_twofa.record import Record
    from pam_twofa.store import FileStore

    args = parser().parse_args(argv)
    require_root("twofa-enroll --user")
    loaded = policy.load(args.policy)
    account = accounts.lookup(args.user)
    if account is None:
        raise UsageError(f"unknown user {args.user!r}")
    store = FileStore(loaded.state_dir)
    old = store.load(account.name)
    if old is not None and old.enrolled and not args.force:
        if not sys.stdin.isatty():
            raise UsageError(f"{account.name} is already enrolled; pass --force to replace the secret")
        answer = input(f"{account.name} is already enrolled. Replace the secret? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise UsageError("nothing changed")
    key = decode_secret(args.secret) if args.secret else os.urandom(20)
    secret_b32 = base64.b32encode(key).decode().rstrip("=")
    digits, period, algorithm = loaded.totp_digits, loaded.totp_period, loaded.totp_algorithm
    if not args.secret:
        issuer = expand(loaded.totp_issuer)
        print(f"Secret for {account.name}: {group4(secret_b32)}")
        print(f"otpauth://totp/{issuer}:{account.name}?secret={secret_b32}&issuer={issuer}")
    code = args.code if args.code is not None else input("Code from the authenticator app: ")
    now = time.time()
    used_step = totp.match_step(key, auth.normalize_code(code), now, digits, period, loaded.totp_window, algorithm)
    if used_step is None:
        log.emit(log.NOTICE, f"twofa-enroll: user={log.clean(account.name)} result=bad verification code")
        raise UsageError("that code does not match the secret; nothing was stored (check the device clock)")
    codes, salt, hashes = recovery.new_codes()

    def activate(previous):
        return Record(
            account.name,
            key=key,
            algorithm=algorithm,
            digits=digits,
            period=period,
            enrolled_at=int(now),
            recovery_salt=salt,
            recovery_hashes=hashes,
            last_step=used_step,  # the verification code counts as used
            email=previous.email if previous is not None else "",
        )

    store.update(account.name, activate)
    log.emit(log.NOTICE, f"twofa-enroll: user={log.clean(account.name)} result=enrolled")
    print(f"2FA is now on for {account.name}.")
    print("Recovery codes (each works once; keep them somewhere safe, they are not shown again):")
    for item in codes:
        print("  " + item)
    return 0


def entry() -> int:
    raise SystemExit(run(main))
