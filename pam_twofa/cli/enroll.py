"""twofa-enroll: turn on two-factor authentication for an account (docs/enrollment.md, docs/threat-model.md).

Also a user's self-service for their own 2FA: new recovery codes, turning it off where the policy does
not require it (``--disable``), and forgetting trusted clients (``--forget-trusted``).

Two ways in:

* ``twofa-enroll`` run by a user: it re-runs itself through sudo as
  ``/usr/libexec/pam-twofa/enroll-self`` (the package's sudoers rule
  lets every user run exactly that, without a password). That entry acts
  only for the account sudo reports in ``SUDO_UID`` and refuses every
  root-only option, so one user can never touch another's 2FA.
* ``twofa-enroll`` run by root: the admin tool (``--user``, ``--secret``,
  ``--code``, ``--import-google-authenticator``, ``--policy``).

Nothing is stored until the user has typed a code that verifies: Ctrl-C, a
closed terminal or a prompt left unanswered for PROMPT_TIMEOUT seconds leaves
the previous state as it was. The new secret is stored under the user's lock,
and only if the enrollment is still the one the session started from: a
session parked at a prompt cannot replace a secret someone enrolled meanwhile
(issue 24).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import getpass
import hmac
import os
import pwd
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

import pam

from pam_twofa import __version__, policy
from pam_twofa.cli import Parser, UsageError, run
from pam_twofa.cli.backends import store_for
from pam_twofa.core import auth, recovery, totp
from pam_twofa.core.decision import requirement
from pam_twofa.core.provisioning import provisioning_uri, setup_lines
from pam_twofa.core.record import Record
from pam_twofa.login.flow import Options
from pam_twofa.policy import DEFAULT_PATH, Policy
from pam_twofa.store import Store, shell_word
from pam_twofa.system import accounts, googleauth, log, mail, pamd, qr

SELF_SERVICE = "/usr/libexec/pam-twofa/enroll-self"  # shipped by the Debian package (debian/)
PAM_SERVICE = "twofa-enroll"  # falls back to /etc/pam.d/other (common-auth) unless an admin creates it
CODE_TRIES = 3
PASSWORD_TRIES = 3
PROMPT_TIMEOUT = 120  # seconds each prompt waits for an answer (docs/enrollment.md)

EPILOG = f"""exit codes:
  0 done: enrolled, new recovery codes made, 2FA turned off, trusted clients forgotten (or none to forget)
  1 refused (the policy requires 2FA, not enrolled, changed meanwhile, locked), wrong password or code,
    no answer in {PROMPT_TIMEOUT} s, usage
  2 policy invalid   3 store unreadable   4 unexpected error (nothing changed)   130 interrupted (nothing changed)

examples:
  twofa-enroll                          # enroll yourself: password, QR code, code from the app
  twofa-enroll --qr ansi                # if the QR code looks broken in your terminal
  twofa-enroll --recovery-codes         # new recovery codes (the old ones stop working)
  twofa-enroll --disable                # turn your 2FA off, if the policy does not require it: password + code
  twofa-enroll --forget-trusted         # logins from trusted client addresses ask for a code again: password
  twofa-enroll --user alice             # root: enroll alice (no password asked)
  twofa-enroll --user alice --secret JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP --code 123456
  twofa-enroll --user alice --import-google-authenticator /home/alice/.google_authenticator
  twofa-enroll --user alice --forget-trusted   # root: forget alice's trusted clients
  twofa-admin disable alice             # root turns 2FA off with twofa-admin (lost phone), not twofa-enroll
