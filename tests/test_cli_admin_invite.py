"""twofa-admin invite (issue 25) and the trusted-client count of explain.

``invite`` runs as a real process of the checkout under nss_wrapper, so the
user and group databases it enumerates (``pwd.getpwall``, ``grp``,
``getgrouplist``) are real files of the test, and mails go to a real SMTP
server (aiosmtpd) in this process. The audit line and ``explain`` run in
process, with the accounts faked as tests/test_cli_admin.py does.

Users (nss_wrapper), under ``enforce.groups: [staff]``:

===========  =====  ==========================================================
alice        2001   supplementary member of staff, not enrolled: invited
erin         2005   staff is her primary group, not enrolled: invited
two words    2008   supplementary member of staff: no valid address
bob          2002   member of staff, enrolled: never invited
carol        2003   member of staff, in exempt.users: not enforced
dave         2004   member of staff and of ops (exempt.groups): not enforced
frank        2006   in no policy group: enforced only under ``mode: all``
nolog        2007   /usr/sbin/nologin: not a human account
big          70000  above UID_MAX (60000 by default)
svc          999    below UID_MIN, but has a record: counted under ``mode: all``
===========  =====  ==========================================================
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from support.mail import Mailbox, received
from support.records import stored

from pam_twofa.cli import admin, run
from pam_twofa.core.record import Record
from pam_twofa.store.files import FileStore
from pam_twofa.system import accounts
from pam_twofa.system.accounts import Account

pytestmark = pytest.mark.root  # a root-owned state folder, as the commands require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = bytes(range(20))
DAY = 86400

PASSWD = {  # name: (uid, gid, shell)
    "root": (0, 0, "/bin/bash"),
    "alice": (2001, 2001, "/bin/bash"),
    "bob": (2002, 2002, "/bin/bash"),
    "carol": (2003, 2003, "/bin/bash"),
    "dave": (2004, 2004, "/bin/bash"),
    "erin": (2005, 3000, "/bin/bash"),
    "frank": (2006, 2006, "/bin/bash"),
    "nolog": (2007, 2007, "/usr/sbin/nologin"),
    "two words": (2008, 2008, "/bin/bash"),
    "big": (70000, 70000, "/bin/bash"),
    "svc": (999, 999, "/bin/bash"),
}
GROUPS = {"staff": (3000, ["alice", "bob", "carol", "dave", "two words"]), "ops": (3001, ["dave"])}
INVITED = ["alice", "erin"]  # the enforced, unenrolled users with a valid address under mode: groups

# The mail text per enforce.unenrolled (pam_twofa.system.mail.build_invitation), unwrapped.
TEXT = {
    "enroll": "you will be asked to set it up: first a code mailed to you, then a QR code for your authenticator app",
    "email": "log in to {host} and run: twofa-enroll",
    "deny": "SSH logins as {user} to {host} are refused",
}
OTHER_TEXT = {"enroll": "twofa-enroll", "email": "are refused", "deny": "you will be asked to set it up"}


# --- the SMTP server -----------------------------------------------------------------------


class SMTP:
    def __init__(self, port: int, box: Mailbox) -> None:
        self.port = port
        self.box = box
        self.refused: set[str] = set()  # RCPT addresses answered 550


@pytest.fixture
def smtp():
    """A real SMTP server on 127.0.0.1 that refuses the recipients in ``smtp.refused``."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = SMTP(port, Mailbox())

    class Collect:
        async def handle_RCPT(self, _server, _session, envelope, address, _options):
            if address in server.refused:
                return "550 no such mailbox"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, _server, _session, envelope):
            message = received(envelope.original_content or envelope.content)
            message.envelope_to = list(envelope.rcpt_tos)
            server.box.add(message)
            return "250 Message accepted for delivery"

    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: nothing listens there


# --- the user database and the command -----------------------------------------------------


