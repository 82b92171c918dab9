"""twofa-admin's errors and exit codes (docs/admin-guide.md, issue 5 "Must show" 4), through the INSTALLED command.

Every case runs the installed ``twofa-admin`` as a subprocess, as an
administrator would, and checks the documented contract of
pam_twofa/cli/__init__.py: 0 ok, 1 usage / unknown user / not root,
2 policy invalid, 3 store unreadable; one line on stderr (one line per policy
error), nothing on stdout, and never a traceback.
"""

import os
import re
import shutil
import subprocess

import pytest
from support.records import stored

from pam_twofa.core.record import Record
from pam_twofa.store.files import FileStore

pytestmark = pytest.mark.root  # root-owned files, and commands run as nobody through setpriv

# /usr/bin from the Debian package; /usr/local/bin from an older pip install
ADMIN = shutil.which("twofa-admin", path="/usr/bin:/usr/local/bin") or "/usr/bin/twofa-admin"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
UNKNOWN = "nosuchuser-q7"


def admin(*argv, as_nobody=False, stdin=""):
    """(exit code, stdout, stderr) of ``twofa-admin ARGV``; asserts there is never a traceback."""
    cmd = (NOBODY if as_nobody else []) + [ADMIN, *map(str, argv)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "NSS_", "VIRTUAL_ENV"))}
    env["LC_ALL"] = "C.UTF-8"
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].strip(), err
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def prerequisites():
    assert os.geteuid() == 0, "these tests run twofa-admin as root (and as nobody through setpriv)"
    assert os.access(ADMIN, os.X_OK), f"{ADMIN} is not installed: run bash scripts/install.sh"
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed for the non-root case"


@pytest.fixture
def pol(make_policy):
    """A valid policy (state folder tmp_path/state, 0700)."""
    return make_policy("version: 1\nenforce:\n  mode: all\n  unenrolled: deny\n")


# -- root only ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["check"],
        ["disable", "alice", "--yes"],
        ["unlock", "alice"],
        ["explain", "alice", "--rhost", "10.0.0.1"],
        ["email", "alice", "alice@example.org"],
        ["invite", "alice"],
        ["invite", "--unenrolled", "--dry-run"],
        ["pam-config"],
    ],
)
def test_non_root_gets_one_line_and_exit_1_before_anything_is_read(argv):
    # The policy does not exist: had the command read it, the error would be
    # about the policy (exit 2), not about root.
    missing = "/nonexistent-twofa/policy.yaml"
    code, out, err = admin(*argv, "--policy", missing, as_nobody=True)
    assert code == 1, (code, out, err)
    line = one_line(err)
    assert "root" in line, line
    assert "policy" not in line and missing not in line, line
    assert out == ""


def test_non_root_error_even_with_a_readable_policy(pol):
    """Control for the test above: with a policy root can read, nobody still gets only the root error."""
    code, _out, err = admin("status", "--policy", pol)
    assert code == 0, err  # as root: fine
    code, out, err = admin("status", "--policy", pol, as_nobody=True)
    assert code == 1 and "must be run as root" in one_line(err) and out == ""


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["status", "--help"], ["explain", "--help"], ["disable", "-h"]])
def test_help_works_for_non_root(argv):
    code, out, err = admin(*argv, as_nobody=True)
    assert code == 0, err
    assert out.startswith("usage: twofa-admin"), out
    assert err == ""


def test_top_level_help_documents_the_exit_codes_and_every_command():
    code, out, _err = admin("--help", as_nobody=True)
    assert code == 0
    assert "exit codes" in out and "2 policy invalid" in out and "3 store unreadable" in out, out
    for command in ("check", "disable", "status", "unlock", "explain", "email", "invite", "pam-config"):
        assert command in out, command


