"""pamd: PAM service files of a scratch folder, includes followed, pam_python found where it is loaded."""

import os

import pytest

from pam_twofa.system import pamd
from pam_twofa.system.pamd import PamdError

MODULE = "/usr/lib/python3/dist-packages/pam_twofa/pam_module.py"
TWOFA = f"auth required pam_python.so {MODULE}"
CLEAN_COMMON_AUTH = """#
# /etc/pam.d/common-auth - authentication settings common to all services
auth	[success=1 default=ignore]	pam_unix.so nullok
auth	requisite			pam_deny.so
auth	required			pam_permit.so
"""


@pytest.fixture
def pam_dir(tmp_path):
    folder = tmp_path / "pam.d"
    folder.mkdir()
    os.chmod(folder, 0o755)
    return folder


def write(folder, name, text, mode=0o644):
    path = folder / name
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def flagged(folder):
    return [(service, entry.path_text()) for service, entry in pamd.pam_python_outside_sshd(str(folder))]


def test_direct_line_in_su_is_flagged_with_file_and_line(pam_dir):
    su = write(pam_dir, "su", "auth sufficient pam_rootok.so\n" + TWOFA + "\n@include common-auth\n")
    write(pam_dir, "common-auth", CLEAN_COMMON_AUTH)
    assert flagged(pam_dir) == [("su", f"{su}:2")]


def test_common_auth_is_flagged_through_every_service_that_includes_it(pam_dir):
    common = write(pam_dir, "common-auth", CLEAN_COMMON_AUTH + TWOFA + "\n")
    su = write(pam_dir, "su", "auth sufficient pam_rootok.so\n@include common-auth\n")
    login = write(pam_dir, "login", "auth optional pam_faildelay.so\nauth include common-auth\n")
    write(pam_dir, "sshd", "@include common-auth\n" + TWOFA + "\n")
    assert flagged(pam_dir) == [
        ("common-auth", f"{common}:6"),
        ("login", f"{login} includes common-auth: {common}:6"),
        ("su", f"{su} includes common-auth: {common}:6"),
    ]  # sshd loads it too, through common-auth and directly: that is the one safe place


def test_substack_and_nested_includes(pam_dir):
    inner = write(pam_dir, "py-auth", TWOFA + "\n")
    write(pam_dir, "system-auth", "auth required pam_env.so\n@include py-auth\n")
    chsh = write(pam_dir, "chsh", "auth substack system-auth\n")
    [(service, entry)] = [pair for pair in pamd.pam_python_outside_sshd(str(pam_dir)) if pair[0] == "chsh"]
    assert entry.path_text() == f"{chsh} includes system-auth, which includes py-auth: {inner}:1"
    assert [step.line for step in entry.chain] == [1, 2]


def test_include_keeps_only_lines_of_its_type(pam_dir):
    write(pam_dir, "common-py", "session optional pam_python.so /x/pam_twofa/pam_module.py\n")
    write(pam_dir, "passwd", "auth include common-py\n")
    flagged_services = [service for service, _entry in pamd.pam_python_outside_sshd(str(pam_dir))]
    assert "passwd" not in flagged_services and "common-py" in flagged_services


def test_cycle_is_cut_and_noted(pam_dir):
    write(pam_dir, "a", "@include b\nauth required pam_permit.so\n")
    b = write(pam_dir, "b", "@include a\nauth optional /lib/security/pam_python.so /x.py\n")
    problems: list[str] = []
    found = pamd.pam_python_outside_sshd(str(pam_dir), problems=problems)
    assert ("a", f"{pam_dir / 'a'} includes b: {b}:2") in [(s, e.path_text()) for s, e in found]
    assert any("cycle" in problem for problem in problems)


def test_continuation_lines_comments_brackets_and_dash_types(pam_dir):
    text = (
        "# auth required pam_python.so /commented/out.py\n"
        "auth required pam_unix.so # pam_python.so in a comment\n"
        "auth [success=ok new_authtok_reqd=ok ignore=ignore default=bad] \\\n"
        "    pam_python.so \\\n"
        f"    {MODULE} [policy=/etc/pam-twofa/a b.yaml]\n"
        "-auth optional /usr/lib/x86_64-linux-gnu/security/pam_python.so /y.py\n"
    )
    path = write(pam_dir, "chfn", text)
    found = pamd.entries("chfn", str(pam_dir))
    assert [(e.line, e.module) for e in found] == [
        (2, "pam_unix.so"),
        (3, "pam_python.so"),
        (6, "/usr/lib/x86_64-linux-gnu/security/pam_python.so"),
    ]
    assert found[1].control == "[success=ok new_authtok_reqd=ok ignore=ignore default=bad]"
    assert found[1].args == (MODULE, "policy=/etc/pam-twofa/a b.yaml")
    assert [e.where for s, e in pamd.pam_python_outside_sshd(str(pam_dir))] == [f"{path}:3", f"{path}:6"]


def test_sshd_including_clean_common_auth_is_fine(pam_dir):
    write(pam_dir, "common-auth", CLEAN_COMMON_AUTH)
    write(pam_dir, "su", "auth sufficient pam_rootok.so\n@include common-auth\n")
    sshd = write(
        pam_dir, "sshd", "@include common-auth\n" + TWOFA + " policy=/etc/x.yaml\naccount include common-auth\n"
    )
    assert flagged(pam_dir) == []
    [entry] = pamd.twofa_entries("sshd", str(pam_dir))
    assert entry.where == f"{sshd}:2" and entry.args == (MODULE, "policy=/etc/x.yaml")


def test_backups_hidden_files_and_folders_are_not_services(pam_dir):
    write(pam_dir, "su.dpkg-old", TWOFA + "\n")
    write(pam_dir, "su~", TWOFA + "\n")
    write(pam_dir, ".su.swp", TWOFA + "\n")
    (pam_dir / "sub").mkdir()
    assert pamd.service_names(str(pam_dir)) == []


def test_missing_include_is_noted_not_fatal(pam_dir):
    write(pam_dir, "su", "@include nowhere\n" + TWOFA + "\n")
    problems: list[str] = []
    assert len(pamd.pam_python_outside_sshd(str(pam_dir), problems=problems)) == 1
    assert any("nowhere" in problem and "no such file" in problem for problem in problems)


def test_default_folder_is_the_module_constant(pam_dir, monkeypatch):
    write(pam_dir, "sshd", TWOFA + "\n")
    monkeypatch.setattr(pamd, "PAM_DIR", str(pam_dir))
    assert len(pamd.twofa_entries()) == 1


@pytest.mark.root
@pytest.mark.parametrize("unsafe", ["group-writable", "symlink", "folder-writable"])
def test_checked_reading_refuses_unsafe_files(pam_dir, tmp_path, unsafe):
    path = write(pam_dir, "sshd", TWOFA + "\n")
    if unsafe == "group-writable":
        os.chmod(path, 0o664)
    elif unsafe == "symlink":
        real = write(tmp_path, "real-sshd", TWOFA + "\n")
        os.unlink(path)
        os.symlink(real, path)
    else:
        os.chmod(pam_dir, 0o777)
    assert len(pamd.twofa_entries("sshd", str(pam_dir))) == 1  # unchecked (check's scan) reads it
    with pytest.raises(PamdError, match="writable by others|symbolic link"):
        pamd.twofa_entries("sshd", str(pam_dir), checked=True)


def test_split_fields():
    assert pamd.split_fields("auth [a=b c=d] mod.so x [y z\\] w] q") == [
        "auth",
        "[a=b c=d]",
        "mod.so",
        "x",
        "y z] w",
        "q",
    ]
