"""twofa-admin against the real login path (issue 5, "Must show" 1-3; docs/policy.md).

Every claim of ``twofa-admin`` (disable, status, explain, unlock) is checked
against what the real ``pam_python.so`` does with the INSTALLED module,
driven by pamtester under pam_wrapper/nss_wrapper (see conftest.py).
``twofa-admin`` runs as a subprocess under the same nss_wrapper users.

Emailed codes go to a real SMTP server (aiosmtpd) in this process, so the
email branch of docs/policy.md step 3 is observed as a ``Code sent to`` prompt and
a delivered message, not inferred.

Users and groups (pam_harness.USERS / GROUPS): alice is a supplementary and
erin a primary member of ``staff``; dave a supplementary and oscar a primary
member of ``ops``; bob, carol, frank, victor are in no policy group.
"""

from __future__ import annotations

import calendar
import json
import re
import socket
import subprocess
import time

import pytest
from pam_harness import (
    KEY,
    MSG_BAD,
    MSG_LOCKED,
    NS_SCRIPT,
    PW,
    STACKS,
    USERS,
    Result,
    current_step,
    new_secret,
    oath,
)
from support.mail import Mailbox, received

pytestmark = pytest.mark.pam

MSG_NOT_ENROLLED = "must use two-factor authentication but has none set up"
MSG_CODE_SENT = "Code sent to"
MSG_MAIL_FAILED = "Could not send the code"
SUDO_USER = "admin-kim"
WRONG_EMAIL_CODE = "00000000"
RECOVERY_RE = re.compile(r"[a-z2-9]{5}-[a-z2-9]{5}")


# --- SMTP ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp():
    """A real SMTP server on 127.0.0.1; ``smtp.port``, ``smtp.box`` (a Mailbox)."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox()

    class Collect:
        async def handle_DATA(self, _server, _session, envelope):
            message = received(envelope.original_content or envelope.content)
            message.envelope_to = list(envelope.rcpt_tos)
            box.add(message)
            return "250 Message accepted for delivery"

    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield type("SMTP", (), {"port": port, "box": box})
    finally:
        controller.stop()


def write_policy(scratch, smtp=None, **settings):
    """The harness policy plus, with ``smtp``, an ``email:`` section pointing at the test SMTP server."""
    path = scratch.write_policy(**settings)
    if smtp is not None:
        smtp.box.clear()
        text = path.read_text() + f"email:\n  smtp: {{host: 127.0.0.1, port: {smtp.port}, timeout: 5}}\n"
        scratch.write_policy_text(text)
    check = scratch.cli("check")
    assert check.rc == 0, check
    return path


# --- helpers -------------------------------------------------------------------------------


def enroll_with_recovery(scratch, user: str, secret: str | None = None):
    """``scratch.enroll`` and the recovery codes it printed (the harness records them as secrets)."""
    before = set(scratch.sensitive)
    enrolled = scratch.enroll(user, secret)
    codes = sorted(s for s in scratch.sensitive - before if RECOVERY_RE.fullmatch(s))
    assert len(codes) >= 3, f"enrollment printed too few recovery codes: {codes}"
    return enrolled, codes


def admin(scratch, *args, sudo_user: str | None = None) -> Result:
    """``twofa-admin ARGS --policy P`` under nss_wrapper, optionally with SUDO_USER set."""
    extra = scratch.env.nss_env()
    if sudo_user:
        extra["SUDO_USER"] = sudo_user
    return scratch._checked(scratch.env.run([scratch.env.admin, *args, "--policy", scratch.policy_path], extra))


def status_json(scratch, *args) -> dict:
    result = admin(scratch, "status", *args, "--json")
    assert result.rc == 0, result
    doc = json.loads(result.output)  # stdout and stderr together: nothing but the JSON
    assert doc["version"] == 1 and doc["policy"] == str(scratch.policy_path), doc
    return {row["user"]: row for row in doc["users"]}


def explain(scratch, user: str, rhost: str | None = None):
    """(decision, rule, full output) of ``twofa-admin explain``."""
    result = admin(scratch, "explain", user, *(["--rhost", rhost] if rhost is not None else []))
    assert result.rc == 0, result
    decision = re.search(r"^decision: (skip|totp|email|deny): ", result.output, re.M)
    rule = re.search(r"^rule: (.+)$", result.output, re.M)
    assert decision and rule, result
    return decision.group(1), rule.group(1), result.output


def observed(result: Result) -> str:
    """What the login path visibly did: skip, totp, email or deny (or 'unclear')."""
    if MSG_CODE_SENT in result.output or MSG_MAIL_FAILED in result.output:
        return "email"
    if MSG_NOT_ENROLLED in result.output and result.denied and not result.prompted:
        return "deny"
    if result.prompted:
        return "totp"
    if result.ok:
        return "skip"
    return "unclear"


def expected_invoker() -> str:
    """What ``by=`` must name: the login uid's user if the kernel has one, else SUDO_USER."""
    try:
        uid = int(open("/proc/self/loginuid").read().strip())
    except (OSError, ValueError):
        uid = 4294967295
    names = {u: n for n, (u, _g) in USERS.items()} | {0: "root"}  # nss_wrapper's passwd
    return names.get(uid, SUDO_USER)


