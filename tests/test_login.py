"""The login flow (login.Login) with a scripted conversation, a scratch policy and a real file store."""

import base64
import multiprocessing
import os

import pytest
from support.conversation import Conv

from pam_twofa.core import recovery, totp
from pam_twofa.core.record import Record
from pam_twofa.login import flow as login
from pam_twofa.login.flow import FAIL, IGNORE, PASS, Login, Options
from pam_twofa.store.files import FileStore
from pam_twofa.system import accounts, log
from pam_twofa.system.accounts import Account

KEY = bytes.fromhex("8f3a52c4e1d07b69a2f5c8e3b1d4a6f09e7c2b58")
T = 1_700_000_015.0  # inside a 30 s step; codes at T and neighbours are fixed by KEY
CODE = totp.totp(KEY, T)
GROUPS = {"admins": 2000, "robots": 3000, "wheel": 10}
USERS = {
    "alice": Account("alice", 1001, 1001, {1001, 2000}, "/home/alice"),  # admins (supplementary)
    "bob": Account("bob", 1002, 1002, {1002}, "/home/bob"),
    "carol": Account("carol", 1003, 3000, {3000}, "/home/carol"),  # robots (primary)
    "CORP\\dave": Account("CORP\\dave", 1004, 1004, {1004}, "/home/x"),  # winbind-style: stored encoded
    "bad\nname": Account("bad\nname", 1005, 1005, {1005}, "/home/y"),  # control character: never stored
}


REAL_LOOKUP = accounts.lookup  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def fake_accounts(monkeypatch):
    monkeypatch.setattr(accounts, "lookup", lambda name: USERS.get(name))
    monkeypatch.setattr(accounts, "group_ids", lambda names: {n: GROUPS.get(n) for n in names})


@pytest.fixture
def store(state_dir):
    return FileStore(state_dir)


@pytest.fixture
def policy_path(make_policy):
    return make_policy("rate_limit:\n  max_failures: 3\n  per_seconds: 900\n")


def run(policy_path, user, answers=(), rhost="192.0.2.10", now=T, extra=()):
    conv = Conv(answers)
    flow = Login(conv, user, rhost, "sshd", Options(["policy=" + policy_path, *extra]), clock=lambda: now)
    return flow.run(), conv


def enroll(store, user="alice", **fields):
    record = Record(user, key=KEY, enrolled_at=int(T) - 86400, **fields)
    store.update(user, lambda old: record)
    return record


def test_code_fixture_is_sane():
    assert len(CODE) == 6 and CODE.isdigit()
    assert CODE not in str(int(T)) and CODE not in str(int(T) + 900)


# -- decisions ----------------------------------------------------------------------


def test_not_enrolled_not_enforced_is_ignored_without_prompt(policy_path, store, logs):
    result, conv = run(policy_path, "bob")
    assert result == IGNORE
    assert conv.prompts == [] and conv.errors == [] and conv.infos == []
    assert store.load("bob") is None
    assert logs == [
        "pam_twofa(sshd:auth): user=bob rhost=192.0.2.10 result=not asked "
        "(not asked: not enrolled and not enforced (enforce.mode is off))"
    ]


def test_enrolled_right_code_passes(policy_path, store, logs):
    enroll(store)
    result, conv = run(policy_path, "alice", [CODE])
    assert result == PASS
    assert conv.prompts == [login.PROMPT] and conv.errors == []
    record = store.load("alice")
    assert record.last_step == totp.time_step(T)
    assert record.last_success_at == int(T) and record.last_success_rhost == "192.0.2.10"
    assert record.failures == []
    assert logs == ["pam_twofa(sshd:auth): user=alice rhost=192.0.2.10 result=success"]


def test_a_login_fsyncs_its_record_and_then_the_folder_like_the_commands(policy_path, store, fsynced):
    from pam_twofa import policy

    enroll(store)
    policy.load(policy_path)  # the cache is written once, not by every login
    fsynced.clear()
    assert run(policy_path, "alice", [CODE])[0] == PASS
    assert fsynced == ["file", "folder"]  # a crash loses nothing written before (docs/store.md, "Atomic writes")
    fsynced.clear()
    with store.locked("alice") as section:  # the commands' store (backends.store_for)
        section.save(section.record)
    assert fsynced == ["file", "folder"]