"""

ROOT_ONLY = ("user", "secret", "code", "import_google_authenticator", "policy", "issuer", "force")
# Options that only make sense when a secret is set up: refused with --disable and --forget-trusted.
ENROLL_ONLY = ("secret", "code", "import_google_authenticator", "issuer", "force", "qr")


def parser() -> Parser:
    p = Parser(
        prog="twofa-enroll",
        description="Turn on two-factor authentication (TOTP) for your account, or (root) for another.\n"
        "For your own account also: new recovery codes, turning 2FA off where the policy allows it,\n"
        "forgetting trusted client addresses.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--qr",
        choices=("utf8", "ansi", "none"),
        default=None,
        help="how to draw the QR code: utf8 half blocks (default), ansi colour blocks, or none; "
        "given explicitly, the QR code, URI and key are printed even with --secret or an import",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--recovery-codes", action="store_true", help="make a new set of recovery codes (voids the old set)"
    )
    mode.add_argument(
        "--disable",
        action="store_true",
        help="turn your own 2FA off (secret, recovery codes, trusted clients), only if the policy does not "
        "require it for you; asks for your password and a current code (root: use twofa-admin disable USER)",
    )
    mode.add_argument(
        "--forget-trusted",
        action="store_true",
        help="forget the trusted client addresses (trust.seconds): the next login from each asks for a code; "
        "asks for your password only (root: with --user NAME, none)",
    )
    p.add_argument(
        "--user",
        help="root: the account to enroll, or to act on with --recovery-codes or --forget-trusted (no password)",
    )
    p.add_argument("--secret", metavar="BASE32", help="root: use this secret instead of a new one")
    p.add_argument("--code", metavar="CODE", help="root: the verification code, without a prompt")
    p.add_argument(
        "--import-google-authenticator",
        metavar="PATH",
        help="root: take the secret and scratch codes of a ~/.google_authenticator file",
    )
    p.add_argument("--issuer", help="root: the issuer shown in the app (default: totp.issuer of the policy)")
    p.add_argument("--force", action="store_true", help="root: replace an existing enrollment without asking")
    p.add_argument("--policy", metavar="PATH", help=f"root: policy file (default {DEFAULT_PATH})")
    return p


class PromptTimeout(UsageError):
    """Nobody answered a prompt within PROMPT_TIMEOUT seconds; nothing was stored."""


def timed(read: Callable[[str], str]) -> Callable[[str], str]:
    """``read`` (input, getpass) that gives up after PROMPT_TIMEOUT seconds with PromptTimeout.

    A session must not wait at a prompt for ever: one parked there would act much later, on a
    state its user no longer sees (issue 24). SIGALRM interrupts the blocked read; getpass restores
    the terminal's echo on the way out, and Ctrl-C still raises KeyboardInterrupt. The previous
    handler and alarm are put back, whatever happens.
    """

    def ask(prompt: str) -> str:
        seconds = PROMPT_TIMEOUT

        def expired(_signum: int, _frame: object) -> None:
            print(file=sys.stderr)  # the error then starts on a line of its own, not after the prompt
            raise PromptTimeout(
                f"no answer within {seconds} s; nothing was changed. Run twofa-enroll again when you are ready."
            )

        previous = signal.signal(signal.SIGALRM, expired)
        signal.alarm(seconds)
        try:
            return read(prompt)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return ask


class Session:
    """Who is enrolling whom, and how to talk to them (every prompt with a timeout, see ``timed``)."""

    def __init__(
        self,
        args: argparse.Namespace,
        account: accounts.Account,
        admin: bool,
        out: Callable[..., None] | None = None,
        ask: Callable[[str], str] | None = None,
        ask_secret: Callable[[str], str] | None = None,
    ) -> None:
        self.args = args
        self.account = account
        self.admin = admin
        self.out = out or (lambda text="": print(text, flush=True))
        self.ask = ask or timed(input)
        self.ask_secret = ask_secret or timed(_getpass)

    def now(self) -> float:
        return time.time()


def require_terminal() -> None:
    """Self-service asks for the password and codes at prompts: without a terminal, say so in one
    line (getpass would print a warning and read the password from a pipe)."""
    if not sys.stdin.isatty():
        raise UsageError(
            "needs a terminal to ask for your password and codes: run it in an interactive session "
            "(for example: ssh -t HOST twofa-enroll); nothing was changed"
        )


def _getpass(prompt: str) -> str:
    return getpass.getpass(prompt)


def decode_secret(text: str) -> bytes:
    cleaned = "".join(text.split()).replace("-", "").upper().rstrip("=")
    if not cleaned or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in cleaned):
        raise UsageError("--secret must be base32 (letters A-Z and digits 2-7)")
    try:
        key = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except ValueError:
        raise UsageError("--secret is not valid base32") from None
    if len(key) < 10:
        raise UsageError("--secret is too short: at least 80 bits (16 base32 characters)")
    return key


def confirm_password(session: Session) -> None:
    """The user's Unix password, checked through PAM (python-pam); UsageError after a few tries."""

    checker = pam.pam()
    for attempt in range(PASSWORD_TRIES):
        password = session.ask_secret(f"Password for {session.account.name}: ")
        if checker.authenticate(session.account.name, password, service=PAM_SERVICE):
            return
        time.sleep(2)  # slows down guessing from an unattended terminal
        if attempt < PASSWORD_TRIES - 1:
            session.out("Wrong password, try again.")
    _log(session.account.name, "refused: wrong password")
    raise UsageError("wrong password; nothing was changed")


