"""twofa-admin check / unlock / pam-config, run through pam_twofa.cli.run as the entry point does."""

import os
import subprocess
import sys

import pytest
from support.records import stored

from pam_twofa.cli import admin, pamconfig, run
from pam_twofa.core.record import Record
from pam_twofa.store.files import FileStore
from pam_twofa.system import accounts
from pam_twofa.system.accounts import Account

KEY = bytes(range(20))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``twofa-admin ARGV``; never a traceback."""
    try:
        code = run(admin.main, list(argv))
    except SystemExit as exc:  # argparse --help / usage errors
        assert isinstance(exc.code, int), exc.code
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out and "Traceback" not in err
    return code, out, err


@pytest.fixture(autouse=True)
def fake_accounts(monkeypatch):
    users = {"alice": Account("alice", 1001, 1001, {1001}, "/home/alice")}
    monkeypatch.setattr(accounts, "lookup", lambda name: users.get(name))
    groups = {"admins": 2000, "wheel": 10}
    monkeypatch.setattr(accounts, "group_ids", lambda names: {n: groups.get(n) for n in names})


# -- check ------------------------------------------------------------------------------


@pytest.mark.root
def test_check_ok(capsys, make_policy):
    path = make_policy("enforce:\n  mode: all\n")
    code, out, err = cli(capsys, "--policy", path, "check")
    assert code == 0
    assert out.startswith(f"{path}: OK") and "all" in out
    assert err == ""


@pytest.mark.root
def test_check_accepts_policy_after_the_command(capsys, make_policy):
    path = make_policy("enforce:\n  mode: groups\n  groups: [admins]\n")
    code, out, err = cli(capsys, "check", "--policy", path)
    assert code == 0 and out.startswith(f"{path}: OK") and err == ""


@pytest.mark.root
def test_check_broken_policy(capsys, make_policy):
    path = make_policy("version: 1\nenforce:\n  mode: sometimes\n  groups: admins\ncolour: blue\n")
    code, out, err = cli(capsys, "--policy", path, "check")
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        f"{path}:3: enforce.mode: expected one of off, groups, all",
        f"{path}:4: enforce.groups: expected a list of group names",
        f"{path}:5: colour: unknown key; allowed here: version, enforce, exempt, totp, rate_limit, trust, notify, email, storage, on_error",
    ]


@pytest.mark.root
def test_check_reports_an_enforce_group_that_does_not_resolve_as_an_error(capsys, make_policy):
    path = make_policy("enforce:\n  mode: groups\n  groups: [admins, admnis]\n")
    code, out, err = cli(capsys, "check", "--policy", path)
    assert code == 2, (out, err)
    assert err.splitlines() == [
        f"{path}: enforce.groups: group 'admnis' does not resolve on this system (no such group, or the group "
        "database is not answering): logins of users not in another enforce group will get on_error (deny); "
        "fix the name or the group source"
    ]


@pytest.mark.root
def test_check_warns_of_an_exempt_group_that_does_not_resolve(capsys, make_policy):
    path = make_policy("enforce:\n  mode: all\n  groups: [ghost]\nexempt:\n  groups: [wheel, braekglass]\n")
    code, out, err = cli(capsys, "check", "--policy", path)
    assert code == 0 and err == ""
    assert f"{path}: warning: exempt.groups: group 'braekglass' does not resolve on this system: it exempts nobody" in (
        out.splitlines()
    )
    assert "ghost" not in out  # enforce.groups are not used with mode: all


@pytest.mark.root
def test_check_yaml_syntax_error(capsys, make_policy):
    path = make_policy("version: 1\nenforce:\n\tmode: all\n")
    code, out, err = cli(capsys, "check", "--policy", path)
    assert code == 2
    assert err.splitlines() == [f"{path}:3: YAML syntax error: found character '\\t' that cannot start any token"]


@pytest.mark.root
def test_check_revalidates_even_with_a_cache(capsys, make_policy):
    path = make_policy("enforce:\n  mode: all\n")
    assert cli(capsys, "check", "--policy", path)[0] == 0
    path = make_policy("enforce:\n  mode: nope\n")
    code, _out, err = cli(capsys, "check", "--policy", path)
    assert code == 2 and err.startswith(f"{path}:2: enforce.mode:")


@pytest.mark.root
@pytest.mark.parametrize("how", ["missing", "world-writable", "symlink"])
def test_check_unusable_policy_file_is_one_line(capsys, tmp_path, make_policy, how):
    path = make_policy("")
    if how == "missing":
        path = str(tmp_path / "etc" / "nope.yaml")
    elif how == "world-writable":
        os.chmod(path, 0o666)
    else:
        link = str(tmp_path / "etc" / "link.yaml")
        os.symlink(path, link)
        path = link
    code, out, err = cli(capsys, "check", "--policy", path)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(path + ": ")


def test_not_root_is_a_clear_error(capsys, make_policy, monkeypatch):
    path = make_policy("")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, err = cli(capsys, "check", "--policy", path)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and "root" in err


# -- unlock -------------------------------------------------------------------------------


@pytest.mark.root
def test_unlock_clears_failures_and_lockout(capsys, scratch_policy, state_dir, logs):
    store = FileStore(state_dir)
    before = Record("alice", key=KEY, last_step=77, failures=[1_700_000_000, 1_700_000_001], locked_until=4_000_000_000)
    store.update("alice", lambda old: before)
    code, out, err = cli(capsys, "unlock", "alice", "--policy", scratch_policy)
    assert code == 0 and err == ""
    assert "alice" in out and "unlocked" in out
    after = stored(store, "alice")
    assert after.failures == [] and after.locked_until == 0
    assert after.key == KEY and after.last_step == 77  # nothing else changed
    assert any("unlock" in line and "user=alice" in line for line in logs)


@pytest.mark.root
def test_unlock_user_without_record(capsys, scratch_policy, state_dir):
    code, out, err = cli(capsys, "--policy", scratch_policy, "unlock", "alice")
    assert code == 0 and err == "" and "alice" in out
    assert FileStore(state_dir).load("alice") is None


@pytest.mark.root
@pytest.mark.parametrize("user", ["mallory", "../etc/passwd", "caf\u00e9", "x" * 300])
def test_unlock_unknown_user_is_one_line_exit_1(capsys, scratch_policy, state_dir, user):
    code, out, err = cli(capsys, "--policy", scratch_policy, "unlock", user)
    assert code == 1, err
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "user" in err
    assert not os.path.exists(os.path.join(state_dir, "users")) or os.listdir(os.path.join(state_dir, "users")) == []


@pytest.mark.root
def test_unlock_known_only_to_the_store(capsys, scratch_policy, state_dir):
    """An account deleted from the system can still be unlocked (its record is there)."""
    FileStore(state_dir).update("ghost", lambda old: Record("ghost", key=KEY, failures=[1], locked_until=5))
    code, _out, err = cli(capsys, "--policy", scratch_policy, "unlock", "ghost")
    assert code == 0 and err == ""
    assert stored(FileStore(state_dir), "ghost").failures == []


@pytest.mark.root
def test_unlock_with_broken_policy(capsys, make_policy):
    path = make_policy("on_error: maybe\n")
    code, out, err = cli(capsys, "--policy", path, "unlock", "alice")
    assert code == 2 and out == ""
    assert err.splitlines() == [f"{path}:1: on_error: expected one of deny, allow"]


@pytest.mark.root
def test_unlock_with_corrupted_record(capsys, scratch_policy, state_dir):
    store = FileStore(state_dir)
    store.update("alice", lambda old: Record("alice", key=KEY, failures=[1]))
    path = os.path.join(store.users_dir, "alice.rec")
    with open(path, "w") as handle:
        handle.write("garbage")
    code, out, err = cli(capsys, "--policy", scratch_policy, "unlock", "alice")
    assert code == 3 and out == ""
    assert len(err.splitlines()) == 1 and path in err and "corrupted" in err


@pytest.mark.root
def test_unlock_with_unsafe_state_dir(capsys, scratch_policy, state_dir):
    os.chmod(state_dir, 0o777)
    code, _out, err = cli(capsys, "--policy", scratch_policy, "unlock", "alice")
    assert code == 3
    assert len(err.splitlines()) == 1 and state_dir in err


# -- pam-config -----------------------------------------------------------------------------


def _auth_line(out):
    lines = [line for line in out.splitlines() if "pam_python.so" in line and not line.startswith("#")]
    assert len(lines) == 1, out
    return lines[0].split()


@pytest.mark.root
def test_pam_config_password_stack_default_policy(capsys):
    code, out, err = cli(capsys, "pam-config")
    assert code == 0 and err == ""
    words = _auth_line(out)
    assert words[:2] == ["auth", "required"]
    # the bare name: it resolves on Debian 12 (/lib/security) and 13 (multiarch folder) alike
    assert words[2] == "pam_python.so" == pamconfig.pam_python_path()
    assert words[3] == os.path.join(REPO, "pam_twofa", "pam_module.py") and os.path.isfile(words[3])
    assert not any(w.startswith("policy=") for w in words)
    assert "AuthenticationMethods keyboard-interactive" in out.splitlines()
    assert "UsePAM yes" in out and "KbdInteractiveAuthentication yes" in out
    assert "pam_permit.so" not in out


@pytest.mark.root
def test_pam_config_password_stack_with_policy(capsys, scratch_policy):
    code, out, err = cli(capsys, "--policy", scratch_policy, "pam-config", "--stack", "password")
    assert code == 0 and err == ""
    words = _auth_line(out)
    assert words[4:] == ["policy=" + scratch_policy]
    assert "AuthenticationMethods keyboard-interactive" in out.splitlines()


@pytest.mark.root
def test_pam_config_key_stack(capsys, scratch_policy):
    code, out, err = cli(capsys, "pam-config", "--stack", "key", "--policy", scratch_policy)
    assert code == 0 and err == ""
    words = _auth_line(out)
    assert words[2] == "pam_python.so"
    assert words[3].endswith("/pam_twofa/pam_module.py") and os.path.isfile(words[3])
    assert words[4:] == ["policy=" + scratch_policy]
    lines = out.splitlines()
    assert "AuthenticationMethods publickey,keyboard-interactive:pam" in lines
    assert "auth required pam_permit.so" in lines
    # the code module comes before pam_permit in the stack
    assert lines.index(" ".join(words)) < lines.index("auth required pam_permit.so")
    assert "PubkeyAuthentication yes" in lines


@pytest.mark.root
def test_pam_config_relative_policy_is_made_absolute(capsys, scratch_policy, monkeypatch):
    folder, name = os.path.split(scratch_policy)
    monkeypatch.chdir(folder)
    code, out, _err = cli(capsys, "pam-config", "--policy", name)
    assert code == 0
    assert _auth_line(out)[4:] == ["policy=" + scratch_policy]


def test_pam_config_lines_are_usable_as_printed(capsys):
    _code, out, _err = cli(capsys, "pam-config", "--stack", "key")
    for line in out.splitlines():
        if line.startswith("auth "):
            assert len(line.split()) >= 3 and "\t" not in line


# -- malformed arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["unlock"], ["pam-config", "--stack", "telnet"], ["check", "--policy"], ["unlock", "a", "b"]],
)
def test_malformed_arguments_exit_non_zero_without_traceback(capsys, argv):
    code, _out, err = cli(capsys, *argv)
    assert code not in (0, None)
    assert err.strip()


def test_help(capsys):
    code, out, _err = cli(capsys, "--help")
    assert code == 0
    for command in ("check", "unlock", "pam-config"):
        assert command in out


# -- names as the directory spells them ---------------------------------------------------


@pytest.mark.root
def test_commands_act_on_the_accounts_own_spelling(capsys, make_policy, monkeypatch):
    """With a case-insensitive directory, ``unlock ALICE`` must clear the one record logins use."""
    alice = Account("alice", 1001, 1001, {1001}, "/home/alice")
    monkeypatch.setattr(accounts, "lookup", lambda name: alice if name.lower() == "alice" else None)
    path = make_policy("")
    store = FileStore(str(os.path.dirname(os.path.dirname(path))) + "/state")
    store.update("alice", lambda _old: Record("alice", key=KEY, failures=[2_000_000_000], locked_until=2_000_000_900))
    code, out, _err = cli(capsys, "--policy", path, "unlock", "ALICE")
    assert code == 0, out
    assert stored(store, "alice").locked_until == 0 and store.users() == ["alice"]
    code, out, _err = cli(capsys, "--policy", path, "disable", "Alice", "--yes")
    assert code == 0, out
    assert store.users() == []


def test_the_commands_of_the_file_backend_do_not_load_the_database_libraries():
    # twofa-admin parses the db subcommands' arguments itself, so that status, check and the
    # other commands on a file-backend host never pay for psycopg and cryptography.
    script = (
        "import sys\n"
        "from pam_twofa.cli import admin\n"
        "admin.parser().parse_args(['status'])\n"
        "admin.parser().parse_args(['db', 'check'])\n"
        "print(sorted(m for m in ('psycopg', 'cryptography', 'pam_twofa.fleet.database', 'pam_twofa.fleet.key',"
        " 'pam_twofa.cli.db') if m in sys.modules))\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "[]", out.stderr