def email_login(scratch, smtp, user: str, address: str, stack: str = KEY, rhost=None):
    """A login that is emailed a code: waits for the mail, then types the code from it.

    Returns (Result, the code). Runs like ``Scratch.pamtester`` (same namespace,
    wrappers and checks), but answers interactively.
    """
    env = scratch.env
    argv = ["pamtester", "-v", *(["-I", f"rhost={rhost}"] if rhost else []), stack, user, "authenticate"]
    extra = {
        "LD_PRELOAD": "libpam_wrapper.so libnss_wrapper.so",
        "PAM_WRAPPER": "1",
        "PAM_WRAPPER_SERVICE_DIR": str(scratch.service_dir),
        "NSS_WRAPPER_PASSWD": str(env.passwd),
        "NSS_WRAPPER_GROUP": str(env.group),
    }
    cmd = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        NS_SCRIPT,
        str(env.root),
        "env",
        *(f"{k}={v}" for k, v in extra.items()),
        *argv,
    ]
    already = len(smtp.box.to(address))
    mark = env.listener.mark()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env.base_env,
        cwd=str(env.root),
    )
    assert proc.stdin is not None  # a pipe
    try:
        if stack == PW:
            proc.stdin.write(scratch.passwords[user].encode() + b"\n")
            proc.stdin.flush()
        message = smtp.box.wait_for(address, already + 1)[-1]
        match = re.search(r"one-time code is: (\d+)", message.get_content())
        assert match, message.get_content()
        code = match.group(1)
        output, _ = proc.communicate(code.encode() + b"\n", timeout=60)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    result = Result(proc.returncode, output.decode("utf-8", "replace"), env.listener.since(mark))
    return scratch._checked(result, [code]), code


# =============================================================================================
# a. disable
# =============================================================================================


@pytest.mark.parametrize("stack", STACKS)
def test_disable_not_enforced_user_is_no_longer_asked_and_old_codes_die(scratch, stack):
    write_policy(scratch, mode="off")
    alice, recovery = enroll_with_recovery(scratch, "alice")
    # controls: before disable she is asked, and both her TOTP and a recovery code work
    first = scratch.login(stack, "alice", alice.code())
    assert first.ok and first.prompted, first
    by_recovery = scratch.login(stack, "alice", recovery[0])
    assert by_recovery.ok and by_recovery.prompted, by_recovery

    recorded = admin(scratch, "email", "alice", "alice.phone@example.org")
    assert recorded.rc == 0, recorded

    result = admin(scratch, "disable", "alice", "--yes", sudo_user=SUDO_USER)
    assert result.rc == 0, result
    assert "2FA disabled" in result.output, result
    assert "the policy decides: no code is asked" in result.output, result
    assert "rule: not asked: not enrolled and not enforced" in result.output, result
    assert result.log_with(f"twofa-admin: disable user=alice by={expected_invoker()}"), result

    after = scratch.login(stack, "alice")
    assert after.ok, after
    assert not after.prompted, after
    assert after.log_with("user=alice", "not asked"), after

    row = status_json(scratch, "alice")["alice"]
    assert row["enrolled"] is False and row["recovery_codes_left"] == 0 and row["enrolled_at"] is None, row
    assert row["email"] == "alice.phone@example.org", row  # the admin-recorded address survives

    # Re-enrolled with a new secret: asked again, and only the NEW secret's codes work.
    old_code = oath(alice.secret, current_step())
    new, new_recovery = enroll_with_recovery(scratch, "alice", new_secret())
    assert old_code not in {oath(new.secret, s) for s in range(current_step() - 2, current_step() + 3)}
    old_totp = scratch.login(stack, "alice", old_code)
    assert old_totp.denied and old_totp.prompted and MSG_BAD in old_totp.output, old_totp
    old_recovery = scratch.login(stack, "alice", recovery[1])
    assert old_recovery.denied and old_recovery.prompted and MSG_BAD in old_recovery.output, old_recovery
    assert not set(recovery) & set(new_recovery)
    new_by_recovery = scratch.login(stack, "alice", new_recovery[0])
    assert new_by_recovery.ok, new_by_recovery  # control: recovery codes do work at this prompt
    new_by_totp = scratch.login(stack, "alice", new.code())
    assert new_by_totp.ok and new_by_totp.prompted, new_by_totp
    assert status_json(scratch, "alice")["alice"]["email"] == "alice.phone@example.org"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("user,membership", [("alice", "supplementary"), ("erin", "primary")])