def _log(user: str, result: str, detail: str = "", priority: int | None = None) -> None:
    text = f"twofa-enroll: user={log.clean(user)} result={result}"
    if detail:
        text += f" ({log.clean_text(detail)})"
    log.emit(log.NOTICE if priority is None else priority, text)


def origin() -> str:
    """Where a change comes from, as far as this process can tell, for the syslog line and the mail.

    ``login`` is the kernel's audit login uid: pam_loginuid sets it at login and su and sudo keep it, and
    a user cannot change it, so after ``su victim`` it still names the attacker's own login. ``uid`` is
    who ran twofa-enroll (sudo sets ``SUDO_UID`` itself for the self-service helper). The SSH client is
    known only when the environment still holds ``SSH_CONNECTION``: sudo's env_reset drops it, so the
    self-service helper never sees it (root's own sessions do). Nothing here is a secret.
    """

    def name(uid: int) -> str:
        try:
            return f"{log.clean(pwd.getpwuid(uid).pw_name, 64)} (uid {uid})"
        except (KeyError, OverflowError):
            return f"uid {uid}"

    parts = []
    try:
        with open("/proc/self/loginuid", encoding="ascii") as handle:
            login_uid = int(handle.read().strip())
        if login_uid != 4294967295:
            parts.append(f"login {name(login_uid)}")
    except (OSError, ValueError):
        pass
    sudo_uid = os.environ.get("SUDO_UID", "")
    parts.append(f"run by {name(int(sudo_uid) if sudo_uid.isdigit() else os.getuid())}")
    try:
        parts.append(f"terminal {log.clean(os.ttyname(0), 64)}")
    except OSError:
        parts.append("no terminal")
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    if len(ssh) >= 2:
        parts.append(f"ssh client {log.clean(ssh[0], 64)} port {log.clean(ssh[1], 8)}")
    return ", ".join(parts)


def announce(user: str, what: str) -> str:
    """The syslog line of a stored change (NOTICE, authpriv); returns where it came from."""
    where = origin()
    _log(user, what, f"from {where}")
    return where


def notify(session: Session, loaded: Policy, what: str, where: str, address: str, removed: bool = False) -> None:
    """Mail the user about a stored change to their 2FA, when an address is known.

    A mail that cannot be sent is logged and never undoes the change.
    """

    user = session.account.name
    hostname = socket.gethostname()
    address = loaded.mail_address(user, hostname, address)
    if not mail.valid_address(address):
        _log(user, "notification not mailed", "no valid address: set one with twofa-admin email", log.WARNING)
        return
    message = mail.build_change_notice(loaded, user, address, what, where, session.now(), hostname, removed)
    try:
        mail.send(loaded, message)
    except mail.MailError as exc:
        _log(user, "notification mail failed", str(exc), log.WARNING)
        return
    _log(user, "notification mailed", f"to {mail.mask(address)}", log.INFO)


def _verify(loaded: Policy, key: bytes, typed: str, now: float, digits: int, period: int, algorithm: str) -> int | None:
    code = auth.normalize_code(typed)
    if not code.isdigit():
        return None
    return totp.match_step(key, code, now, digits, period, loaded.totp_window, algorithm)


