"""twofa-admin check over a scratch /etc/pam.d: bad pam_twofa arguments in sshd, pam_python.so outside sshd."""

import os

import pytest

from pam_twofa.cli import admin, run
from pam_twofa.system import pamd

MODULE = "/usr/lib/python3/dist-packages/pam_twofa/pam_module.py"
HOLE = "pam_python.so is loaded outside sshd — a local root hole (see docs/threat-model.md); remove it"


@pytest.fixture
def pam_dir(tmp_path, monkeypatch):
    folder = tmp_path / "pam.d"
    folder.mkdir()
    os.chmod(folder, 0o755)
    monkeypatch.setattr(pamd, "PAM_DIR", str(folder))  # so nothing reads the host's /etc/pam.d
    return folder


def write(folder, name, text):
    (folder / name).write_text(text)
    return str(folder / name)


def check(capsys, policy, *extra):
    code = run(admin.main, ["check", "--policy", policy, *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.root
def test_clean_sshd_stack_is_ok(capsys, pam_dir, scratch_policy):
    write(pam_dir, "common-auth", "auth required pam_unix.so\n")
    write(pam_dir, "sshd", f"@include common-auth\nauth required pam_python.so {MODULE} policy={scratch_policy}\n")
    write(pam_dir, "su", "auth sufficient pam_rootok.so\n@include common-auth\n")
    code, out, err = check(capsys, scratch_policy)
    assert code == 0 and err == ""
    assert out.startswith(f"{scratch_policy}: OK") and "warning" not in out


@pytest.mark.parametrize(
    "args, named",
    [
        ("polcy=/etc/x.yaml", "polcy=/etc/x.yaml"),
        ("policy=relative/path", "policy=relative/path"),
        ("policy = /etc/x.yaml", "policy"),
        ("on_error=maybe", "on_error=maybe"),
    ],
)
@pytest.mark.root
def test_bad_module_argument_in_sshd_is_an_error_with_file_and_line(capsys, pam_dir, scratch_policy, args, named):
    sshd = write(pam_dir, "sshd", f"@include common-auth\n\nauth required pam_python.so {MODULE} {args}\n")
    write(pam_dir, "common-auth", "auth required pam_unix.so\n")
    code, out, err = check(capsys, scratch_policy)
    assert code == 2
    assert out.startswith(f"{scratch_policy}: OK")  # the policy itself is fine
    assert err.splitlines()[0].startswith(f"{sshd}:3: pam_twofa module argument '{named}' is not valid: ")


@pytest.mark.root
def test_bad_argument_in_an_included_file_is_named_where_it_is(capsys, pam_dir, scratch_policy):
    inner = write(pam_dir, "twofa-auth", f"auth required pam_python.so {MODULE} debug\n")
    write(pam_dir, "sshd", "auth include twofa-auth\n")
    code, _out, err = check(capsys, scratch_policy)
    assert code == 2 and err.startswith(f"{inner}:1: pam_twofa module argument 'debug' is not valid")


@pytest.mark.root
def test_pam_python_outside_sshd_is_an_error_naming_the_chain(capsys, pam_dir, scratch_policy):
    common = write(
        pam_dir, "common-auth", "auth required pam_unix.so\n" * 19 + f"auth required pam_python.so {MODULE}\n"
    )
    su = write(pam_dir, "su", "auth sufficient pam_rootok.so\n@include common-auth\n")
    chsh = write(pam_dir, "chsh", "auth substack py\n")
    py = write(pam_dir, "py", "auth optional /lib/security/pam_python.so /root/bare.py\n")
    write(pam_dir, "sshd", "@include common-auth\n")
    code, _out, err = check(capsys, scratch_policy)
    assert code == 2
    assert err.splitlines() == [
        f"{chsh} includes py: {py}:1: {HOLE}",
        f"{common}:20: {HOLE}",
        f"{py}:1: {HOLE}",
        f"{su} includes common-auth: {common}:20: {HOLE}",
    ]


@pytest.mark.root
def test_hidden_pam_dir_option(capsys, tmp_path, scratch_policy):
    folder = tmp_path / "other.d"
    folder.mkdir()
    su = write(folder, "su", f"auth required pam_python.so {MODULE}\n")
    code, _out, err = check(capsys, scratch_policy, "--pam-dir", str(folder))
    assert code == 2 and err == f"{su}:1: {HOLE}\n"
    with pytest.raises(SystemExit):
        admin.main(["check", "--help"])
    assert "--pam-dir" not in capsys.readouterr().out


@pytest.mark.root
def test_policy_named_by_sshd_differs_from_the_one_checked_is_a_warning(capsys, pam_dir, scratch_policy, tmp_path):
    sshd = write(pam_dir, "sshd", f"auth required pam_python.so {MODULE} policy=/etc/pam-twofa/strict.yaml\n")
    code, out, err = check(capsys, scratch_policy)
    assert code == 0 and err == ""
    assert f"warning: {sshd}:1 names the policy /etc/pam-twofa/strict.yaml, not {scratch_policy}" in out


@pytest.mark.root
def test_sshd_without_a_pam_twofa_line_is_a_note(capsys, pam_dir, scratch_policy):
    write(pam_dir, "sshd", "@include common-auth\n")
    code, out, err = check(capsys, scratch_policy)
    assert code == 0 and err == "" and "has no pam_twofa line yet" in out


@pytest.mark.root
def test_invalid_policy_and_pam_errors_are_all_reported(capsys, pam_dir, make_policy):
    path = make_policy("enforce:\n  mode: sometimes\n")
    su = write(pam_dir, "su", f"auth required pam_python.so {MODULE}\n")
    code, out, err = check(capsys, path)
    assert code == 2 and out == ""
    assert err.splitlines()[0].startswith(f"{path}:2: enforce.mode")
    assert err.splitlines()[-1] == f"{su}:1: {HOLE}"


def test_pam_config_help_says_sshd_only(capsys):
    with pytest.raises(SystemExit):
        admin.main(["--help"])
    assert "sshd only" in capsys.readouterr().out