def test_disable_enforced_user_with_deny_is_refused(scratch, stack, user, membership):
    write_policy(scratch, mode="groups", groups=["staff"], unenrolled="deny")
    enrolled, recovery = enroll_with_recovery(scratch, user)
    code = enrolled.code()
    before = scratch.login(stack, user, code)
    assert before.ok and before.prompted, before  # control

    result = admin(scratch, "disable", user, "--yes", sudo_user=SUDO_USER)
    assert result.rc == 0, result
    assert "the login is refused until the user enrolls" in result.output, result
    assert f"member of group staff ({membership}) matched enforce.groups" in result.output, result
    assert result.log_with(f"twofa-admin: disable user={user} by={expected_invoker()}"), result

    for answer in (oath(enrolled.secret, current_step()), recovery[0]):
        after = scratch.login(stack, user, answer)
        assert after.denied, after
        assert not after.prompted, after
        assert MSG_NOT_ENROLLED in after.output, after
        assert after.log_with(f"user={user}", "denied: not enrolled", f"staff ({membership})"), after


@pytest.mark.parametrize("stack", STACKS)
def test_disable_enforced_user_with_email_gets_codes_at_the_recorded_address(scratch, smtp, stack):
    write_policy(scratch, smtp, mode="groups", groups=["staff"], unenrolled="email")
    alice, recovery = enroll_with_recovery(scratch, "alice")
    [notice] = smtp.box.wait_for("alice@localhost", 1)  # root's enrollment is told to her too
    assert "twofa-admin disable alice" in notice.get_content()
    smtp.box.clear()
    assert scratch.login(stack, "alice", alice.code()).ok  # control
    recorded = admin(scratch, "email", "alice", "alice.phone@example.org")
    assert recorded.rc == 0, recorded
    assert recorded.log_with("twofa-admin: email user=alice by="), recorded

    result = admin(scratch, "disable", "alice", "--yes")
    assert result.rc == 0, result
    assert "a one-time code is emailed" in result.output and "2FA stays on" in result.output, result
    assert "staff (supplementary)" in result.output, result
    assert smtp.box.to("alice.phone@example.org") == []  # disable itself mails nothing

    # Her old TOTP code and an old recovery code, typed at the emailed-code prompt: refused.
    for n, answer in enumerate((oath(alice.secret, current_step()), recovery[0]), start=1):
        wrong = scratch.login(stack, "alice", answer)
        assert wrong.denied, wrong
        assert MSG_CODE_SENT in wrong.output and "a***@example.org" in wrong.output, wrong
        assert not wrong.prompted, wrong  # the TOTP prompt is not shown: no secret any more
        assert len(smtp.box.wait_for("alice.phone@example.org", n)) == n
    assert smtp.box.to("alice@localhost") == []  # the template address is not used

    good, _code = email_login(scratch, smtp, "alice", "alice.phone@example.org", stack=stack, rhost="192.0.2.5")
    assert good.ok, good
    assert MSG_CODE_SENT in good.output, good
    assert good.log_with("user=alice", "code mailed", "staff (supplementary)"), good
    row = status_json(scratch, "alice")["alice"]
    assert row["enrolled"] is False and row["enforced"] is True and row["decision"] == "email", row
    assert row["last_success"]["rhost"] == "192.0.2.5", row


def test_disable_without_yes_changes_nothing(scratch):
    alice = scratch.enroll("alice")
    refused = admin(scratch, "disable", "alice")  # stdin is not a terminal
    assert refused.rc == 1 and "--yes" in refused.output, refused
    assert not refused.log_with("twofa-admin: disable"), refused
    still = scratch.login(KEY, "alice", alice.code())
    assert still.ok and still.prompted, still