def test_code_typed_with_spaces_and_from_the_previous_step(policy_path, store):
    enroll(store)
    assert run(policy_path, "alice", [" " + CODE[:3] + " " + CODE[3:] + "\n"])[0] == PASS
    enroll(store)
    assert run(policy_path, "alice", [totp.totp(KEY, T - 30)])[0] == PASS
    enroll(store)
    result, conv = run(policy_path, "alice", [totp.totp(KEY, T - 60)])  # outside window 1
    assert result == FAIL and conv.errors == [login.MSG_BAD]


def test_enrolled_user_is_asked_even_when_not_enforced(policy_path, store):
    enroll(store, "bob")
    result, conv = run(policy_path, "bob", ["000000" if CODE != "000000" else "111111"])
    assert result == FAIL and conv.prompts == [login.PROMPT]


def test_replayed_code_fails_with_the_replay_message(policy_path, store, logs):
    enroll(store)
    assert run(policy_path, "alice", [CODE])[0] == PASS
    result, conv = run(policy_path, "alice", [CODE], now=T + 10)
    assert result == FAIL
    assert conv.errors == [login.MSG_REPLAYED]
    assert store.load("alice").failures == [int(T) + 10]
    assert "result=replayed code" in logs[-1]
    # an older code of the window is a replay too, once a newer one was used
    result, conv = run(policy_path, "alice", [totp.totp(KEY, T - 30)], now=T + 10)
    assert result == FAIL and conv.errors == [login.MSG_REPLAYED]


def test_wrong_code_fails(policy_path, store, logs):
    enroll(store)
    wrong = "%06d" % ((int(CODE) + 1) % 10**6)
    result, conv = run(policy_path, "alice", [wrong])
    assert result == FAIL
    assert conv.errors == [login.MSG_BAD]
    record = store.load("alice")
    assert record.failures == [int(T)] and record.last_step == -1 and record.locked_until == 0
    assert logs[-1] == "pam_twofa(sshd:auth): user=alice rhost=192.0.2.10 result=bad code (failure 1 of 3)"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        " ",
        "abcdef",
        "12345",
        "1234567",
        "9" * 1000,
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "\u0661" * 6,
        "12\x0034",
        "-1",
        "1e5",
    ],
)
def test_bad_input_is_a_wrong_code(policy_path, store, typed):
    enroll(store)
    result, conv = run(policy_path, "alice", [typed])
    assert result == FAIL and conv.errors == [login.MSG_BAD]
    assert len(store.load("alice").failures) == 1


def test_lockout_after_max_failures_then_admin_unlock(policy_path, store, logs):
    enroll(store)
    wrong = "%06d" % ((int(CODE) + 1) % 10**6)
    for i in range(2):
        result, conv = run(policy_path, "alice", [wrong], now=T + i)
        assert result == FAIL and conv.errors == [login.MSG_BAD]
    result, conv = run(policy_path, "alice", [wrong], now=T + 2)
    assert result == FAIL
    assert len(conv.errors) == 1 and conv.errors[0].startswith("Too many wrong codes")
    assert "twofa-admin unlock alice" in conv.errors[0]
    locked = store.load("alice")
    assert locked.locked_until == int(T) + 2 + 900
    # while locked, even the right code fails and is not used up
    result, conv = run(policy_path, "alice", [CODE], now=T + 5)
    assert result == FAIL and conv.errors[0].startswith("Too many wrong codes")
    assert store.load("alice").last_step == -1
    assert "result=locked" in logs[-1]

    # the admin clears the lockout (what twofa-admin unlock does)
    def clear(record):
        record = record.copy()
        record.failures, record.locked_until = [], 0
        return record

    store.update("alice", clear)
    result, conv = run(policy_path, "alice", [CODE], now=T + 6)
    assert result == PASS and conv.errors == []


def test_lockout_expires_after_the_window(policy_path, store):
    enroll(store)
    wrong = "%06d" % ((int(CODE) + 1) % 10**6)
    for i in range(3):
        run(policy_path, "alice", [wrong], now=T + i)
    later = T + 2 + 901
    result, conv = run(policy_path, "alice", [totp.totp(KEY, later)], now=later)
    assert result == PASS
    assert store.load("alice").failures == [] and store.load("alice").locked_until == 0


