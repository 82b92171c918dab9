"""One login through the PAM module: read, decide, ask, verify, write, log.

The adapter around the pure core (``decision``, ``auth``). The conversation
is an object with ``prompt(text) -> str | None``, ``info(text)`` and
``error(text)``, so the flow can be driven by pam_python or by a unit test.

The user's lock is held only while checking and writing the code, never
while waiting for the user to type or for the mail server, so nobody can
hold an account's lock (or the agent's database connections).
"""

import time

from pam_twofa.policy import DEFAULT_PATH, Policy, PolicyError
from pam_twofa.system import log

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from email.message import EmailMessage
    from typing import Protocol

    from pam_twofa.core.auth import Outcome
    from pam_twofa.core.decision import Decision
    from pam_twofa.core.record import Record
    from pam_twofa.store import Store
    from pam_twofa.system.mail import MailError

    class Conversation(Protocol):
        """What the flow needs of the PAM conversation (login.adapter wraps pam_python's)."""

        def prompt(self, text: str, info: str | None = None, echo: bool = False) -> str | None: ...
        def info(self, text: str) -> None: ...
        def error(self, text: str) -> None: ...


# Results for the PAM adapter.
PASS = "pass"  # the code was right
FAIL = "fail"
IGNORE = "ignore"  # this module does not vouch either way: not asked, exempt, on_error allow

PROMPT = "Verification code: "
MSG_BAD = "Wrong verification code."
MSG_REPLAYED = "That code was already used. Wait for the next code from your authenticator app."
MSG_LOCKED = (
    "Too many wrong codes: 2FA for this account is locked until {until} (UTC). "
    "An administrator can unlock it with: twofa-admin unlock {user}"
)
MSG_ERROR = "Two-factor authentication is not working on this host. Contact your administrator."
MSG_NOT_ENROLLED = (
    "This account must use two-factor authentication but has none set up. "
    "Ask an administrator to enroll you (twofa-enroll), or to exempt this account."
)
MSG_MAIL_FAILED = "Could not send the code. Try again later or contact your administrator."
MSG_MAIL_LIMIT = "Too many codes were emailed to this account. Try again after {until} (UTC)."
MSG_EXPIRED = "That code has expired. Log in again to get a new one."
MSG_ENROLL_HINT = (
    "This account must use two-factor authentication. A one-time code was emailed to you. "
    "To use an authenticator app instead, run twofa-enroll once you are logged in."
)
# Enrollment at login (enforce.unenrolled: enroll, docs/login.md): the mailbox first, then the app.
MSG_SETUP_FIRST = (
    "This account must set up two-factor authentication. First, type the one-time code just emailed to you; "
    "then you will set up your authenticator app."
)
MSG_SETUP_HEAD = "Set up two-factor authentication for {user} on {hostname}."
PROMPT_APP = "Code from the app ({digits} digits): "
MSG_SETUP_WRONG = (
    "That code does not match. Check that the phone sets its clock automatically, wait for the next code and try again."
)
MSG_SETUP_GAVE_UP = "No valid code from the app: nothing was set up. Log in again to start over."
MSG_SETUP_CHANGED = (
    "Two-factor authentication of this account changed during this login: nothing was set up. Log in again."
)
MSG_SETUP_DONE = "Two-factor authentication is now on for {user}: from now on, log in with a code from the app."
MSG_RECOVERY = (
    "Recovery codes: each works once at the code prompt if you lose your phone. "
    "Keep them somewhere safe; they are not shown again."
)
PROMPT_SAVED = "Press Enter when you have saved them: "
SETUP_TRIES = 3