# -- unknown users --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["disable", UNKNOWN, "--yes"],
        ["status", UNKNOWN],
        ["status", UNKNOWN, "--json"],
        ["unlock", UNKNOWN],
        ["explain", UNKNOWN],
        ["explain", UNKNOWN, "--rhost", "192.0.2.1"],
        ["email", UNKNOWN, "someone@example.org"],
        ["invite", UNKNOWN],
        ["invite", "root", UNKNOWN, "--dry-run"],
    ],
)
def test_unknown_user_is_one_line_exit_1(pol, tmp_path, argv):
    code, out, err = admin(*argv, "--policy", pol)
    assert code == 1, (code, out, err)
    line = one_line(err)
    assert line.startswith("twofa-admin: ") and UNKNOWN in line and "unknown user" in line, line
    assert out == ""
    assert not (tmp_path / "state" / "users" / f"{UNKNOWN}.rec").exists()  # nothing was created


@pytest.mark.parametrize("name", ["a\tb", "x\x1b[2J", ""])
def test_invalid_user_name_is_one_line_exit_1(pol, name):
    code, out, err = admin("status", "--policy", pol, "--", name)
    assert code == 1, (code, out, err)
    assert "user name" in one_line(err)
    assert out == ""


@pytest.mark.parametrize("name", ["../etc", "a b", "-rf", "CORP\\x"])
def test_names_that_are_not_file_names_are_looked_up_like_any_other(pol, name, tmp_path):
    code, out, err = admin("status", "--policy", pol, "--", name)
    assert code == 1, (code, out, err)
    assert "unknown user" in one_line(err)
    assert out == ""
    assert not (tmp_path / "state" / "users").exists() or not os.listdir(tmp_path / "state" / "users")


# -- the policy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["check"],
        ["explain", "root"],
        ["disable", "root", "--yes"],
        ["unlock", "root"],
        ["email", "root", "root@example.org"],
        ["invite", "root"],
        ["invite", "--unenrolled"],
    ],
)
def test_missing_policy_is_exit_2_naming_the_file(tmp_path, argv):
    missing = tmp_path / "etc" / "no-policy.yaml"
    (tmp_path / "etc").mkdir(mode=0o755)
    code, out, err = admin(*argv, "--policy", missing)
    assert code == 2, (code, out, err)
    line = one_line(err)
    assert line.startswith(f"{missing}: ") and "no such policy file" in line, line
    assert out == ""


@pytest.mark.parametrize("command", [["check"], ["status"], ["explain", "root"]])
def test_broken_policy_is_exit_2_with_file_line_key_errors(make_policy, command):
    path = make_policy(
        "version: 1\nenforce:\n  mode: sometimes\n  groups: staff\nexempt:\n  networks: ['10.0.0.0/33']\ncolour: blue\n"
    )
    code, out, err = admin(*command, "--policy", path)
    assert code == 2, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 4, err
    for line, (number, key) in zip(
        lines, [(3, "enforce.mode"), (4, "enforce.groups"), (6, "exempt.networks"), (7, "colour")]
    ):
        assert re.match(rf"{re.escape(path)}:{number}: {re.escape(key)}\b", line), line
    assert out == ""


def test_policy_yaml_syntax_error_is_exit_2_with_the_line(make_policy):
    path = make_policy("version: 1\nenforce:\n  mode: [all\n")
    code, out, err = admin("status", "--policy", path)
    assert code == 2, (code, out, err)
    assert re.match(rf"{re.escape(path)}:\d+: ", one_line(err)), err
    assert out == ""


@pytest.mark.parametrize(
    "body",
    ["", "\n", "# only comments\n# version: 1\n", "~\n", "enforce:\n  mode: all\n", "vers", "version:"],
    ids=["empty", "blank", "comments", "null", "no-version", "truncated-4", "truncated-8"],
)
def test_check_refuses_an_empty_or_versionless_policy_with_exit_2(make_policy, body):
    path = make_policy(body, verbatim=True)
    code, out, err = admin("check", "--policy", path)
    assert code == 2 and out == "", (code, out, err)
    line = one_line(err)
    assert line.startswith(f"{path}:1: "), line
    if body not in ("vers", "version:"):  # a cut inside the first line is some other error on line 1
        assert line == (
            f'{path}:1: version: missing; add "version: 1" as the first line '
            "(an empty or truncated policy is refused so that an accident cannot switch 2FA off)"
        )