@pytest.fixture
def nss(tmp_path):
    """The nss_wrapper files: (passwd, group)."""
    passwd = tmp_path / "passwd"
    group = tmp_path / "group"
    passwd.write_text(
        "".join(f"{name}:x:{uid}:{gid}::/home/{name}:{shell}\n" for name, (uid, gid, shell) in PASSWD.items())
    )
    group.write_text(
        "root:x:0:\n"
        + "".join(f"{name}:x:{gid}:{','.join(members)}\n" for name, (gid, members) in GROUPS.items())
        + "".join(f"{name}:x:{gid}:\n" for name, (_uid, gid, _shell) in PASSWD.items() if gid not in (0, 3000, 3001))
    )
    return passwd, group


RUNNER = (
    "import sys\n"
    "from pam_twofa.cli import admin, run\n"
    "from pam_twofa.system import accounts\n"
    "accounts.LOGIN_DEFS = sys.argv[1]\n"
    "raise SystemExit(run(admin.main, sys.argv[2:], prog='twofa-admin'))\n"
)


@pytest.fixture
def invite(tmp_path, nss):
    """invite(policy, *argv, login_defs=None) -> (exit code, stdout, stderr) of ``twofa-admin invite ARGV``."""
    passwd, group = nss

    def call(policy_path: str, *argv: str, login_defs: str | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "NSS_"))}
        env.update(
            LD_PRELOAD="libnss_wrapper.so",
            NSS_WRAPPER_PASSWD=str(passwd),
            NSS_WRAPPER_GROUP=str(group),
            PYTHONPATH=REPO,
            LC_ALL="C.UTF-8",
        )
        defs = login_defs or str(tmp_path / "no-login.defs")  # missing: the defaults 1000..60000
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER, defs, "--policy", policy_path, "invite", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
        return proc.returncode, proc.stdout, proc.stderr

    return call


def policy_text(smtp_port: int, mode: str = "groups", unenrolled: str = "enroll", extra: str = "") -> str:
    return (
        f"enforce:\n  mode: {mode}\n  groups: [staff]\n  unenrolled: {unenrolled}\n"
        "exempt:\n  users: [carol]\n  groups: [ops]\n"
        'email:\n  address: "{user}@example.com"\n  from: "twofa@{hostname}"\n'
        f"  smtp:\n    host: 127.0.0.1\n    port: {smtp_port}\n    timeout: 5\n" + extra
    )


@pytest.fixture
def world(state_dir):
    """The store: bob enrolled, svc (uid 999) with a record of its own, ghost with a record and no account."""
    store = FileStore(state_dir)
    store.update("bob", lambda _old: Record("bob", key=KEY))
    store.update("svc", lambda _old: Record("svc", email="svc@example.com"))
    store.update("ghost", lambda _old: Record("ghost"))
    return store


def listed(out: str) -> dict[str, str]:
    """{user: the rest of the line} for the per-user lines of invite's output."""
    found = {}
    for line in out.splitlines():
        if line.startswith("dry run:") or line[:1].isdigit():
            continue
        user, _colon, rest = line.partition(": ")
        assert user not in found, out
        found[user] = rest
    return found


def snapshot(state_dir: str) -> dict[str, tuple[int, int]]:
    users = os.path.join(state_dir, "users")
    return {
        name: (os.stat(os.path.join(users, name)).st_ino, os.stat(os.path.join(users, name)).st_mtime_ns)
        for name in sorted(os.listdir(users))
    }


# --- --unenrolled: who is found -------------------------------------------------------------