def test_recovery_code_works_once(policy_path, store, logs):
    codes, salt, hashes = recovery.new_codes(3)
    enroll(store, recovery_salt=salt, recovery_hashes=hashes)
    result, conv = run(policy_path, "alice", [codes[1].upper()])
    assert result == PASS
    assert conv.infos and "2 left" in conv.infos[0]
    assert len(store.load("alice").recovery_hashes) == 2
    result, conv = run(policy_path, "alice", [codes[1]])
    assert result == FAIL and conv.errors == [login.MSG_BAD]
    assert all(code.replace("-", "") not in line and code not in line for line in logs for code in codes)


# -- exemptions and enforcement -----------------------------------------------------------


def test_exempt_network_is_ignored_without_prompt(make_policy, store, logs):
    path = make_policy("exempt:\n  networks: [10.0.0.0/8, '2001:db8::/32']\n")
    enroll(store)
    for rhost in ("10.1.2.3", "::ffff:10.9.9.9", "2001:db8::7"):
        result, conv = run(path, "alice", rhost=rhost)
        assert result == IGNORE and conv.prompts == [], rhost
    assert "exempt: client 10.1.2.3 is in network 10.0.0.0/8 (exempt.networks)" in logs[0]
    # outside the network, a hostname, or no address at all: asked
    for client in ("11.0.0.1", "10.example.com", None, ""):
        result, conv = run(path, "alice", [CODE], rhost=client)
        assert conv.prompts == [login.PROMPT], client
        enroll(store)


def test_exempt_user_and_groups(make_policy, store):
    path = make_policy(
        "enforce:\n  mode: all\n  unenrolled: deny\nexempt:\n  users: [bob]\n  groups: [robots, admins]\n"
    )
    enroll(store, "alice")
    enroll(store, "carol")
    for user in ("bob", "alice", "carol"):  # listed; supplementary group; primary group
        result, conv = run(path, user)
        assert result == IGNORE and conv.prompts == [] and conv.errors == [], user


def test_enforced_unenrolled_deny(make_policy, store, logs):
    path = make_policy("enforce:\n  mode: all\n  unenrolled: deny\n")
    result, conv = run(path, "bob")
    assert result == FAIL
    assert conv.prompts == []
    assert len(conv.errors) == 1 and "twofa-enroll" in conv.errors[0]
    assert "denied: not enrolled" in logs[-1] and "enforce.mode is all" in logs[-1]


def test_enforced_by_group(make_policy, store):
    path = make_policy("enforce:\n  mode: groups\n  groups: [admins]\n  unenrolled: deny\n")
    result, conv = run(path, "alice")  # member of admins
    assert result == FAIL and "twofa-enroll" in conv.errors[0]
    result, conv = run(path, "bob")  # not a member
    assert result == IGNORE and conv.prompts == [] and conv.errors == []


def test_an_enforce_group_that_does_not_resolve_applies_on_error(make_policy, store, logs):
    """Not "not a member" (issue 12): a typo or an NSS outage must not switch enforcement off."""
    path = make_policy("enforce:\n  mode: groups\n  groups: [admins, nosuchgroup]\n  unenrolled: deny\n")
    result, conv = run(path, "alice")  # member of admins: enforced, as before
    assert result == FAIL and "twofa-enroll" in conv.errors[0]
    result, conv = run(path, "bob")  # not in admins, and nosuchgroup cannot be read
    assert result == FAIL and conv.prompts == [] and conv.errors == [login.MSG_ERROR]
    assert [line for line in logs if "result=error: groups" in line and "enforce.groups nosuchgroup" in line]
    path = make_policy("enforce:\n  mode: groups\n  groups: [nosuchgroup]\n  unenrolled: deny\non_error: allow\n")
    result, conv = run(path, "bob")
    assert result == IGNORE and conv.errors == []
    assert "result=allowed without a code" in logs[-1]


def test_an_unresolved_group_does_not_touch_exempt_users(make_policy, store, logs):
    path = make_policy("enforce:\n  mode: groups\n  groups: [nosuchgroup]\nexempt:\n  users: [bob]\n")
    result, conv = run(path, "bob")
    assert result == IGNORE and conv.errors == []
    assert "result=exempt" in logs[-1]