def read_verified_code(session: Session, loaded: Policy, key: bytes, digits: int, period: int, algorithm: str) -> int:
    """The time step of a code the user typed that verifies; UsageError after CODE_TRIES."""
    if session.args.code is not None:
        step = _verify(loaded, key, session.args.code, session.now(), digits, period, algorithm)
        if step is None:
            raise UsageError("the code does not match the secret; nothing was stored (check the device clock)")
        return step
    for attempt in range(CODE_TRIES):
        typed = session.ask(f"Code from the app ({digits} digits): ")
        step = _verify(loaded, key, typed, session.now(), digits, period, algorithm)
        if step is not None:
            return step
        if attempt < CODE_TRIES - 1:
            session.out(
                "That code does not match. Check that the phone's clock is right, wait for the next code and try again."
            )
    _log(session.account.name, "refused: no valid verification code")
    raise UsageError("no valid code after 3 tries; nothing was stored. Run twofa-enroll again to start over.")


CURRENT_PROMPT = "Current code from your app, or a recovery code: "


def lost_phone(user: str) -> str:
    return f"Lost your phone? Ask an administrator to turn 2FA off for you (twofa-admin disable {shell_word(user)})."


def confirm_current_code(session: Session, loaded: Policy, store: Store, what: str) -> Record:
    """For an account that is enrolled: a code of the current secret, or a recovery code, typed now.

    The password alone must never change a second factor (su lets anyone who knows it become the
    user). Each try goes through the login's own check (``auth.attempt``) under the user's lock and is
    saved: a wrong code counts toward the lockout, a locked account cannot try, a used code cannot be
    used again, and the accepted code is used up. Returns the record as saved; UsageError otherwise.
    """

    user = session.account.name
    limits = loaded.limits()
    session.out(f"To {what}, type a code from the authenticator app you use now, or one of your recovery codes.")
    session.out(lost_phone(user))
    for attempt in range(CODE_TRIES):
        record = store.load(user)
        if record is not None and auth.is_locked(record, session.now()):
            # Asked again before every try, so a lockout reached meanwhile (by logins) is told at once.
            _log(user, "refused: locked", f"until {int(record.locked_until)}; no code asked", log.WARNING)
            raise UsageError(_locked_message(user, record.locked_until))
        typed = session.ask(CURRENT_PROMPT)
        with store.locked(user) as section:
            record = section.record
            if record is None or not record.enrolled:
                raise UsageError(f"2FA was turned off for {user} meanwhile; nothing changed")
            outcome = auth.attempt(record, typed, session.now(), limits)
            if outcome.record != record:
                section.save(outcome.record)
        if outcome.ok:
            _log(user, f"current code accepted: {outcome.result}", f"to {what}", log.INFO)
            return outcome.record
        if outcome.result == auth.LOCKED or outcome.newly_locked:
            until = outcome.record.locked_until
            _log(user, f"refused: {outcome.result}, now locked", f"until {int(until)}; to {what}", log.WARNING)
            raise UsageError(_locked_message(user, until))
        _log(
            user,
            f"refused: {outcome.result}",
            f"failure {len(outcome.record.failures)} of {limits.max_failures}; to {what}",
        )
        if attempt < CODE_TRIES - 1:
            if outcome.result == auth.REPLAYED:
                session.out("That code was already used. Wait for the next code from your app.")
            else:
                session.out("Wrong code. Each wrong code counts toward locking the account.")
    raise UsageError(
        f"no valid current code after {CODE_TRIES} tries; nothing was changed. "
        f"Lost your phone? Ask an administrator to run: twofa-admin disable {shell_word(user)}"
    )


def _locked_message(user: str, until: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(until))
    return (
        f"2FA for {user} is locked until {when} (UTC) after too many wrong codes; nothing was changed. "
        f"An administrator can unlock it with: twofa-admin unlock {shell_word(user)}"
    )


def show_recovery_codes(session: Session, codes: Sequence[str]) -> None:
    session.out("")
    session.out("Recovery codes: each works once at the code prompt if you lose your phone.")
    session.out("Keep them somewhere safe; they are not shown again.")
    for first, second in zip(codes[0::2], codes[1::2]):
        session.out(f"    {first}    {second}")