def test_dry_run_lists_exactly_the_enforced_unenrolled_members_of_the_enforce_groups(
    invite, make_policy, world, smtp, state_dir
):
    path = make_policy(policy_text(smtp.port))
    before = snapshot(state_dir)
    code, out, err = invite(path, "--unenrolled", "--dry-run")
    assert code == 1, (out, err)  # "two words" has no valid address: the admin must act
    assert err == ""
    lines = listed(out)
    assert sorted(lines) == ["alice", "erin", "two words"], out
    assert lines["alice"] == "alice@example.com: would mail"
    assert lines["erin"] == "erin@example.com: would mail"  # a primary member
    assert lines["two words"].startswith("'two words@example.com': skipped: no valid address")
    assert "twofa-admin email 'two words' ADDRESS" in lines["two words"]
    assert out.splitlines()[0] == "dry run: nothing is sent or written"
    assert out.splitlines()[-1] == "dry run: 2 would be mailed, 0 skipped (invited within a day)"
    assert smtp.box.messages == []
    assert snapshot(state_dir) == before  # nothing written


def test_dry_run_under_mode_all_lists_human_accounts_and_users_with_a_record(
    invite, make_policy, world, smtp, tmp_path
):
    path = make_policy(policy_text(smtp.port, mode="all"))
    code, out, err = invite(path, "--unenrolled", "--dry-run")
    assert err == "" and code == 1, (out, err)
    # not root (uid 0), nolog (nologin), big (uid 70000), ghost (no account); svc by its record;
    # bob (enrolled), carol and dave (exempt) are never listed
    assert sorted(listed(out)) == ["alice", "erin", "frank", "svc", "two words"], out
    assert listed(out)["svc"] == "svc@example.com: would mail"  # the recorded address, not the template

    defs = tmp_path / "login.defs"
    defs.write_text("# local\nUID_MIN\t\t 1000\nUID_MAX   80000\nGID_MIN 1000\n")
    code, out, err = invite(path, "--unenrolled", "--dry-run", login_defs=str(defs))
    assert sorted(listed(out)) == ["alice", "big", "erin", "frank", "svc", "two words"], out


def test_mode_off_invites_nobody(invite, make_policy, world, smtp):
    path = make_policy(policy_text(smtp.port, mode="off"))
    code, out, err = invite(path, "--unenrolled")
    assert (code, out, err) == (0, "enforce.mode is off: nobody is enforced, so nobody is invited\n", "")
    assert smtp.box.messages == []


# --- mailing --------------------------------------------------------------------------------


@pytest.mark.parametrize("unenrolled", ["enroll", "email", "deny"])
def test_invite_mails_each_once_a_day_unless_forced(invite, make_policy, world, smtp, state_dir, unenrolled):
    path = make_policy(policy_text(smtp.port, unenrolled=unenrolled))
    host = socket.gethostname()
    start = int(time.time())
    code, out, err = invite(path, "--unenrolled")
    assert code == 1, (out, err)  # "two words": no valid address
    assert listed(out)["alice"] == "alice@example.com: mailed" and listed(out)["erin"] == "erin@example.com: mailed"
    assert out.splitlines()[-1] == "2 mailed, 0 skipped (invited within a day), 0 failed"
    assert sorted(m.envelope_to[0] for m in smtp.box.messages) == ["alice@example.com", "erin@example.com"]
    for message in smtp.box.messages:
        user = message.envelope_to[0].split("@")[0]
        body = " ".join(message.get_content().split())
        assert message["Subject"] == f"Set up two-factor authentication for {user} on {host}"
        assert message["From"] == f"twofa@{host}"
        assert TEXT[unenrolled].format(user=user, host=host) in body, body
        assert OTHER_TEXT[unenrolled] not in body
        assert host in body and "holds no code and no link" in body
    store = FileStore(state_dir)
    for user in INVITED:
        assert start <= stored(store, user).invited_at <= time.time()
        assert not stored(store, user).enrolled
    first = {user: stored(store, user).invited_at for user in INVITED}

    # Within the day: skipped, nothing mailed, nothing written; exit 1 only for "two words"
    smtp.box.clear()
    code, out, _err = invite(path, "--unenrolled")
    assert code == 1
    assert listed(out)["alice"] == "alice@example.com: skipped: invited 0 min ago; --force to mail again"
    assert out.splitlines()[-1] == "0 mailed, 2 skipped (invited within a day), 0 failed"
    assert smtp.box.messages == []
    code, out, _err = invite(path, "alice", "erin", "--dry-run")
    assert code == 0, out
    assert listed(out)["erin"] == "erin@example.com: skipped: invited 0 min ago; --force to mail again"

    # --force: mailed again, and the time moves on
    time.sleep(1.1)
    code, out, _err = invite(path, "alice", "erin", "--force")
    assert code == 0, out
    assert sorted(m.envelope_to[0] for m in smtp.box.messages) == ["alice@example.com", "erin@example.com"]
    for user in INVITED:
        assert stored(store, user).invited_at > first[user]


