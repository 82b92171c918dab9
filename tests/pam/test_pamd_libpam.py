"""``twofa-admin check`` against libpam itself: for a corpus of tricky service files, the services
``check`` reports as loading pam_python are exactly those in which libpam ran pam_python.

How. A scratch ``/etc/pam.d`` and a scratch ``/usr/lib/pam.d`` are bind-mounted over the real
folders in a private mount namespace (``unshare --mount --propagation private``): the host's
folders never change, and inside, libpam and ``check`` both read the very paths they read on a
real host. pam_wrapper cannot do this: it hands libpam one folder (``pam_start_confdir``), and
then libpam 1.5.2 never looks in ``/usr/lib/pam.d`` (pam_handlers.c 300-317), while Debian's
include patch opens a relative include in the real ``/etc/pam.d`` whatever the folder.

The probe is the real ``pam_python.so`` running a probe script that appends the service name to
a marker folder, driven by ``pamtester`` (authenticate, acct_mgmt, open_session, chauthtok: every
type). Every corpus line uses ``optional`` or ``required`` controls, so libpam dispatches every
line it loaded: "pam_python ran" and "libpam loaded pam_python" are the same question here.
Cases where they differ (a file that ends inside a continued line: libpam loads, then refuses
the whole service) are in tests/test_pamd.py, where ``check`` reports them on purpose.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pam_harness import INSTALLED_PKG, PAM_PYTHON

pytestmark = pytest.mark.root

ETC, USR, ELSEWHERE = "etc", "usr", "elsewhere"  # /etc/pam.d, /usr/lib/pam.d, an absolute include target
REAL = {ETC: "/etc/pam.d", USR: "/usr/lib/pam.d"}
OPS = ("authenticate", "acct_mgmt", "open_session", "chauthtok")
HOLE = "pam_python.so is loaded outside sshd"

PROBE = """\
import os

def _mark(pamh, flags, argv):
    with open(os.path.join({marks!r}, pamh.service or "?"), "a") as marks:
        marks.write("ran\\n")
    return pamh.PAM_SUCCESS