def enroll(session: Session, loaded: Policy, store: Store) -> int:
    args, user = session.args, session.account.name
    old = store.load(user)
    if old is not None and old.enrolled and not args.force:
        if not sys.stdin.isatty() and args.code is not None:
            raise UsageError(f"{user} is already enrolled; pass --force to replace the secret")
        answer = session.ask(f"2FA is already on for {user}. Replace the secret (the old one stops working)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            session.out("Nothing changed.")
            return 1
    proved = None
    if old is not None and old.enrolled and not session.admin:
        proved = confirm_current_code(session, loaded, store, "replace the secret")
    digits, period, algorithm = loaded.totp_digits, loaded.totp_period, loaded.totp_algorithm
    scratch = []
    if args.import_google_authenticator:
        imported = import_google_authenticator(session, args.import_google_authenticator)
        key, scratch, period, digits, algorithm = imported.key, imported.scratch_codes, imported.period, 6, "SHA1"
    elif args.secret:
        key = decode_secret(args.secret)
    else:
        key = os.urandom(20)  # 160 bits, as RFC 4226 recommends
    # A known secret is not shown unless asked for: an admin printing the QR code for
    # someone passes --qr explicitly.
    if args.qr is not None or not (args.secret or args.import_google_authenticator):
        hostname = socket.gethostname()
        issuer = (args.issuer or loaded.totp_issuer).format(hostname=hostname)
        uri = provisioning_uri(key, user, hostname, issuer, digits, period, algorithm)
        show_secret(session, uri, key)
    step = read_verified_code(session, loaded, key, digits, period, algorithm)
    codes, salt, hashes = recovery.new_codes()
    if scratch:
        # Imported scratch codes keep working as recovery codes, beside the new ones.
        hashes = hashes + recovery.hashes_for(scratch, salt)

    # The enrollment this session started from: what it checked (a current code, or that there was
    # nothing to check). The user may have sat at a prompt for minutes; under the lock, the store
    # must still hold that enrollment, or this session acts on a state it never saw (issue 24).
    start = proved if proved is not None else old
    try:
        with store.locked(user) as section:
            current = section.record
            change = enrollment_change(start, current)
            if change and not (session.admin and args.force):
                raise Changed(change)  # leaves the section: nothing is stored
            if proved is not None and current is not None and current.locked_until:
                # Locked since the current code was accepted: start over.
                raise UsageError(f"2FA for {user} changed meanwhile; nothing was stored. Run twofa-enroll again.")
            stored = Record(
                user,
                key=key,
                algorithm=algorithm,
                digits=digits,
                period=period,
                enrolled_at=int(session.now()),
                recovery_salt=salt,
                recovery_hashes=hashes,
                last_step=step,  # the code just typed counts as used
                email=current.email if current is not None else "",
            )
            section.save(stored)
    except Changed as exc:
        refuse_changed(user, str(exc))  # logged and told after the lock is released
    # What really happened, as read under the lock (root's --force may replace what it never saw).
    replaced = current is not None and current.enrolled
    what = "enrolled" + (" (imported from google-authenticator)" if scratch or args.import_google_authenticator else "")
    if replaced:
        what += ", replacing the previous secret"
    where = announce(user, what)
    session.out("")
    session.out(f"Two-factor authentication is now on for {user}.")
    if replaced:
        session.out("The previous secret no longer works.")
    if scratch:
        session.out(f"Your {len(scratch)} google-authenticator scratch codes keep working as recovery codes.")
    show_recovery_codes(session, codes)
    notify(session, loaded, what, where, stored.email if stored is not None else "")
    return 0


class Changed(Exception):
    """The enrollment is no longer the one the session started from (``enrollment_change``)."""


def enrollment_change(start: Record | None, now: Record | None) -> str:
    """How the enrollment ``now`` (read under the lock) differs from ``start`` (what the session
    began from): "" when it is the same; else what happened, for the message and the syslog line.

    Only the enrollment counts (secret, its parameters, when it was made): logins change failures,
    replay memory, trusted clients and pending mails all the time, and must not stop an enrollment.
    """

    was = start is not None and start.enrolled
    if now is None or not now.enrolled:
        return "2FA turned off meanwhile" if was else ""
    if start is None or not was:
        return "enrolled meanwhile"
    if not hmac.compare_digest(now.key, start.key):
        return "secret replaced meanwhile"
    made = [(r.enrolled_at, r.algorithm, r.digits, r.period) for r in (now, start)]
    return "" if made[0] == made[1] else "secret replaced meanwhile"  # re-enrolled, even with the same secret


LOCKED_MEANWHILE = "locked meanwhile"  # a change ``enrollment_change`` does not see: only --disable checks it


def refuse_changed(user: str, change: str, command: str = "twofa-enroll") -> NoReturn:
    """The enrollment changed while this session was open: store nothing, log it, say why."""
    _log(user, f"refused: {change}", f"while this session was open; nothing stored; from {origin()}", log.WARNING)
    if change == "enrolled meanwhile":
        why = f"someone enrolled {user} while this session was open"
    elif change == "secret replaced meanwhile":
        why = f"the 2FA secret of {user} was replaced while this session was open"
    elif change == LOCKED_MEANWHILE:
        why = f"2FA for {user} was locked after too many wrong codes while this session was open"
    else:
        why = f"2FA for {user} was turned off while this session was open"
    raise UsageError(f"{why}; nothing was stored: start {command} again")


def show_secret(session: Session, uri: str, key: bytes) -> None:
    for line in setup_lines(uri, key, qr.render(uri, session.args.qr or "utf8")):
        session.out(line)
    session.out("")


def import_google_authenticator(session: Session, path: str) -> googleauth.GoogleAuthenticatorFile:
    account = session.account
    groups = sorted(account.gids)
    try:
        text = googleauth.read_as_user(path, account.uid, account.gid, groups)
        return googleauth.parse(text)
    except googleauth.GoogleAuthenticatorError as exc:
        raise UsageError(f"cannot import {path}: {exc}") from None


def new_recovery_codes(session: Session, loaded: Policy, store: Store) -> int:
    user = session.account.name
    record = store.load(user)
    if record is None or not record.enrolled:
        raise UsageError(f"2FA is not on for {user}: run twofa-enroll first")
    proved = None if session.admin else confirm_current_code(session, loaded, store, "make new recovery codes")
    codes, salt, hashes = recovery.new_codes()

    def replace(current: Record | None) -> Record:
        if current is None or not current.enrolled:
            raise UsageError(f"2FA was turned off for {user} meanwhile; nothing changed")
        if proved is not None and (current.key != proved.key or current.locked_until):
            raise UsageError(f"2FA for {user} changed meanwhile; nothing changed. Run twofa-enroll again.")
        current = current.copy()
        current.recovery_salt, current.recovery_hashes = salt, hashes
        return current

    stored = store.update(user, replace)
    where = announce(user, "new recovery codes")
    session.out("New recovery codes made; the old ones no longer work.")
    show_recovery_codes(session, codes)
    notify(session, loaded, "new recovery codes", where, stored.email if stored is not None else "")
    return 0


DISABLED = "2FA turned off by the user"  # the syslog result and the line of the mail


def disable(session: Session, loaded: Policy, store: Store) -> int:
    """``--disable``: a user turns their own 2FA off, where the policy does not require it.

    The password (asked by ``run_self_service``) is not enough: it would let anyone who knows it (su)
    remove the second factor, so a current code is asked too, checked like a login. The wipe is made
    in one section, only if the enrollment is still the one that code proved and the account was not
    locked since; it removes what ``twofa-admin disable`` removes (trusted clients included).
    """

    user = session.account.name
    # Read as not enrolled and from no address: what would the policy ask of this user without it?
    required = requirement(loaded, accounts.facts(loaded, session.account, None, None, session.now()))
    if required is not None:
        _log(user, "refused: turning 2FA off, the policy requires it", required.rule, log.WARNING)
        # The rule up to its ";": what requires it (the rest tells what an unenrolled login would get).
        rule = required.rule.split(";", 1)[0]
        raise UsageError(
            f"the policy requires 2FA for {user} ({rule}), so it cannot be turned off; nothing was changed. "
            f"Lost your phone? An administrator can turn it off: twofa-admin disable {shell_word(user)}"
        )
    record = store.load(user)
    if record is None or not record.enrolled:
        raise UsageError(f"2FA is not on for {user}: nothing to turn off")
    proved = confirm_current_code(session, loaded, store, "turn 2FA off")
    before: list[Record] = []

    def wipe(current: Record | None) -> Record | None:
        change = enrollment_change(proved, current)
        if not change and current is not None and current.locked_until:
            change = LOCKED_MEANWHILE  # wrong codes since the current code was accepted
        if change or current is None:  # (None is a change: "2FA turned off meanwhile")
            raise Changed(change)  # leaves the section: nothing is stored
        before.append(current)
        # As twofa-admin disable: keep only the admin-recorded address (an enforced user's emailed
        # codes still go there, if the policy later requires 2FA); the store tombstones the rest.
        return Record(current.user, email=current.email) if current.email else None

    try:
        store.update(user, wipe)
    except Changed as exc:
        refuse_changed(user, str(exc), "twofa-enroll --disable")  # logged and told after the lock is released
    where = announce(user, DISABLED)
    session.out("")
    session.out(
        f"Two-factor authentication is now off for {user}: the secret, the recovery codes and the trusted "
        "clients are removed, and logins no longer ask for a code."
    )
    session.out("To turn it on again, run: twofa-enroll")
    notify(session, loaded, DISABLED, where, before[0].email, removed=True)
    return 0


def forget_trusted(session: Session, loaded: Policy, store: Store) -> int:
    """``--forget-trusted``: clear the trusted client addresses (trust.seconds), under the user's lock.

    It only takes access away (the next login from each address is asked for a code again), so the
    password is enough, and no current code is asked: someone who lost the phone can still do it.
    Only addresses whose trust has not run out count; expired ones are left for logins to drop.
    """

    user = session.account.name
    now = session.now()
    forgotten: list[str] = []

    def forget(current: Record | None) -> Record | None:
        forgotten[:] = []
        if current is None:
            return None
        forgotten.extend(address for address, until in current.trusted.items() if until > now)
        if forgotten:
            current.trusted = {}
        return current

    stored = store.update(user, forget)
    if not forgotten:
        session.out("No trusted clients; nothing changed.")
        return 0
    what = f"forgot {len(forgotten)} trusted client address(es)"
    where = announce(user, what)
    session.out(f"Forgot {len(forgotten)} trusted client address(es): the next login from each asks for a code.")
    notify(session, loaded, what, where, stored.email if stored is not None else "", removed=True)
    return 0


def check_modes(args: argparse.Namespace) -> None:
    """--disable and --forget-trusted set up no secret: refuse the options that do (argparse already
    keeps --recovery-codes, --disable and --forget-trusted apart)."""
    mode = "--disable" if args.disable else "--forget-trusted" if args.forget_trusted else None
    if mode is None:
        return
    used = [name for name in ENROLL_ONLY if getattr(args, name) not in (None, False)]
    if used:
        flags = ", ".join("--" + name.replace("_", "-") for name in used)
        raise UsageError(f"{flags}: not with {mode}, which sets up no secret (see twofa-enroll --help)")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    args = parser().parse_args(argv)
    check_modes(args)
    return args


@contextlib.contextmanager
def logged_timeout(user: str) -> Iterator[None]:
    """A prompt that ran out of time is told to syslog too (the user sees the PromptTimeout)."""
    try:
        yield
    except PromptTimeout:
        _log(user, "gave up: no answer at a prompt", f"within {PROMPT_TIMEOUT} s; nothing stored", log.INFO)
        raise


def _load(policy_path: str) -> tuple[Policy, Store]:
    loaded = policy.load(policy_path)
    return loaded, store_for(loaded)


def run_admin(args: argparse.Namespace) -> int:
    """Root: enroll ``--user`` (default: root itself) without a password."""

    name = args.user or "root"
    if args.disable:
        # Self-service only: root's tool asks no code and ignores the policy, and says so.
        raise UsageError(
            f"--disable turns off your own 2FA; root turns it off with: twofa-admin disable {shell_word(name)}"
        )
    account = accounts.lookup(name)
    if account is None:
        raise UsageError(f"unknown user {name!r}")
    loaded, store = _load(args.policy or DEFAULT_PATH)
    session = Session(args, account, admin=True)
    with logged_timeout(account.name):
        if args.recovery_codes:
            return new_recovery_codes(session, loaded, store)
        if args.forget_trusted:
            return forget_trusted(session, loaded, store)
        return enroll(session, loaded, store)


def sshd_policy() -> str:
    """The policy the pam_twofa line of the installed /etc/pam.d/sshd names, or the default without one.

    Logins read that policy and its store; enrolling into another would say "now on" while nothing
    changed for SSH. Only root-owned files not writable by others are believed (as for the policy), and
    nothing the calling user chooses (no option, no environment variable) changes where it is read.
    """

    sshd = os.path.join(pamd.PAM_DIR, "sshd")
    if not os.path.lexists(sshd):
        return DEFAULT_PATH
    ask = "ask your administrator to run twofa-admin check"
    problems: list[str] = []
    try:
        lines = [entry for entry in pamd.entries("sshd", checked=True, problems=problems) if pamd.is_twofa(entry)]
    except pamd.PamdError as exc:
        raise UsageError(f"{exc}: cannot tell which policy SSH logins use; {ask}", code=2) from None
    if problems:
        raise UsageError(f"{problems[0]}: cannot tell which policy SSH logins use; {ask}", code=2)
    named: dict[str, str] = {}
    for entry in lines:
        options = Options(entry.args[1:])
        if options.bad:
            raise UsageError(f"{entry.where}: {options.problems()[0]}; SSH logins refuse until it is fixed: {ask}", 2)
        named.setdefault(options.policy, entry.where)
    if len(named) > 1:
        where = ", ".join(f"{path} ({place})" for path, place in named.items())
        raise UsageError(f"{sshd} names more than one policy: {where}; nothing was changed: {ask}", code=2)
    return next(iter(named), DEFAULT_PATH)


def run_self_service(args: argparse.Namespace) -> int:
    """A user through sudo: their own account only, password first, no root-only option."""

    used = [name for name in ROOT_ONLY if getattr(args, name) not in (None, False)]
    if used:
        flags = ", ".join("--" + name.replace("_", "-") for name in used)
        raise UsageError(f"{flags}: only root can use this; you can enroll your own account with plain twofa-enroll")
    uid_text = os.environ.get("SUDO_UID", "")
    if os.geteuid() != 0 or not uid_text.isdigit():
        raise UsageError("this helper is run through sudo by twofa-enroll; run twofa-enroll instead")

    try:
        name = pwd.getpwuid(int(uid_text)).pw_name
    except KeyError:
        raise UsageError("your account is not in the user database") from None
    account = accounts.lookup(name)
    if account is None or account.uid == 0:
        raise UsageError("root enrolls with: twofa-enroll --user root")
    loaded, store = _load(sshd_policy())
    session = Session(args, account, admin=False)
    if args.disable:
        doing = "Turning off two-factor authentication"
    elif args.forget_trusted:
        doing = "Forgetting the trusted clients of two-factor authentication"
    else:
        doing = "Setting up two-factor authentication"
    session.out(f"{doing} for {name} on {socket.gethostname()}.")
    require_terminal()
    with logged_timeout(name):
        confirm_password(session)
        if args.recovery_codes:
            return new_recovery_codes(session, loaded, store)
        if args.disable:
            return disable(session, loaded, store)
        if args.forget_trusted:
            return forget_trusted(session, loaded, store)
        return enroll(session, loaded, store)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if os.geteuid() == 0:
        return run_admin(args)
    # A user: the same request through sudo and the installer's rule.
    used = [name for name in ROOT_ONLY if getattr(args, name) not in (None, False)]
    if used:
        flags = ", ".join("--" + name.replace("_", "-") for name in used)
        raise UsageError(f"{flags}: only root can use this; to enroll your own account run plain twofa-enroll")
    if not os.path.exists(SELF_SERVICE):
        raise UsageError(f"{SELF_SERVICE} is missing: ask your administrator to run the pam-twofa installer")
    try:
        os.execvp("sudo", ["sudo", "-n", SELF_SERVICE, *argv])
    except FileNotFoundError:
        raise UsageError("sudo is not installed: ask your administrator to run the pam-twofa installer") from None


def self_service_main(argv: Sequence[str]) -> int:
    return run_self_service(parse(argv))


def entry() -> NoReturn:
    raise SystemExit(run(main))


def self_service_entry() -> NoReturn:
    # Runs as /usr/libexec/pam-twofa/enroll-self; the user typed twofa-enroll.
    raise SystemExit(run(self_service_main, prog="twofa-enroll"))