def test_an_invitation_older_than_a_day_is_mailed_again(invite, make_policy, world, smtp, state_dir):
    path = make_policy(policy_text(smtp.port))
    store = FileStore(state_dir)
    now = int(time.time())
    store.update("alice", lambda _old: Record("alice", invited_at=now - DAY - 5))
    store.update("erin", lambda _old: Record("erin", invited_at=now - 5 * 3600))
    code, out, _err = invite(path, "alice", "erin")
    assert code == 0, out
    assert listed(out) == {
        "alice": "alice@example.com: mailed",
        "erin": "erin@example.com: skipped: invited 5 h ago; --force to mail again",
    }
    assert [m.envelope_to for m in smtp.box.messages] == [["alice@example.com"]]
    assert stored(store, "alice").invited_at >= now and stored(store, "erin").invited_at == now - 5 * 3600


def test_a_failed_send_leaves_invited_at_and_the_others_go_on(invite, make_policy, world, smtp, state_dir):
    path = make_policy(policy_text(smtp.port))
    smtp.refused.add("alice@example.com")
    code, out, err = invite(path, "alice", "erin")
    assert code == 1
    assert "alice: alice@example.com: mail failed: SMTP 127.0.0.1:" in err and "refused the recipient" in err
    assert "not marked as invited" in err
    assert listed(out)["erin"] == "erin@example.com: mailed"
    assert out.splitlines()[-1] == "1 mailed, 0 skipped (invited within a day), 1 failed"
    store = FileStore(state_dir)
    assert store.load("alice") is None  # no record was made for the failed invitation
    assert stored(store, "erin").invited_at > 0
    # a later run mails alice (she was never marked) and skips erin
    smtp.refused.clear()
    code, out, _err = invite(path, "--unenrolled")
    assert listed(out)["alice"] == "alice@example.com: mailed" and "skipped: invited" in listed(out)["erin"]


def test_no_smtp_server_fails_every_user_and_writes_nothing(invite, make_policy, world, state_dir):
    path = make_policy(policy_text(unused_port()))
    code, out, err = invite(path, "--unenrolled")
    assert code == 1
    assert sorted(line.split(":")[0] for line in err.splitlines()) == ["alice", "erin"], err
    assert out.splitlines()[-1] == "0 mailed, 0 skipped (invited within a day), 2 failed"
    assert FileStore(state_dir).load("alice") is None and FileStore(state_dir).load("erin") is None


# --- named users ----------------------------------------------------------------------------


def test_an_unknown_named_user_stops_before_anything_is_sent(invite, make_policy, world, smtp, state_dir):
    path = make_policy(policy_text(smtp.port))
    code, out, err = invite(path, "alice", "nosuchuser", "ghost")
    assert code == 1 and out == ""
    assert err == "twofa-admin: unknown users 'nosuchuser', 'ghost': no such account; nothing was sent\n"
    assert smtp.box.messages == [] and FileStore(state_dir).load("alice") is None