# =============================================================================================
# b. status --json agrees with real logins; human status is an aligned table
# =============================================================================================

STATUS_POLICY = dict(
    mode="groups",
    groups=["staff"],
    unenrolled="deny",
    exempt_users=["carol"],
    exempt_groups=["ops"],
    exempt_networks=["10.0.0.0/8", "2001:db8::/32"],
    max_failures=3,
)

# what docs/policy.md says each row must be: (enrolled, exempt, enforced, locked, rule fragment)
STATUS_EXPECTED = {
    "alice": (True, False, True, False, "enrolled"),  # staff (supplementary), enrolled
    "bob": (True, False, False, True, "enrolled"),  # optional, enrolled, locked out below
    "carol": (True, True, False, False, "user carol is listed in exempt.users"),
    "dave": (True, True, False, False, "member of group ops (supplementary) listed in exempt.groups"),
    "erin": (False, False, True, False, "member of group staff (primary) matched enforce.groups"),
    "victor": (False, False, False, False, "not enrolled and not enforced"),  # only an email recorded
    # Exempt accounts are listed even with nothing stored: an auditor looks for them.
    "oscar": (False, True, False, False, "member of group ops (primary) listed in exempt.groups"),
    # Break-glass: in staff (enforced) and ops (exempt), not enrolled.
    "bgadmin": (False, True, False, False, "member of group ops (supplementary) listed in exempt.groups"),
}
# not listed by a bare ``status`` (nothing stored, not enforced) but answer ``status USER``
STATUS_SINGLE = {
    "frank": (False, False, False, False, "not enrolled and not enforced"),
}


@pytest.fixture
def status_world(scratch):
    write_policy(scratch, **STATUS_POLICY)
    enrolled = {}
    recovery = {}
    for user in ("alice", "bob", "carol", "dave"):
        enrolled[user], recovery[user] = enroll_with_recovery(scratch, user)
    assert admin(scratch, "email", "victor", "victor@example.org").rc == 0
    for attempt in range(3):  # bob locks himself out through the real login path
        result = scratch.login(KEY, "bob", enrolled["bob"].wrong_code(salt=attempt))
        assert result.denied, result
    assert MSG_LOCKED in result.output, result
    return enrolled, recovery


def check_row_against_logins(scratch, row, enrolled, recovery):
    """Log in as the row's user and check the login path does what the row says."""
    user = row["user"]
    if row["locked"]:
        result = scratch.login(KEY, user, enrolled[user].code())
        assert result.denied and MSG_LOCKED in result.output, (row, result)
    elif row["exempt"]:
        for rhost in (None, "192.0.2.10"):
            result = scratch.login(KEY, user, rhost=rhost)
            assert result.ok and not result.prompted, (row, result)
            assert result.log_with(f"user={user}", "result=exempt"), (row, result)
    elif row["enrolled"]:
        by_totp = scratch.login(KEY, user, enrolled[user].code(), rhost="192.0.2.10")
        assert by_totp.ok and by_totp.prompted, (row, by_totp)
        by_recovery = scratch.login(KEY, user, recovery[user][0])
        assert by_recovery.ok and by_recovery.prompted, (row, by_recovery)
    elif row["enforced"]:
        for rhost in (None, "192.0.2.10"):
            result = scratch.login(KEY, user, rhost=rhost)
            assert result.denied and not result.prompted and MSG_NOT_ENROLLED in result.output, (row, result)
    else:
        for rhost in (None, "192.0.2.10"):
            result = scratch.login(KEY, user, rhost=rhost)
            assert result.ok and not result.prompted, (row, result)
            assert result.log_with(f"user={user}", "not asked"), (row, result)