def test_check_ok_is_exit_0(pol):
    code, out, err = admin("check", "--policy", pol)
    assert code == 0 and out.startswith(f"{pol}: OK") and err == ""


# -- malformed arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["pam-config", "--stack", "telepathy"],
        ["status", "--colour"],
        ["disable"],
        ["email", "root"],
        ["explain", "root", "--rhost"],
        ["unlock", "root", "extra"],
    ],
)
def test_malformed_arguments_are_one_line_exit_1(pol, argv):
    code, out, err = admin(*argv, "--policy", pol)
    assert code == 1, (code, out, err)
    line = one_line(err)
    assert line.startswith("twofa-admin: ") and "--help" in line, line
    assert out == ""


def test_bad_stack_names_the_choices(pol):
    _code, _out, err = admin("pam-config", "--stack", "telepathy", "--policy", pol)
    assert "telepathy" in err and "password" in err and "key" in err, err


@pytest.mark.parametrize(
    "address", ["not-an-address", "a@", "@example.org", "a b@example.org", "x@exa_mple.org", "a@b@"]
)
def test_invalid_email_address_is_exit_1_and_stores_nothing(pol, tmp_path, address):
    code, out, err = admin("email", "root", address, "--policy", pol)
    assert code == 1, (code, out, err)
    assert "not a valid email address" in one_line(err), err
    assert out == ""
    assert not (tmp_path / "state" / "users" / "root.rec").exists()


def test_valid_email_address_is_stored(pol, tmp_path):
    """Control for the test above: the same command with a good address works."""
    code, out, err = admin("email", "root", "root@example.org", "--policy", pol)
    assert code == 0, err
    assert "root@example.org" in out
    assert stored(FileStore(str(tmp_path / "state")), "root").email == "root@example.org"


def test_disable_without_yes_and_without_a_terminal_is_refused_and_keeps_the_record(pol, tmp_path):
    store = FileStore(str(tmp_path / "state"))
    store.update("root", lambda _old: Record("root", key=bytes(range(20)), enrolled_at=1_700_000_000))
    assert stored(store, "root").enrolled
    code, out, err = admin("disable", "root", "--policy", pol)  # stdin is a pipe, not a terminal
    assert code == 1, (code, out, err)
    assert "--yes" in one_line(err)
    assert stored(store, "root").enrolled  # nothing was removed
    code, out, err = admin("disable", "root", "--yes", "--policy", pol)  # control
    assert code == 0, err
    assert store.load("root") is None


# -- the store ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "root"],
        ["unlock", "root"],
        ["disable", "root", "--yes"],
        ["explain", "root"],
        ["email", "root", "root@example.org"],
    ],
)
def test_state_folder_readable_by_others_is_exit_3(pol, tmp_path, argv):
    state = tmp_path / "state"
    os.chmod(state, 0o755)
    code, out, err = admin(*argv, "--policy", pol)
    assert code == 3, (code, out, err)
    line = one_line(err)
    assert str(state) in line and "0700" in line, line
    assert out == ""


def test_corrupted_record_is_exit_3_naming_the_file(pol, tmp_path):
    store = FileStore(str(tmp_path / "state"))
    store.update("root", lambda _old: Record("root", email="root@example.org"))
    record = tmp_path / "state" / "users" / "root.rec"
    assert record.is_file()
    record.write_bytes(b"\xff\x00 not a record\n")
    os.chmod(record, 0o600)
    code, out, err = admin("status", "--json", "--policy", pol)
    assert code == 3, (code, out, err)
    assert str(record) in one_line(err), err
    assert out == ""


def test_missing_state_folder_is_exit_3(make_policy, tmp_path):
    path = make_policy(f"storage:\n  state_dir: {tmp_path}/no-state\n")
    code, out, err = admin("unlock", "root", "--policy", path)
    assert code == 3, (code, out, err)
    assert "state folder is missing" in one_line(err), err