def test_named_users_not_enforced_or_enrolled_are_said_and_skipped(invite, make_policy, world, smtp):
    path = make_policy(policy_text(smtp.port))
    code, out, err = invite(path, "frank", "bob", "carol", "alice", "dave")
    assert code == 1 and err == "", (out, err)
    lines = listed(out)
    assert lines["frank"].startswith("skipped: not enforced (not asked: not enrolled and not enforced")
    assert lines["bob"].startswith("skipped: already enrolled (asked: enrolled in TOTP")
    assert lines["carol"].startswith("skipped: not enforced (exempt: user carol is listed in exempt.users")
    assert lines["dave"].startswith("skipped: not enforced (exempt: member of group ops")
    assert lines["alice"] == "alice@example.com: mailed"
    assert [m.envelope_to for m in smtp.box.messages] == [["alice@example.com"]]


@pytest.mark.parametrize(
    "argv,says",
    [
        ([], "name the users to invite, or pass --unenrolled"),
        (["alice", "--unenrolled"], "not both"),
    ],
)
def test_names_or_unenrolled(invite, make_policy, smtp, argv, says):
    path = make_policy(policy_text(smtp.port))
    code, out, err = invite(path, *argv)
    assert code == 1 and out == "" and says in err and len(err.splitlines()) == 1


# --- in process: the audit line, explain -----------------------------------------------------


def cli(capsys, *argv):
    code = run(admin.main, list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out and "Traceback" not in err
    return code, out, err


@pytest.fixture
def fake_accounts(monkeypatch):
    users = {"alice": Account("alice", 1001, 1001, {1001, 3000}, "/home/alice")}
    monkeypatch.setattr(accounts, "lookup", lambda name: users.get(name))
    monkeypatch.setattr(accounts, "group_ids", lambda names: {n: {"staff": 3000}.get(n) for n in names})


def test_each_invitation_mailed_is_an_audit_line_without_the_address(
    capsys, make_policy, fake_accounts, smtp, logs, monkeypatch
):
    monkeypatch.setenv("SUDO_USER", "kim")
    monkeypatch.setattr(admin, "invoker", lambda: "kim")
    path = make_policy(policy_text(smtp.port))
    code, out, _err = cli(capsys, "--policy", path, "invite", "alice")
    assert code == 0, out
    assert logs == ["twofa-admin: invite (mailed a***@example.com) user=alice by=kim"]
    code, out, _err = cli(capsys, "--policy", path, "invite", "alice", "--dry-run")
    assert code == 0 and len(logs) == 1  # a dry run and a skip log nothing


def test_explain_counts_the_trusted_clients(capsys, make_policy, fake_accounts, state_dir):
    now = int(time.time())
    trusted = {"203.0.113.9": now + 100, "198.51.100.7": now + 200, "192.0.2.1": now - 10}
    FileStore(state_dir).update("alice", lambda _old: Record("alice", key=KEY, trusted=trusted))
    path = make_policy("enforce:\n  mode: all\ntrust:\n  seconds: 3600\n")
    code, out, _err = cli(capsys, "--policy", path, "explain", "alice")
    assert code == 0 and out.splitlines()[-1] == "trusted clients: 2", out  # the expired one is not counted
    path = make_policy("enforce:\n  mode: all\n")
    code, out, _err = cli(capsys, "--policy", path, "explain", "alice")
    assert out.splitlines()[-1] == "trusted clients: 0 (trust.seconds is 0: trust is off)"


def test_explain_and_status_under_unenrolled_enroll(capsys, make_policy, fake_accounts):
    import json

    path = make_policy("enforce:\n  mode: all\n  unenrolled: enroll\n")
    code, out, _err = cli(capsys, "--policy", path, "explain", "alice")
    assert code == 0
    assert out.splitlines()[1].startswith("decision: enroll: a one-time code is emailed"), out
    assert out.splitlines()[-1] == "trusted clients: 0 (trust.seconds is 0: trust is off)"
    code, out, _err = cli(capsys, "--policy", path, "status", "alice", "--json")
    [row] = json.loads(out)["users"]
    assert row["decision"] == "enroll" and row["enforced"] is True and row["trusted"] == []