def test_status_json_agrees_with_the_login_path(scratch, status_world):
    enrolled, recovery = status_world
    rows = status_json(scratch)
    assert set(rows) == set(STATUS_EXPECTED), sorted(rows)
    for user in STATUS_SINGLE:
        single = status_json(scratch, user)
        assert list(single) == [user], single
        rows.update(single)
    for user, (is_enrolled, exempt, enforced, locked, rule) in {**STATUS_EXPECTED, **STATUS_SINGLE}.items():
        row = rows[user]
        assert (row["enrolled"], row["exempt"], row["enforced"], row["locked"]) == (
            is_enrolled,
            exempt,
            enforced,
            locked,
        ), row
        assert rule in row["rule"], row
        assert row["account"] is True, row
        assert (row["enrolled_at"] is not None) == is_enrolled, row
        assert (row["locked_until"] is not None) == locked, row
    assert rows["bob"]["failures"] == 3, rows["bob"]
    assert rows["victor"]["email"] == "victor@example.org", rows["victor"]
    assert rows["alice"]["recovery_codes_left"] == 10, rows["alice"]
    assert rows["alice"]["last_success"] is None, rows["alice"]

    for row in rows.values():
        check_row_against_logins(scratch, row, enrolled, recovery)

    # The exempt network of the policy is live (a non-exempt user from it is not asked),
    # yet status, which has no client address, does not call anyone exempt because of it.
    from_network = scratch.login(KEY, "alice", rhost="10.9.8.7")
    assert from_network.ok and not from_network.prompted, from_network
    assert all("exempt.networks" not in row["rule"] for row in rows.values())

    # What the logins above did shows up in status: last success and recovery codes used.
    again = status_json(scratch)
    assert again["alice"]["recovery_codes_left"] == 9, again["alice"]
    assert again["alice"]["last_success"]["at"] is not None, again["alice"]
    assert again["bob"]["locked"] is True, again["bob"]


def test_status_last_success_names_the_client(scratch, policy):
    policy(mode="off")
    alice, recovery = enroll_with_recovery(scratch, "alice")
    assert status_json(scratch)["alice"]["last_success"] is None
    assert scratch.login(KEY, "alice", alice.code(), rhost="198.51.100.23").ok
    last = status_json(scratch)["alice"]["last_success"]
    assert last["rhost"] == "198.51.100.23", last
    assert abs(calendar.timegm(time.strptime(last["at"], "%Y-%m-%dT%H:%M:%SZ")) - time.time()) < 120, last
    # no client address (PAM_RHOST unset): null, as the README documents, not a placeholder
    assert scratch.login(KEY, "alice", recovery[0]).ok
    last = status_json(scratch)["alice"]["last_success"]
    assert last["at"] is not None and last["rhost"] is None, last
    table = admin(scratch, "status")
    assert "from -" not in table.output, table


def test_unlock_after_lockout_lets_the_correct_code_in(scratch, status_world):
    """d. ``unlock``: the locked row clears, and bob's correct code works again."""
    enrolled, _recovery = status_world
    code = enrolled["bob"].code()
    locked = scratch.login(KEY, "bob", code)
    assert locked.denied and MSG_LOCKED in locked.output and "twofa-admin unlock bob" in locked.output, locked
    result = admin(scratch, "unlock", "bob", sudo_user=SUDO_USER)
    assert result.rc == 0 and "unlocked" in result.output, result
    assert result.log_with(f"twofa-admin: unlock user=bob by={expected_invoker()}"), result
    row = status_json(scratch, "bob")["bob"]
    assert row["locked"] is False and row["failures"] == 0 and row["locked_until"] is None, row
    after = scratch.login(KEY, "bob", code)
    assert after.ok and after.prompted, after


def test_status_human_output_is_an_aligned_table(scratch, status_world):
    result = admin(scratch, "status")
    assert result.rc == 0, result
    lines = result.output.splitlines()
    header = lines[0]
    columns = ["USER", "ENROLLED", "POLICY", "LOCKED", "RECOVERY", "LAST SUCCESS"]
    starts = [header.index(name) for name in columns]
    assert starts == sorted(starts) and starts[0] == 0, header
    body = {line.split()[0]: line for line in lines[1:]}
    assert set(body) == set(STATUS_EXPECTED), result
    for user, line in body.items():
        cells = []
        for i, start in enumerate(starts):
            assert len(line) > start and line[start] != " ", (user, line, header)
            assert start == 0 or line[start - 1] == " ", (user, line, header)  # each cell starts at its column
            end = starts[i + 1] if i + 1 < len(starts) else len(line)
            cells.append(line[start:end].strip())
        is_enrolled, exempt, enforced, locked, _rule = STATUS_EXPECTED[user]
        assert cells[0] == user
        assert (cells[1] != "no") == is_enrolled and (not is_enrolled or re.fullmatch(r"\d{4}-\d\d-\d\d", cells[1])), (
            cells
        )
        assert cells[2] == ("exempt" if exempt else "enforced" if enforced else "optional"), cells
        assert cells[3].startswith("until ") == locked and (locked or cells[3] == "no"), cells
        assert cells[4] == ("10" if is_enrolled else "-"), cells
        assert cells[5] == "never", cells


