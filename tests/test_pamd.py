"""pamd: PAM service files of a scratch folder, includes followed, pam_python found where it is loaded."""

import os
from typing import Any

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
    assert found[1].control == "success=ok new_authtok_reqd=ok ignore=ignore default=bad"  # libpam drops the brackets
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


# --- libpam's reading, rule by rule (Debian 12: Linux-PAM 1.5.2 and Debian's patches) --------------------------------

PY = "/lib/security/pam_python.so /x/probe.py"


def services_with_python(folder, vendor=None):
    kwargs: dict[str, Any] = {"vendor_dir": str(vendor)} if vendor is not None else {}
    return sorted({service for service, _entry in pamd.pam_python_outside_sshd(str(folder), **kwargs)})


def write_bytes(folder, name, data: bytes):
    path = folder / name
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return str(path)


def test_a_backslash_continues_only_when_nothing_but_space_tab_newline_follows_it(pam_dir):
    # libpam skips only " \t\n" back from the end: after anything else the next line stands alone
    after = {"x1f": b"\x1f", "nbsp": b"\xc2\xa0", "cr": b"\r", "vt": b"\x0b", "spaces": b" \t ", "none": b""}
    for name, tail in after.items():
        write_bytes(pam_dir, name, b"auth optional pam_permit.so \\" + tail + b"\nauth optional " + PY.encode() + b"\n")
    assert services_with_python(pam_dir) == ["cr", "nbsp", "vt", "x1f"]  # elsewhere it is arguments of pam_permit


def test_comments_inside_a_continuation_are_skipped_and_a_hash_ends_the_line_anywhere(pam_dir):
    write_bytes(pam_dir, "svc", b"auth optional \\\n\n   # a comment\n" + PY.encode() + b"\n")
    write_bytes(pam_dir, "a", b"auth [default=ok #] " + PY.encode() + b"\n")
    write_bytes(pam_dir, "b", b"auth optional pam_permit.so \\\n x # \\\nauth optional " + PY.encode() + b"\n")
    assert services_with_python(pam_dir) == ["b", "svc"]  # a: the module field is gone; b: the third line alone
    [entry] = pamd.entries("svc", str(pam_dir))
    assert (entry.line, entry.module, entry.args) == (1, "/lib/security/pam_python.so", ("/x/probe.py",))


def test_leading_cr_or_vertical_tab_makes_a_line_that_is_not_a_comment(pam_dir):
    # only " \t\n" are skipped before "#": "\r# ..." is a (bad) line, "\t# ..." a comment
    write_bytes(pam_dir, "svc", b"\t# auth optional " + PY.encode() + b"\n\rauth optional " + PY.encode() + b"\n")
    assert services_with_python(pam_dir) == []  # "\rauth" is no type: the line never loads a module


def test_a_line_longer_than_libpams_buffer_is_cut_and_its_rest_is_a_line(pam_dir):
    head = b"auth optional pam_permit.so "
    padded = head + b"x" * (1023 - len(head))
    write_bytes(pam_dir, "svc", padded + b"auth optional " + PY.encode() + b"\n")
    [_permit, entry] = pamd.entries("svc", str(pam_dir))
    assert entry.module_name == "pam_python.so" and entry.line == 1
    write_bytes(pam_dir, "svc", padded[:-2] + b" auth optional " + PY.encode() + b"\n")  # 1021 + " a|uth"
    assert services_with_python(pam_dir) == []  # the cut falls inside the type: "uth" is no type


def test_a_nul_ends_what_libpam_sees_of_a_physical_line(pam_dir):
    write_bytes(pam_dir, "a", b"auth optional pam_permit.so\0 \\\nauth optional " + PY.encode() + b"\n")
    write_bytes(pam_dir, "b", b"auth optional " + PY.encode() + b"\0 junk\n")
    assert services_with_python(pam_dir) == ["a", "b"]
    [entry] = pamd.entries("b", str(pam_dir))
    assert entry.args == ("/x/probe.py",)


def test_where_libpam_stops_reading_is_noted_and_earlier_lines_count(pam_dir):
    write_bytes(pam_dir, "svc", b"auth optional " + PY.encode() + b"\nauth optional pam_permit.so \\\n")
    problems: list[str] = []
    assert len(pamd.pam_python_outside_sshd(str(pam_dir), problems=problems)) == 1
    assert problems == [
        f"{pam_dir / 'svc'}: libpam stops reading it at line 2: the file ends inside a continued line"
        ", and the services using it fail"
    ]


