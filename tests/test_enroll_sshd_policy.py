"""Self-service enrollment uses the policy the pam_twofa line of /etc/pam.d/sshd names (a scratch pam.d here)."""

import os
import pwd

import pytest

from pam_twofa.cli import UsageError
from pam_twofa.cli import enroll as enroll_cli
from pam_twofa.policy import DEFAULT_PATH
from pam_twofa.system import accounts, pamd
from pam_twofa.system.accounts import Account

MODULE = "/usr/lib/python3/dist-packages/pam_twofa/pam_module.py"


@pytest.fixture
def pam_dir(tmp_path, monkeypatch):
    folder = tmp_path / "pam.d"
    folder.mkdir()
    os.chmod(folder, 0o755)
    monkeypatch.setattr(pamd, "PAM_DIR", str(folder))  # in-process only: no option or variable moves it
    return folder


def write(folder, name, text, mode=0o644):
    path = folder / name
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.mark.root
def test_no_sshd_file_or_no_pam_twofa_line_is_the_default(pam_dir):
    assert enroll_cli.sshd_policy() == DEFAULT_PATH
    write(pam_dir, "sshd", "@include common-auth\n")
    write(pam_dir, "common-auth", "auth required pam_unix.so\n")
    assert enroll_cli.sshd_policy() == DEFAULT_PATH


@pytest.mark.root
def test_the_policy_of_the_sshd_line_is_used(pam_dir):
    write(pam_dir, "sshd", f"@include common-auth\nauth required pam_python.so {MODULE} policy=/etc/other.yaml\n")
    write(pam_dir, "common-auth", "auth required pam_unix.so\n")
    assert enroll_cli.sshd_policy() == "/etc/other.yaml"


@pytest.mark.root
def test_a_line_without_policy_is_the_default(pam_dir):
    write(pam_dir, "sshd", f"auth required pam_python.so {MODULE} on_error=deny\n")
    assert enroll_cli.sshd_policy() == DEFAULT_PATH


@pytest.mark.root
def test_a_line_in_an_included_file_counts(pam_dir):
    write(pam_dir, "sshd", "auth include twofa\n")
    write(pam_dir, "twofa", f"auth required pam_python.so {MODULE} policy=/etc/inc.yaml\n")
    assert enroll_cli.sshd_policy() == "/etc/inc.yaml"


@pytest.mark.root
def test_the_same_policy_twice_is_fine(pam_dir):
    line = f"auth required pam_python.so {MODULE} policy=/etc/x.yaml\n"
    write(pam_dir, "sshd", line + line)
    assert enroll_cli.sshd_policy() == "/etc/x.yaml"


@pytest.mark.root
def test_two_different_policies_are_refused(pam_dir):
    write(
        pam_dir,
        "sshd",
        f"auth required pam_python.so {MODULE} policy=/etc/a.yaml\nauth required pam_python.so {MODULE}\n",
    )
    with pytest.raises(UsageError, match="more than one policy: /etc/a.yaml .*, /etc/pam-twofa/policy.yaml") as info:
        enroll_cli.sshd_policy()
    assert info.value.code == 2


@pytest.mark.root
def test_a_bad_module_argument_is_refused(pam_dir):
    sshd = write(pam_dir, "sshd", f"auth required pam_python.so {MODULE} polcy=/etc/x.yaml\n")
    with pytest.raises(UsageError, match=f"{sshd}:1: module argument 'polcy=/etc/x.yaml' is not valid"):
        enroll_cli.sshd_policy()


@pytest.mark.root
@pytest.mark.parametrize("unsafe", ["file-writable", "folder-writable", "symlink", "include-writable"])
def test_unsafe_pam_files_are_refused(pam_dir, tmp_path, unsafe):
    line = f"auth required pam_python.so {MODULE} policy=/etc/x.yaml\n"
    if unsafe == "include-writable":
        write(pam_dir, "sshd", "@include twofa\n")
        write(pam_dir, "twofa", line, mode=0o666)
    else:
        sshd = write(pam_dir, "sshd", line)
    if unsafe == "file-writable":
        os.chmod(sshd, 0o664)
    elif unsafe == "folder-writable":
        os.chmod(pam_dir, 0o777)
    elif unsafe == "symlink":
        os.unlink(sshd)
        os.symlink(write(tmp_path, "elsewhere", line), sshd)
    with pytest.raises(UsageError, match="writable by others|symbolic link") as info:
        enroll_cli.sshd_policy()
    assert info.value.code == 2


@pytest.mark.root
def test_self_service_loads_the_sshd_policy(pam_dir, monkeypatch):
    """run_self_service reads the policy sshd names, not the default (it stops right after choosing)."""
    write(pam_dir, "sshd", f"auth required pam_python.so {MODULE} policy=/etc/other.yaml\n")
    uid = 65534
    monkeypatch.setenv("SUDO_UID", str(uid))
    monkeypatch.setattr(enroll_cli, "require_terminal", lambda: None)
    monkeypatch.setattr(pwd, "getpwuid", _pw)
    monkeypatch.setattr(accounts, "lookup", lambda name: Account(name, uid, uid, {uid}, "/nonexistent"))
    loaded = []

    def stop(path):
        loaded.append(path)
        raise UsageError("stop here")

    monkeypatch.setattr(enroll_cli, "_load", stop)
    with pytest.raises(UsageError, match="stop here"):
        enroll_cli.run_self_service(enroll_cli.parser().parse_args([]))
    assert loaded == ["/etc/other.yaml"]


def test_a_user_cannot_choose_the_pam_folder(pam_dir, monkeypatch):
    with pytest.raises(UsageError, match="only root"):
        enroll_cli.run_self_service(enroll_cli.parser().parse_args(["--policy", "/tmp/mine.yaml"]))
    assert not any("pam" in action.dest and "dir" in action.dest for action in enroll_cli.parser()._actions)


def _pw(uid):
    class Entry:
        pw_name = "nobody"

    return Entry()