def test_an_exempt_group_that_does_not_resolve_exempts_nobody_with_a_warning(make_policy, store, logs):
    path = make_policy("enforce:\n  mode: all\n  unenrolled: deny\nexempt:\n  groups: [nosuchgroup]\n")
    result, conv = run(path, "bob")
    assert result == FAIL and "twofa-enroll" in conv.errors[0]
    assert [line for line in logs if "result=exempt group not found" in line and "nosuchgroup" in line]


def test_a_group_list_that_cannot_be_read_is_an_error_in_groups_mode(make_policy, store, logs, monkeypatch):
    import os

    def broken(_user, _gid):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "getgrouplist", broken)
    real = REAL_LOOKUP("root")  # the real pwd lookup, with getgrouplist failing
    assert real is not None and real.gids == {real.gid} and real.groups_known is False
    monkeypatch.setattr(accounts, "lookup", lambda name: real if name == "root" else None)
    path = make_policy("enforce:\n  mode: groups\n  groups: [admins]\n  unenrolled: deny\n")
    result, conv = run(path, "root")
    assert result == FAIL and conv.errors == [login.MSG_ERROR]
    assert [line for line in logs if "getgrouplist failed" in line]


def test_unknown_user_is_prompted_and_fails_like_a_wrong_code(policy_path, store, logs):
    enroll(store)
    wrong = "%06d" % ((int(CODE) + 1) % 10**6)
    _result, known = run(policy_path, "alice", [wrong])
    for user in ("mallory", None, "", "bad\nname"):
        result, conv = run(policy_path, user, [CODE])
        assert result == FAIL, user
        assert conv.prompts == known.prompts and conv.errors == known.errors == [login.MSG_BAD], user
        assert "result=unknown user" in logs[-1]
    assert store.users() == ["alice"]


def test_a_name_that_is_not_a_safe_file_name_logs_in(policy_path, store, logs):
    enroll(store, "CORP\\dave")
    result, _conv = run(policy_path, "CORP\\dave", [CODE])
    assert result == PASS
    assert store.load("CORP\\dave").last_step == totp.time_step(T)
    assert "user=CORP\\dave " in logs[-1] and "result=success" in logs[-1]
    result, conv = run(policy_path, "CORP\\dave", [CODE])  # and its replay memory works like anyone's
    assert result == FAIL and conv.errors == [login.MSG_REPLAYED]


def test_conversation_returning_none_fails_without_counting(policy_path, store):
    enroll(store)
    result, conv = run(policy_path, "alice", [])
    assert result == FAIL
    assert conv.prompts == [login.PROMPT]
    assert store.load("alice").failures == []


# -- failures of the machinery ---------------------------------------------------------------


def test_broken_policy_fails_closed(make_policy, store, logs):
    path = make_policy("enforce:\n  mode: sometimes\n")
    result, conv = run(path, "alice", [CODE])
    assert result == FAIL
    assert conv.prompts == [] and conv.errors == [login.MSG_ERROR]
    assert any(f"{path}:2: enforce.mode: expected one of off, groups, all" in line for line in logs)


def test_broken_policy_with_on_error_allow_option_is_ignored(make_policy, store, logs):
    path = make_policy("enforce:\n  mode: sometimes\n")
    result, conv = run(path, "alice", [CODE], extra=["on_error=allow"])
    assert result == IGNORE
    assert conv.prompts == [] and conv.errors == []
    assert any("on_error: allow" in line for line in logs)


def test_missing_policy_fails_closed(tmp_path, logs):
    result, conv = run(str(tmp_path / "nope.yaml"), "alice", [CODE])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]
    assert any("no such policy file" in line for line in logs)


def test_unknown_module_argument_is_a_configuration_error(policy_path, store, logs):
    # More in test_login_options.py.
    result, conv = run(policy_path, "bob", extra=["debug"])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]
    assert "module argument 'debug' is not valid" in logs[0]