def test_a_continued_line_that_fills_the_buffer_is_noted_not_looped_on(pam_dir):
    write_bytes(pam_dir, "svc", b"auth optional pam_permit.so " + b"x" * 994 + b"\\\n" + b"more\n")
    lines, stopped = pamd.logical_lines((pam_dir / "svc").read_bytes())
    assert lines == [] and stopped is not None and "hangs" in stopped


def test_fields_are_split_on_space_tab_newline_only_and_brackets_work_on_every_field():
    assert pamd.fields(b"[auth] [optional] [pam_python.so] [a b\\] c]d\x1fe\r [x]y") == [
        b"auth",
        b"optional",
        b"pam_python.so",
        b"a b] c",
        b"d\x1fe\r",
        b"x",
        b"y",
    ]
    assert pamd.fields(b"[unterminated \\] x") == [b"unterminated ] x"]
    assert pamd.fields(b"  \t\n") == []


LOADS = {
    "bracket-type": "[auth] optional " + PY,
    "bracket-control": "auth [optional] " + PY,
    "bracket-module": "auth optional [/lib/security/pam_python.so] /x/probe.py",
    "bracket-glued": "[auth]optional " + PY,  # the next field starts right after "]"
    "bracket-dash": "[-auth] optional " + PY,
    "upper-case": "AUTH Optional " + PY,
    "control-x1f": "auth required\x1fjunk " + PY,  # a bad control word: the module still loads
    "bracket-control-x1f": "auth [success=ok\x1fdefault=ignore] " + PY,
    "tabs": "auth\toptional\t" + PY,
}
LOADS_NOT = {
    "type-x1f": "auth\x1foptional " + PY,  # the type is "auth\x1foptional": no type, no module
    "type-nbsp": "auth\u00a0optional " + PY,
    "two-dashes": "--auth optional " + PY,
    "empty-bracket": "[] optional " + PY,
    "no-module": "auth optional",
    "no-control": "auth",
    "module-x1f": "auth optional\x1f" + PY,  # the control is "optional\x1f/lib/...": no module field is left
}


def test_which_lines_load_a_module(pam_dir):
    for name, line in {**LOADS, **LOADS_NOT}.items():
        write(pam_dir, name, line + "\n")
    assert services_with_python(pam_dir) == sorted(LOADS)


def test_debian_at_include_in_every_spelling_libpam_accepts(pam_dir, tmp_path):
    inc = write(tmp_path, "elsewhere", "session optional " + PY + "\n")
    spellings = ["[@include] {inc}", "@include {inc}", "-@include {inc}", "@INCLUDE {inc}", "[@include]{inc}"]
    for number, spelling in enumerate(spellings):
        write(pam_dir, f"svc{number}", spelling.format(inc=inc) + "\n")
    found = pamd.pam_python_outside_sshd(str(pam_dir))
    assert [(service, entry.file, entry.chain[0].target) for service, entry in found] == [
        (f"svc{number}", inc, inc) for number in range(len(spellings))
    ]


def test_a_line_with_a_bad_type_still_includes_with_the_auth_type(pam_dir):
    write(pam_dir, "inc", "auth optional " + PY + "\nsession optional /other/pam_python.so /y.py\n")
    write(pam_dir, "svc", "bogus include inc\n")
    found = pamd.entries("svc", str(pam_dir))
    assert [(e.type, e.module) for e in found] == [("auth", "/lib/security/pam_python.so")]


def test_substack_and_include_of_a_bad_type_keep_the_type_asked_for(pam_dir):
    write(pam_dir, "inner", "session optional " + PY + "\n")
    write(pam_dir, "middle", "bogus substack inner\n")
    write(pam_dir, "svc", "session include middle\n")
    [entry] = pamd.entries("svc", str(pam_dir))
    assert entry.type == "session" and [step.target for step in entry.chain] == ["middle", "inner"]


def test_plain_includes_have_no_depth_limit_but_substacks_stop_at_sixteen(pam_dir):
    write(pam_dir, "inc20", "auth optional " + PY + "\n")
    for depth in range(20):
        write(pam_dir, f"inc{depth}", f"auth include inc{depth + 1}\n")
    assert "inc0" in services_with_python(pam_dir)  # 20 includes deep: libpam loads it
    for depth in range(20):
        write(pam_dir, f"inc{depth}", f"auth substack inc{depth + 1}\n")
    problems: list[str] = []
    pamd.entries("inc0", str(pam_dir), problems=problems)
    found = services_with_python(pam_dir)
    assert "inc4" not in found and "inc5" in found  # inc5 reaches inc20 through 15 substacks, inc4 needs 16
    assert any("more than 15 nested substacks" in problem for problem in problems)