# =============================================================================================
# c. explain agrees with the real decision, for every user x client x unenrolled
# =============================================================================================

EXPLAIN_POLICY = dict(
    mode="groups",
    groups=["staff", "ops"],
    exempt_users=["carol"],
    exempt_groups=["ops"],
    exempt_networks=["10.0.0.0/8", "2001:db8::/32"],
    max_failures=5,
)

# kind: (user, enrolled, what the rule must name when the user decides it)
# ops is both enforced and exempt, and carol is enrolled: only the exemption explains a skip.
EXPLAIN_USERS = {
    "exempt-user": ("carol", True, ["user carol", "exempt.users"]),
    "exempt-group-primary": ("oscar", False, ["group ops (primary)", "exempt.groups"]),
    "exempt-group-supplementary": ("dave", False, ["group ops (supplementary)", "exempt.groups"]),
    "enforced-primary": ("erin", False, ["group staff (primary)", "enforce.groups"]),
    "enforced-supplementary": ("alice", False, ["group staff (supplementary)", "enforce.groups"]),
    "enrolled-not-enforced": ("bob", True, ["enrolled"]),
    "plain": ("frank", False, ["not enrolled and not enforced"]),
}
# kind: (rhost, the network that exempts it)
EXPLAIN_RHOSTS = {
    "none": (None, None),
    "exempt-ipv4": ("10.20.30.40", "10.0.0.0/8"),
    "exempt-ipv6": ("2001:db8:5::9", "2001:db8::/32"),
    "outside": ("192.0.2.77", None),
    "hostname": ("gw.example.org", None),
}


def spec_decision(user_kind: str, network, unenrolled: str) -> str:
    """The decision of docs/policy.md, in order, written out independently of the product."""
    if user_kind.startswith("exempt-") or network:
        return "skip"
    if user_kind == "enrolled-not-enforced":
        return "totp"
    if user_kind.startswith("enforced-"):
        return unenrolled
    return "skip"


@pytest.mark.parametrize("unenrolled", ["deny", "email"])
@pytest.mark.parametrize("rhost_kind", EXPLAIN_RHOSTS)
@pytest.mark.parametrize("user_kind", EXPLAIN_USERS)
def test_explain_agrees_with_the_login(scratch, smtp, user_kind, rhost_kind, unenrolled):
    user, is_enrolled, names = EXPLAIN_USERS[user_kind]
    rhost, network = EXPLAIN_RHOSTS[rhost_kind]
    write_policy(scratch, smtp, unenrolled=unenrolled, **EXPLAIN_POLICY)
    enrolled = scratch.enroll(user) if is_enrolled else None
    if enrolled:
        smtp.box.wait_for(f"{user}@localhost", 1)  # the enrollment notice: not a login's mail
        smtp.box.clear()

    decision, rule, output = explain(scratch, user, rhost)
    expected = spec_decision(user_kind, network, unenrolled)
    assert decision == expected, output

    # the rule names what decided: the user/group, else the network
    if user_kind.startswith("exempt-") or not network:
        for name in names:
            assert name in rule, output
    else:
        assert f"client {rhost} is in network {network} (exempt.networks)" in rule, output
    if decision == "email":
        assert "enforce.unenrolled: email" in rule, output
    if decision == "deny":
        assert "enforce.unenrolled is deny" in rule, output
    if rhost_kind == "hostname":
        assert "not an IP address" in output, output

    answer = enrolled.code() if enrolled else WRONG_EMAIL_CODE
    result = scratch.login(KEY, user, answer, rhost=rhost)
    seen = observed(result)
    assert seen == decision, f"explain says {decision}, the login did {seen}:\n{output}\n{result!r}"

    if decision == "skip":
        assert result.ok and not result.prompted, result
    elif decision == "totp":
        assert result.ok and result.prompted, result  # the right code gets in
    elif decision == "deny":
        assert result.denied and not result.prompted, result
    else:
        assert MSG_CODE_SENT in result.output and result.denied and MSG_BAD in result.output, result
        assert len(smtp.box.to(f"{user}@localhost")) == 1, "the code was not mailed to the user"
    if decision != "email":
        assert smtp.box.to(f"{user}@localhost") == [], "a mail was sent although explain says no email"
    if decision != "totp":
        # the module logs the rule it applied: it must be the very rule explain printed
        assert result.log_with(f"user={user}", rule), f"{rule!r} not in the login's syslog:\n{result!r}"