def test_corrupted_record_fails_with_a_generic_message(policy_path, store, logs):
    enroll(store)
    path = os.path.join(store.users_dir, "alice.rec")
    with open(path, "r+") as handle:
        handle.truncate(40)
    result, conv = run(policy_path, "alice", [CODE])
    assert result == FAIL
    assert conv.errors == [login.MSG_ERROR]
    shown = " ".join(conv.errors + conv.infos + conv.prompts)
    assert "corrupted" not in shown and path not in shown
    assert any("corrupted" in line and path in line for line in logs)
    with open(path, "rb") as handle:
        assert len(handle.read()) == 40  # left for the admin


def test_store_error_with_on_error_allow_in_the_policy(make_policy, store, logs):
    path = make_policy("on_error: allow\n")
    enroll(store)
    os.chmod(os.path.join(store.users_dir, "alice.rec"), 0o644)
    result, conv = run(path, "alice", [CODE])
    assert result == IGNORE and conv.errors == []
    assert any("error: store" in line for line in logs)


def test_unsafe_state_dir_fails_closed(policy_path, store, logs):
    enroll(store)
    os.chmod(store.state_dir, 0o755)
    result, conv = run(policy_path, "alice", [CODE])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]


def test_lock_file_symlink_fails_closed(policy_path, store, tmp_path, logs):
    enroll(store)
    lock = os.path.join(store.users_dir, "alice.lock")
    os.unlink(lock)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, lock)
    result, conv = run(policy_path, "alice", [CODE])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]
    assert victim.read_text() == "precious"


def test_no_log_line_contains_a_code_or_the_key(policy_path, store, logs):
    codes, salt, hashes = recovery.new_codes(2)
    enroll(store, recovery_salt=salt, recovery_hashes=hashes)
    wrong = "%06d" % ((int(CODE) + 7) % 10**6)
    typed = [CODE, CODE, wrong, wrong, wrong, CODE, codes[0]]
    for i, answer in enumerate(typed):
        run(policy_path, "alice", [answer], now=T + i)
    run(policy_path, "mallory", ["424242"])
    assert len(logs) >= len(typed) + 1
    secrets = {
        CODE,
        wrong,
        "424242",
        KEY.hex(),
        KEY.hex().upper(),
        base64.b32encode(KEY).decode().rstrip("="),
        repr(KEY),
        *codes,
        *(c.replace("-", "") for c in codes),
        salt.hex(),
        *(h.hex() for h in hashes),
    }
    for line in logs:
        for secret in secrets:
            assert secret not in line, (secret, line)


# -- concurrency: one code, many logins at once --------------------------------------------------


def _login_once(policy_path, start, results):
    start.wait(30)
    result, _conv = run(policy_path, "alice", [CODE])
    results.put(result)


def test_same_code_in_parallel_logins_succeeds_exactly_once(make_policy, store, monkeypatch):
    policy_path = make_policy("rate_limit:\n  max_failures: 100\n")
    monkeypatch.setattr(log, "emit", lambda priority, message: None)
    enroll(store)
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_login_once, args=(policy_path, start, results)) for _ in range(20)]
    for proc in procs:
        proc.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert sorted(outcomes) == sorted([PASS] + [FAIL] * 19)
    record = store.load("alice")
    assert record.last_step == totp.time_step(T)
    assert len(record.failures) == 19  # every other attempt counted as a (replayed) failure


@pytest.mark.parametrize("where", ["load", "locked"])
def test_a_rollback_refuses_the_login_even_with_on_error_allow(make_policy, store, logs, monkeypatch, where):
    """A store error with on_error: allow lets the user in without a code; a RolledBack never does."""
    from pam_twofa.store import RolledBack, StoreError

    enroll(store)
    path = make_policy("on_error: allow\n")

    def fail(error):
        def raiser(*args, **kwargs):
            raise error

        return raiser

    monkeypatch.setattr(FileStore, where, fail(StoreError("database: down")))
    result, conv = run(path, "alice", [CODE])
    assert result == IGNORE and "result=allowed without a code" in logs[-1]  # what on_error: allow does
    monkeypatch.setattr(FileStore, where, fail(RolledBack("rollback: user=alice shown version 1, seen 2")))
    result, conv = run(path, "alice", [CODE])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]
    assert "result=error: store rollback" in logs[-1] and "shown version 1" in logs[-1]
    assert not any("allowed without a code" in line for line in logs[-1:])