class Options:
    """Module arguments: ``policy=PATH`` and ``on_error=deny|allow`` (used when the policy itself is unusable).

    Anything else, or a malformed value, is collected in ``bad`` as (argument,
    reason): the login then refuses to guess (docs/login.md). Pure and cheap:
    ``twofa-admin check`` parses the lines of /etc/pam.d/sshd with it too.
    """

    __slots__ = ("policy", "on_error", "bad")

    def __init__(self, argv: "Iterable[str]") -> None:
        self.policy = DEFAULT_PATH
        self.on_error = "deny"
        self.bad: list[tuple[str, str]] = []
        seen = set()
        for arg in argv:
            name, sep, value = arg.partition("=")
            if name not in ("policy", "on_error"):
                self.bad.append(
                    (arg, "unknown argument: the module takes policy=/absolute/path and on_error=deny|allow")
                )
            elif not sep:
                self.bad.append((arg, f"no value: write {name}=VALUE, without spaces around '='"))
            elif name in seen:
                self.bad.append((arg, f"{name} is given more than once"))
            elif name == "policy" and not normalized_absolute(value):
                self.bad.append(
                    (arg, "the policy must be a normalized absolute path, such as /etc/pam-twofa/policy.yaml")
                )
            elif name == "on_error" and value not in ("deny", "allow"):
                self.bad.append((arg, "on_error must be deny or allow"))
            elif name == "policy":
                self.policy = value
            else:
                self.on_error = value
            seen.add(name)
        if any(arg.partition("=")[0] == "on_error" for arg, _reason in self.bad):
            self.on_error = "deny"  # an on_error that is not clearly given is deny

    def problems(self) -> list[str]:
        """One ``module argument 'ARG' is not valid: REASON`` per bad argument (cleaned for syslog)."""
        return [f"module argument '{log.clean_text(arg, 100)}' is not valid: {reason}" for arg, reason in self.bad]


def normalized_absolute(path: str) -> bool:
    """``/a/b``: absolute, no empty, ``.`` or ``..`` component, no trailing slash, printable."""
    if not path.startswith("/") or path == "/" or path.endswith("/") or not path.isprintable():
        return False
    return all(part not in ("", ".", "..") for part in path[1:].split("/"))