def test_an_include_without_a_file_is_noted(pam_dir):
    write(pam_dir, "svc", "auth include\n@include\n" + "auth optional " + PY + "\n")
    problems: list[str] = []
    assert len(pamd.entries("svc", str(pam_dir), problems=problems)) == 1
    assert len(problems) == 2 and all("without a file" in problem for problem in problems)


# --- the two folders -------------------------------------------------------------------------------------------------


@pytest.fixture
def vendor_dir(tmp_path):
    folder = tmp_path / "usr-lib-pam.d"
    folder.mkdir()
    os.chmod(folder, 0o755)
    return folder


def test_a_service_in_the_vendor_folder_is_read(pam_dir, vendor_dir):
    write(pam_dir, "common-auth", "auth optional " + PY + "\n")
    polkit = write(vendor_dir, "polkit-1", "#%PAM-1.0\n\n@include common-auth\n")
    [(service, entry)] = [
        p for p in pamd.pam_python_outside_sshd(str(pam_dir), vendor_dir=str(vendor_dir)) if p[0] == "polkit-1"
    ]
    assert entry.path_text() == f"{polkit} includes common-auth: {pam_dir / 'common-auth'}:1"


def test_a_file_in_pam_d_hides_the_vendor_file_of_the_same_name(pam_dir, vendor_dir):
    write(vendor_dir, "polkit-1", "auth optional " + PY + "\n")
    write(vendor_dir, "systemd-user", "auth optional " + PY + "\n")
    write(pam_dir, "polkit-1", "auth optional pam_permit.so\n")
    assert services_with_python(pam_dir, vendor_dir) == ["systemd-user"]
    assert pamd.service_path("polkit-1", str(pam_dir), str(vendor_dir)) == str(pam_dir / "polkit-1")
    os.unlink(pam_dir / "polkit-1")
    (pam_dir / "polkit-1").mkdir()  # libpam's fopen opens a folder too: it hides, and reads as empty
    assert services_with_python(pam_dir, vendor_dir) == ["systemd-user"]
    os.rmdir(pam_dir / "polkit-1")
    os.symlink("/nonexistent", pam_dir / "polkit-1")  # a dangling link does not open: the vendor file counts
    assert services_with_python(pam_dir, vendor_dir) == ["polkit-1", "systemd-user"]


def test_relative_includes_read_pam_d_only_never_the_vendor_folder(pam_dir, vendor_dir):
    write(vendor_dir, "common-py", "auth optional " + PY + "\n")
    write(pam_dir, "svc", "@include common-py\nauth include common-py\n")
    problems: list[str] = []
    found = pamd.pam_python_outside_sshd(str(pam_dir), problems=problems, vendor_dir=str(vendor_dir))
    assert [service for service, _ in found] == ["common-py"]  # the vendor service itself, not svc
    assert len([p for p in problems if "no such file" in p]) == 2


def test_upper_case_names_are_not_services_but_can_be_included(pam_dir, vendor_dir):
    write(vendor_dir, "Polkit", "auth optional " + PY + "\n")
    write(pam_dir, "Common-Py", "auth optional " + PY + "\n")
    write(pam_dir, "svc", "@include Common-Py\n")
    assert services_with_python(pam_dir, vendor_dir) == ["svc"]  # pam_start lowers the name it is given


def test_the_vendor_folder_goes_with_the_real_pam_d_only(monkeypatch, pam_dir):
    assert pamd._folders(None, None) == ("/etc/pam.d", "/usr/lib/pam.d")
    assert pamd._folders("/etc/pam.d", None) == ("/etc/pam.d", "/usr/lib/pam.d")
    monkeypatch.setattr(pamd, "PAM_DIR", str(pam_dir))  # a scratch pam.d stands alone
    assert pamd._folders(None, None) == (str(pam_dir), None)


def test_a_link_to_pam_python_under_another_name_is_found(pam_dir, tmp_path):
    real = tmp_path / "pam_python.so"
    real.write_bytes(b"\x7fELF")
    os.symlink(real, tmp_path / "pam_other.so")
    write(pam_dir, "svc", f"auth optional {tmp_path / 'pam_other.so'} /x/probe.py\n")
    assert services_with_python(pam_dir) == ["svc"]