pam_sm_authenticate = pam_sm_setcred = pam_sm_acct_mgmt = _mark
pam_sm_open_session = pam_sm_close_session = pam_sm_chauthtok = _mark
"""

NS = (
    'mount --bind "$1" /etc/pam.d && mount --bind "$2" /usr/lib/pam.d || exit 97; '
    'marks="$3"; admin="$4"; policy="$5"; shift 5; '
    'for service in "$@"; do for op in ' + " ".join(OPS) + "; do "
    'timeout 20 pamtester "$service" root "$op" </dev/null >/dev/null 2>&1; '
    "done; done; "
    '"$admin" check --policy "$policy" >"$marks/../check.out" 2>"$marks/../check.err"; '
    "exit 0"
)


def corpus(py: str, probe: str, root: Path) -> list[tuple[str, str, bytes, bool]]:
    """(folder, name, content, does libpam run pam_python for this service?)."""
    py_b, probe_b = py.encode(), probe.encode()
    line = b"auth optional " + py_b + b"\n"
    head = b"auth optional pam_permit.so "
    cases: list[tuple[str, str, bytes, bool]] = [
        # ordinary files, includes, substack, comments, continuations
        (
            ETC,
            "other",
            b"".join(t + b" optional pam_permit.so\n" for t in (b"auth", b"account", b"password", b"session")),
            False,
        ),
        (
            ETC,
            "common-auth",
            b"#\n# common-auth\nauth\t[success=1 default=ignore]\tpam_permit.so\nauth required pam_permit.so\n",
            False,
        ),
        (ETC, "common-py", line, True),
        (ETC, "plain-clean", b"@include common-auth\naccount required pam_permit.so\n", False),
        (
            ETC,
            "plain-py",
            b"auth required pam_permit.so\nsession optional /lib/security/pam_python.so " + probe_b + b"\n",
            True,
        ),
        (ETC, "inc-py", b"auth include common-py\n", True),
        (ETC, "inc-other-type", b"session include common-py\n", False),
        (ETC, "at-include-py", b"@include common-py\n", True),
        (ETC, "acct-py", b"account optional " + py_b + b"\n", True),
        (ETC, "substack-py", b"account substack acct-py\n", True),
        (ETC, "commented", b"# " + line + b"auth optional pam_permit.so # " + line, False),
        (ETC, "continued", b"auth optional \\\n   # a comment inside\n\n  " + py_b + b"\n", True),
        (ETC, "continued-args", b"auth optional pam_permit.so \\ \t\n" + line, False),
        (ETC, "dash-type", b"-session optional " + py_b + b"\n", True),
        # the review's five: /usr/lib/pam.d, brackets, continuation + \x1f / NBSP / CR, [@include] /abs, \x1f in a control
        (USR, "polkit-1", b"#%PAM-1.0\n\n@include common-auth\n@include common-py\n", True),
        (USR, "vendor-clean", b"@include common-auth\n", False),
        (USR, "hidden-by-etc", line, False),
        (ETC, "hidden-by-etc", b"auth optional pam_permit.so\n", False),
        (ETC, "bracket-type", b"[auth] optional " + py_b + b"\n", True),
        (ETC, "bracket-module", b"auth optional [pam_python.so] " + probe_b + b"\n", True),
        (ETC, "bracket-glued", b"[auth]optional " + py_b + b"\n", True),
        (ETC, "cont-x1f", head + b"\\\x1f\n" + line, True),
        (ETC, "cont-nbsp", head + b"\\\xc2\xa0\n" + line, True),
        (ETC, "cont-cr", head + b"\\\r\n" + line[:-1] + b" crlf\r\n", True),  # the \r lands on a spare argument
        (ELSEWHERE, "py-abs", line, False),  # not a service: only included
        (ETC, "at-include-abs", b"[@include] " + str(root / ELSEWHERE / "py-abs").encode() + b"\n", True),
        (ETC, "control-x1f", b"auth required\x1fjunk " + py_b + b"\n", True),
        # more of libpam's reading
        (ETC, "type-x1f", b"auth\x1foptional " + py_b + b"\n", False),
        (ETC, "long-line", head + b"x" * (1023 - len(head)) + line, True),
        (ETC, "long-line-cut", head + b"x" * (1021 - len(head)) + b" " + line, False),
        (ETC, "nul", b"auth optional pam_permit.so\0 \\\n" + line, True),
        (ETC, "leading-cr", b"\r" + line, False),
        (ETC, "bogus-include", b"bogus include common-py\n", True),
        (USR, "vendor-py", line, True),
        (ETC, "include-vendor-only", b"@include vendor-py\n", False),  # a relative include reads /etc/pam.d only
        (ETC, "Upper-Py", line, False),  # pam_start lowers the service name: no program reaches this file
        (ETC, "include-upper", b"@include Upper-Py\n", True),
        (ETC, "link-module", b"auth optional " + str(root / "pam_link.so").encode() + b" " + probe_b + b"\n", True),
        (USR, "dir-hides", line, False),  # /etc/pam.d/dir-hides is a folder: it opens, reads empty, and hides this
    ]
    chain = [(ETC, f"deep{i}", f"auth include deep{i + 1}\n".encode(), True) for i in range(17)]
    return [*cases, *chain, (ETC, "deep17", line, True)]  # 17 plain includes: libpam has no depth limit for them


def _admin_command(root: Path) -> str:
    """twofa-admin running the package under test (PAM_TWOFA_TEST_PACKAGE, else the installed one)."""
    path = root / "twofa-admin"
    path.write_text(
        f"#!/usr/bin/python3 -I\nimport sys\nsys.path.insert(0, {str(INSTALLED_PKG.parent)!r})\n"
        "from pam_twofa.cli.admin import entry\nentry()\n"
    )
    os.chmod(path, 0o755)
    return str(path)


def test_check_reports_exactly_the_services_in_which_libpam_runs_pam_python(tmp_path, scratch_policy):
    root = tmp_path / "world"
    marks = root / "marks"
    for sub in (ETC, USR, ELSEWHERE, "marks"):
        (root / sub).mkdir(parents=True)
    for folder in (root, *(root / sub for sub in (ETC, USR, ELSEWHERE, "marks"))):
        os.chmod(folder, 0o755)
    probe = root / "probe.py"
    probe.write_text(PROBE.format(marks=str(marks)))
    os.symlink(PAM_PYTHON, root / "pam_link.so")  # pam_python.so under another name
    cases = corpus(f"pam_python.so {probe}", str(probe), root)
    (root / ETC / "dir-hides").mkdir()
    for where, name, content, _runs in cases:
        (root / where / name).write_bytes(content)
        os.chmod(root / where / name, 0o644)
    services = sorted({name for where, name, _c, _r in cases if where != ELSEWHERE} | {"dir-hides"})

    proc = subprocess.run(
        [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", NS, "ns",
            str(root / ETC), str(root / USR), str(marks), _admin_command(root), scratch_policy, *services,
        ],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
        capture_output=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    check_err = (root / "check.err").read_text(errors="replace")
    assert "Traceback" not in check_err

    ran = {name.lower(): True for name in os.listdir(marks)}
    libpam = {name: ran.get(name.lower(), False) for name in services}
    expected = {name: runs for where, name, _c, runs in cases if where != ELSEWHERE}
    expected["dir-hides"] = False
    # first, the corpus shows what it claims about libpam (else the comparison below proves little)
    assert libpam == expected

    def reported(name: str) -> bool:
        path = next(
            p for p in (os.path.join(REAL[ETC], name), os.path.join(REAL[USR], name)) if os.path.lexists(_host(root, p))
        )
        return any(HOLE in err and err.startswith((f"{path}:", f"{path} includes ")) for err in check_err.splitlines())

    verdicts = {name: reported(name) for name in services}
    disagree = [
        f"{name}: check {verdicts[name]}, libpam {libpam[name]}" for name in services if verdicts[name] != libpam[name]
    ]
    assert not disagree, f"{len(disagree)} disagreements:\n" + "\n".join(disagree) + f"\ncheck's stderr:\n{check_err}"


def _host(root: Path, path: str) -> str:
    """Where the namespace path ``path`` (under /etc/pam.d or /usr/lib/pam.d) lives in the scratch world."""
    for key, real in REAL.items():
        if path.startswith(real + "/"):
            return str(root / key / path[len(real) + 1 :])
    return path