class Login:
    """The state of one authentication; ``clock`` gives the time (tests pass a fixed one)."""

    def __init__(
        self,
        conversation: "Conversation",
        user: str | None,
        rhost: str | None,
        service: str | None,
        options: Options,
        clock: "Callable[[], float]" = time.time,
    ) -> None:
        self.clock = clock
        self.conv = conversation
        self.user = user
        self.rhost = rhost
        self.service = service or "-"
        self.options = options
        self.on_error = options.on_error

    def now(self) -> float:
        return self.clock()

    def log(self, priority: int, result: str, detail: str = "") -> None:
        log.event(priority, self.service, self.user, self.rhost, result, detail)

    def failed_closed(self, what: str, error: Exception) -> str:
        for message in str(error).splitlines() or [type(error).__name__]:
            self.log(log.ERR, f"error: {what}", message)
        if self.on_error == "allow":
            self.log(log.WARNING, "allowed without a code", "on_error: allow")
            return IGNORE
        self.conv.error(MSG_ERROR)
        return FAIL

    def run(self) -> str:
        if self.options.bad:
            # A mistyped argument must not fall back to the default policy (another state_dir, another mode).
            problems = "; ".join(self.options.problems())
            return self.failed_closed(
                "module arguments",
                ValueError(f"{problems}; fix the pam_twofa line of /etc/pam.d/{log.clean_text(self.service, 32)}"),
            )
        try:
            from pam_twofa import policy as policy_module

            policy = policy_module.load(self.options.policy)
        except PolicyError as exc:
            return self.failed_closed("policy", exc)
        self.on_error = policy.on_error
        from pam_twofa.store import RolledBack, Store, StoreError

        store: Store
        if policy.backend == "postgresql":
            from pam_twofa.store.agent import AgentStore

            # A fixed deadline for every answer: an agent (re)connecting to the database, and one statement.
            store = AgentStore(policy.agent_socket, policy.pg_connect_timeout + policy.pg_statement_timeout + 1)
        else:
            from pam_twofa.store.files import FileStore

            store = FileStore(policy.state_dir)
        try:
            return self._run(policy, store)
        except RolledBack as exc:
            # The database shows an older state than this host has seen (a used code, a lockout or a
            # disabled secret written back, a row deleted): never "allowed without a code".
            for message in str(exc).splitlines() or ["rollback"]:
                self.log(log.ERR, "error: store rollback", message)
            self.conv.error(MSG_ERROR)
            return FAIL
        except StoreError as exc:
            return self.failed_closed("store", exc)
        except OSError as exc:
            return self.failed_closed("system", exc)

    def _run(self, policy: Policy, store: "Store") -> str:
        from pam_twofa.core.decision import DENY, EMAIL, ENROLL, ERROR, SKIP, TRUSTED, decide, unresolved_groups
        from pam_twofa.store import StoreError, storable_name
        from pam_twofa.system import accounts

        account = accounts.lookup(self.user) if self.user else None
        if account is None or not storable_name(account.name):
            # Ask anyway, then fail as for a wrong code: the answer must not
            # tell an outsider which accounts exist (nor take less time).
            self.ask()
            from pam_twofa.core.auth import refusal_cost

            refusal_cost()
            self.log(log.NOTICE, "unknown user")
            self.conv.error(MSG_BAD)
            return FAIL
        try:
            record = store.load(account.name)
        except StoreError:
            # Exempt users, groups and networks never depend on the store: an outage must
            # not lock out the break-glass accounts. Everyone else fails as the store does.
            unknown = decide(policy, accounts.facts(policy, account, None, self.rhost, self.now()))
            if not unknown.exempt:
                raise
            self.log(log.WARNING, "exempt", unknown.rule + "; the store is failing")
            return IGNORE
        facts = accounts.facts(policy, account, record, self.rhost, self.now())
        decision = decide(policy, facts)
        for name in unresolved_groups(policy, facts)[1]:
            self.log(log.WARNING, "exempt group not found", f"exempt.groups {name} does not resolve: it exempts nobody")
        if decision.action == ERROR:
            return self.failed_closed("groups", ValueError(decision.rule))
        if decision.action == SKIP:
            self.log(log.INFO, "exempt" if decision.exempt else "not asked", decision.rule)
            return IGNORE
        if decision.action == TRUSTED:
            # The second factor was passed from this client within trust.seconds: the same result as a
            # correct code, so the stack behaves as if it had been typed. Nothing is written: only an
            # asked-and-passed login renews the trust (docs/policy.md).
            self.log(log.INFO, "trusted client", decision.rule)
            return PASS
        if decision.action == DENY:
            self.log(log.NOTICE, "denied: not enrolled", decision.rule)
            self.conv.error(MSG_NOT_ENROLLED)
            return FAIL
        if decision.action in (EMAIL, ENROLL):
            return self.email_code(policy, store, decision, account.name)
        return self.check_totp(policy, store, account.name)

    def ask(self) -> str | None:
        return self.conv.prompt(PROMPT)

    def check_totp(self, policy: Policy, store: "Store", user: str) -> str:
        from pam_twofa.core import auth

        typed = self.ask()
        if typed is None:
            self.log(log.NOTICE, "no answer", "the conversation returned no code")
            return FAIL
        with store.locked(user) as section:
            # The section read the record under the lock: another login may have used a code meanwhile.
            record = section.record
            if record is None or not record.enrolled:
                self.log(log.NOTICE, "bad code", "enrollment removed during login")
                self.conv.error(MSG_BAD)
                return FAIL
            now = self.now()
            outcome = auth.attempt(record, typed, now, policy.limits())
            new_address = False
            if outcome.ok:
                outcome.record.last_success_rhost = log.clean(self.rhost, 64) if self.rhost else ""
                self.renew_trust(policy, outcome.record, now)
                new_address = self.note_address(policy, outcome.record, now)
            if outcome.record != record:
                section.save(outcome.record)
        result = self.finish(outcome, policy, user)
        if new_address:
            self.alert(policy, outcome.record, now)
        return result

    def note_address(self, policy: Policy, record: "Record", now: float) -> bool:
        """After a correct code (in the record about to be written): remember this client address;
        True when ``notify.new_address`` wants a mail for it."""
        if not policy.notify_new_address or not self.rhost:
            return False
        from pam_twofa.core import alert

        return alert.remember(record, self.rhost, now, policy.notify_remember)

    def alert(self, policy: Policy, record: "Record", now: float) -> None:
        """Mail the new-address alert: it never delays or fails the login (``mail_later``)."""
        import socket

        from pam_twofa.system import mail

        hostname = socket.gethostname()
        address = policy.mail_address(record.user, hostname, record.email)
        if not mail.valid_address(address):
            self.log(log.WARNING, "new address alert not mailed", "no valid address: set one with twofa-admin email")
            return
        message = mail.build_new_address_alert(policy, record.user, address, self.rhost or "", now, hostname)
        if self.mail_later(policy, message, "new address alert failed"):
            self.log(log.INFO, "new address alert mailed", f"to {mail.mask(address)}")

    def mail_later(self, policy: Policy, message: "EmailMessage", failure: str) -> bool:
        """Send ``message`` from a detached process (``mail.send_detached``); a failure is logged
        with the result ``failure``, then or later, and never changes the login. False: not sent."""
        from pam_twofa.system import mail

        def failed(reason: str) -> None:
            self.log(log.WARNING, failure, reason)

        try:
            mail.send_detached(policy, message, failed)
        except OSError as exc:  # fork refused: the login goes on all the same
            failed(exc.strerror or type(exc).__name__)
            return False
        return True

    def renew_trust(self, policy: Policy, record: "Record", now: float) -> None:
        """After a correct code: trust this client for ``trust.seconds`` (in the record about to be written)."""
        if policy.trust_seconds or record.trusted:
            from pam_twofa.core import trust

            trust.renew(record, self.rhost, now, policy.trust_seconds)

    def finish(self, outcome: "Outcome", policy: Policy, user: str, kind: str = "") -> str:
        """Log the outcome, tell the user what they need to know, and give the result."""
        from pam_twofa.core import auth

        result = outcome.result
        if outcome.ok:
            self.log(log.INFO, kind + result)
            if result == auth.RECOVERY:
                left = len(outcome.record.recovery_hashes)
                self.conv.info(f"Recovery code accepted; {left} left. Run twofa-enroll --recovery-codes for a new set.")
            return PASS
        if result == auth.LOCKED or outcome.newly_locked:
            detail = f"until {int(outcome.record.locked_until)}"
            self.log(log.WARNING, "locked" if result == auth.LOCKED else f"{kind}{result}, now locked", detail)
            self.conv.error(MSG_LOCKED.format(until=_utc(outcome.record.locked_until), user=user))
            return FAIL
        self.log(log.NOTICE, kind + result, f"failure {len(outcome.record.failures)} of {policy.max_failures}")
        if outcome.drift:
            # For the admin only: the client is told no more than for any wrong code.
            seconds = abs(outcome.drift) * outcome.record.period
            way = "behind" if outcome.drift < 0 else "ahead"
            self.log(
                log.NOTICE,
                "clock drift",
                f"the code matches {abs(outcome.drift)} steps {'before' if outcome.drift < 0 else 'after'} now, outside"
                f" totp.window: the device's clock seems {seconds} s {way}; it should be set to automatic time",
            )
        if result == auth.REPLAYED:
            self.conv.error(MSG_REPLAYED)
        elif result == auth.EXPIRED:
            self.conv.error(MSG_EXPIRED)
        else:
            self.conv.error(MSG_BAD)
        return FAIL

    def email_code(self, policy: Policy, store: "Store", decision: "Decision", user: str) -> str:
        """Enforced but not enrolled, ``unenrolled: email``: mail a one-time code and ask for it.

        ``user`` is the account's name as NSS spells it (not as typed: with a
        case-insensitive NSS, every spelling must share one record and lockout).

        No section is open while SMTP talks (docs/login.md, "Emailed codes"): the
        pending code and the send are recorded first, in one section; the mail goes
        out with no lock and no database connection held; a failure is recorded
        in a second section. A section that outlived the agent's section timeout
        would lose the count and hand the login to ``on_error``.
        """
        import socket

        from pam_twofa.core import auth
        from pam_twofa.core.record import Record
        from pam_twofa.system import mail

        hostname = socket.gethostname()
        now = self.now()
        code = _numeric_code(policy.code_digits)
        with store.locked(user) as section:
            record = section.record or Record(user)
            address = policy.mail_address(user, hostname, record.email)
            if not mail.valid_address(address):
                self.log(log.ERR, "mail failed", "no valid address for this user: set one with twofa-admin email")
                self.conv.error(MSG_MAIL_FAILED)
                return FAIL
            if auth.is_locked(record, now):
                self.log(log.WARNING, "locked", f"until {int(record.locked_until)}; no code mailed")
                self.conv.error(MSG_LOCKED.format(until=_utc(record.locked_until), user=user))
                return FAIL
            retry = auth.next_send_at(record, now, policy.max_sends, policy.send_window)
            if retry:
                self.log(log.WARNING, "mail limit reached", f"{policy.max_sends} per {policy.send_window} s")
                self.conv.error(MSG_MAIL_LIMIT.format(until=_utc(retry)))
                return FAIL
            # Counted before the mail leaves: a login killed during the send, or a send that fails
            # after the server may have taken the message, must not give more than max_sends mails.
            issued = auth.issue_email_code(record, code, _random_bytes(16), now, policy.code_ttl, policy.send_window)
            section.save(issued)
        # Outside the section: building the message may ask DNS (make_msgid), sending talks SMTP.
        try:
            mail.send(policy, mail.build_message(policy, user, address, code, self.rhost, now, hostname))
        except mail.MailError as exc:
            return self.mail_failed(store, user, exc, issued.email_code_hash, int(now))
        self.log(log.INFO, "code mailed", f"to {mail.mask(address)}; {decision.rule}")
        from pam_twofa.core.decision import ENROLL

        enrolling = decision.action == ENROLL
        typed = self.conv.prompt(
            f"Code sent to {mail.mask(address)}: ", MSG_SETUP_FIRST if enrolling else MSG_ENROLL_HINT
        )
        if typed is None:
            self.log(log.NOTICE, "no answer", "the conversation returned no code")
            return FAIL
        new_address = False
        with store.locked(user) as section:
            record = section.record or Record(user)
            now = self.now()
            outcome = auth.attempt_email(record, typed, now, policy.limits())
            if outcome.ok:
                outcome.record.last_success_rhost = log.clean(self.rhost, 64) if self.rhost else ""
                if not enrolling:  # trust comes with the app's first code, not with the mailbox alone
                    self.renew_trust(policy, outcome.record, now)
                    new_address = self.note_address(policy, outcome.record, now)
            if outcome.record != record:
                section.save(outcome.record)
        if enrolling and outcome.ok:
            self.log(log.INFO, "emailed success", "the mailbox is proven; setting up the authenticator app")
            return self.enroll_at_login(policy, store, user)
        result = self.finish(outcome, policy, user, "emailed ")
        if new_address:
            self.alert(policy, outcome.record, now)
        return result

    def enroll_at_login(self, policy: Policy, store: "Store", user: str) -> str:
        """``enforce.unenrolled: enroll``, once the emailed code proved the mailbox: a new secret as a
        QR code, its key and URI, in the SSH conversation; activated only when a code from the app
        verifies, and only if nobody enrolled this user meanwhile (under the lock). Then the recovery
        codes, once. Nothing is stored before that code: giving up leaves the user unenrolled, and
        the next login starts over with a new emailed code (docs/login.md, "Enrollment at login")."""
        import socket

        from pam_twofa.core import auth, provisioning, recovery, totp
        from pam_twofa.core.record import Record

        hostname = socket.gethostname()
        key = _random_bytes(20)  # 160 bits, as RFC 4226 recommends and twofa-enroll makes
        digits, period, algorithm = policy.totp_digits, policy.totp_period, policy.totp_algorithm
        issuer = policy.totp_issuer.format(hostname=hostname)
        uri = provisioning.provisioning_uri(key, user, hostname, issuer, digits, period, algorithm)
        try:
            from pam_twofa.system import qr

            picture = qr.render(uri, "plain")
        except Exception as exc:  # no qrcode package: the key and URI still set the app up
            self.log(log.WARNING, "no QR code", f"{type(exc).__name__}: showing the key and URI only")
            picture = ""
        setup = "\n".join(
            [MSG_SETUP_HEAD.format(user=user, hostname=hostname), *provisioning.setup_lines(uri, key, picture)]
        )
        step = None
        for attempt in range(SETUP_TRIES):
            # The QR code goes with the first prompt only: it stays on the screen above the next ones.
            typed = self.conv.prompt(PROMPT_APP.format(digits=digits), setup if attempt == 0 else None, echo=True)
            if typed is None:
                self.log(log.NOTICE, "enrollment at login abandoned", "no answer at the app's code; nothing stored")
                return FAIL
            code = auth.normalize_code(typed)
            if code.isdigit():
                step = totp.match_step(key, code, self.now(), digits, period, policy.totp_window, algorithm)
            if step is not None:
                break
            if attempt < SETUP_TRIES - 1:
                self.conv.error(MSG_SETUP_WRONG)
        if step is None:
            self.log(
                log.NOTICE,
                "enrollment at login abandoned",
                f"no valid code from the app in {SETUP_TRIES} tries; nothing stored",
            )
            self.conv.error(MSG_SETUP_GAVE_UP)
            return FAIL
        codes, salt, hashes = recovery.new_codes()
        with store.locked(user) as section:
            current = section.record or Record(user)
            now = self.now()
            if current.enrolled or auth.is_locked(current, now):
                why = "enrolled meanwhile" if current.enrolled else "locked meanwhile"
                self.log(log.WARNING, "enrollment at login refused", f"{why}; nothing stored")
                self.conv.error(MSG_SETUP_CHANGED)
                return FAIL
            stored = current.copy()
            # The login state stays (mails sent, addresses seen, the admin's address); the secret is new.
            stored.key, stored.algorithm, stored.digits, stored.period = key, algorithm, digits, period
            stored.enrolled_at = int(now)
            stored.recovery_salt, stored.recovery_hashes = salt, hashes
            stored.last_step = step  # the code just typed counts as used
            stored.failures, stored.locked_until = [], 0
            stored.last_success_at = int(now)
            stored.last_success_rhost = log.clean(self.rhost, 64) if self.rhost else ""
            stored.email_code_salt, stored.email_code_hash, stored.email_code_expires = b"", b"", 0
            self.renew_trust(policy, stored, now)
            self.note_address(policy, stored, now)
            section.save(stored)
        self.log(log.NOTICE, "enrolled at login", "TOTP set up after an emailed code; recovery codes shown once")
        self.notice(policy, stored, now, hostname)
        lines = [MSG_SETUP_DONE.format(user=user), "", MSG_RECOVERY]
        lines += [f"    {first}    {second}" for first, second in zip(codes[0::2], codes[1::2])]
        # A prompt, not a message: every client shows a prompt before the session starts, and the
        # user says when the codes are saved. Its answer is not used.
        self.conv.prompt(PROMPT_SAVED, "\n".join(lines), echo=True)
        return PASS

    def notice(self, policy: Policy, record: "Record", now: float, hostname: str) -> None:
        """The change notice of an enrollment at login (as twofa-enroll mails it), detached."""
        from pam_twofa.system import mail

        address = policy.mail_address(record.user, hostname, record.email)
        if not mail.valid_address(address):
            return  # the emailed code went to this same address: not reached
        where = f"an SSH login from {self.rhost or 'an unknown address'}"
        message = mail.build_change_notice(policy, record.user, address, "enrolled at login", where, now, hostname)
        self.mail_later(policy, message, "notification mail failed")

    def mail_failed(self, store: "Store", user: str, error: "MailError", pending: bytes, sent_at: int) -> str:
        """The code could not be mailed: refused whatever ``on_error`` says (there is no code to check).

        Its pending code is withdrawn; its send stays counted only if the server may have
        taken the message (``error.maybe_sent``): a server that was down or refused gives
        nobody a mail, and must not use up the user's ``email.max_sends``.
        """
        from pam_twofa.store import StoreError

        counted = "; counted toward email.max_sends: the server may have taken the mail" if error.maybe_sent else ""
        self.log(log.ERR, "mail failed", f"{error}{counted}")
        try:
            with store.locked(user) as section:
                if section.record is not None:
                    new = withdraw_email_code(section.record, pending, None if error.maybe_sent else sent_at)
                    if new != section.record:
                        section.save(new)
        except (StoreError, OSError) as exc:
            # The login is refused all the same; what stays recorded is one more send, never one less.
            for message in str(exc).splitlines() or [type(exc).__name__]:
                self.log(log.ERR, "error: store", f"{message}; the failed send stays counted")
        self.conv.error(MSG_MAIL_FAILED)
        return FAIL


def withdraw_email_code(record: "Record", pending: bytes, uncount: int | None) -> "Record":
    """``record`` after a failed mail: the pending code ``pending`` (its hash) cleared if it is still
    the one pending (a later login's code stays), and the send made at ``uncount`` removed (None: the
    send stays counted). Pure: a copy is returned."""
    from pam_twofa.core.primitives import compare_digest

    new = record.copy()
    if new.email_code_hash and compare_digest(new.email_code_hash, pending):
        new.email_code_salt, new.email_code_hash, new.email_code_expires = b"", b"", 0
    if uncount is not None and uncount in new.email_sends:
        new.email_sends.remove(uncount)
    return new


def _numeric_code(digits: int) -> str:
    import secrets

    return str(secrets.randbelow(10**digits)).rjust(digits, "0")


def _random_bytes(count: int) -> bytes:
    import os

    return os.urandom(count)


def _utc(timestamp: float) -> str:
    t = time.gmtime(timestamp)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}"
