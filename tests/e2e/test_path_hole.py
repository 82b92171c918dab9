"""The pam_python PATH hole (issue 13 point 6), in the password host's container, never on this host.

pam_python's interpreter finds its Python, and so its standard library,
through the calling process's PATH. In a setuid program's stack (``su``) an
unprivileged user's copied interpreter and modified standard library run as
root before any module code. These tests:

1. prove the hole is real: a bare pam_python module (it only returns
   PAM_SUCCESS) as the first auth line of /etc/pam.d/su, and a user's
   ``PATH=~/evil/bin:$PATH su -c true root`` runs the user's line with euid 0;
2. show what our module does in the same place: the hijack still happens (it
   cannot be prevented from inside a module), but the module refuses and logs
   one CRIT line naming the service; with a clean PATH the setuid caller alone
   is refused (authentication failure, the same CRIT line);
3. run ``twofa-admin check`` in the container: it flags su, a line added to
   common-auth (through every service including it) and a substack.

Paths (the module, pam_python.so) come from ``twofa-admin pam-config`` in the
container, so another install layout (a .deb) needs no change here. Every
file of /etc/pam.d is restored afterwards (the other e2e tests use the host).
"""

from __future__ import annotations

import os
import shlex

import pytest
from e2e_harness import Host

pytestmark = pytest.mark.e2e

MARKER = "/tmp/twofa-e2e-hole-marker"
BARE_MODULE = "/usr/local/share/twofa-e2e-bare-module.py"
BACKUP = "/root/twofa-e2e-pamd-backup"
LOG_AUTHPRIV_CRIT = "<82>"  # facility authpriv (10) * 8 + LOG_CRIT (2)
HOLE = "pam_python.so is loaded outside sshd"
BARE = """\
def pam_sm_authenticate(pamh, flags, argv):
    return pamh.PAM_SUCCESS


def pam_sm_setcred(pamh, flags, argv):
    return pamh.PAM_IGNORE
"""
# The rest of Debian's su stack, without its auth lines: our line is then the only auth line.
SU_TAIL = "@include common-account\n@include common-session\n"


@pytest.fixture(scope="module")
def host(password_host: Host):
    """The password host with /etc/pam.d saved first and put back after."""
    password_host.run(f"rm -rf {BACKUP} && cp -a /etc/pam.d {BACKUP}")
    password_host.write_file(BARE_MODULE, BARE)
    yield password_host
    password_host.run(
        f"rm -rf /etc/pam.d.e2e-new && cp -a {BACKUP} /etc/pam.d.e2e-new"
        " && mv /etc/pam.d /etc/pam.d.e2e-old && mv /etc/pam.d.e2e-new /etc/pam.d"
        f" && rm -rf /etc/pam.d.e2e-old {BACKUP} {BARE_MODULE} {MARKER}"
    )


@pytest.fixture(scope="module")
def module_line(host: Host) -> str:
    """Our auth line exactly as ``twofa-admin pam-config`` prints it in the container."""
    out = host.run(["twofa-admin", "pam-config"]).stdout
    lines = [line.strip() for line in out.splitlines() if line.startswith("auth") and "pam_python.so" in line]
    assert len(lines) == 1, out
    fields = lines[0].split()
    assert os.path.basename(fields[2]) == "pam_python.so" and fields[3].endswith("/pam_twofa/pam_module.py"), out
    return lines[0]


@pytest.fixture(scope="module")
def pam_python(module_line: str) -> str:
    return module_line.split()[2]


@pytest.fixture(scope="module")
def attacker(host: Host):
    """An unprivileged user with a copied interpreter and a standard library that reports its euid."""
    name = "e2ehole" + os.urandom(3).hex()
    version = host.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
    assert version.count(".") == 1, version
    host.run(f"useradd -m -s /bin/bash {name}")
    evil = f"/home/{name}/evil"
    # This early in interpreter start only os-level calls exist (not even open()).
    hook = (
        f"import os as _o; _fd = _o.open({MARKER!r}, _o.O_WRONLY | _o.O_CREAT | _o.O_APPEND, 0o644);"
        " _o.write(_fd, b'euid=%d\\n' % _o.geteuid()); _o.close(_fd)  # the user's code"
    )
    host.run(
        f"set -e; mkdir -p {evil}/bin {evil}/lib; cp /usr/bin/python3 {evil}/bin/python3;"
        f" cp -a /usr/lib/python{version} {evil}/lib/python{version};"
        f" echo {shlex.quote(hook)} >> {evil}/lib/python{version}/encodings/__init__.py",
        user=name,
        timeout=120,
    )
    yield name
    host.run(f"pkill -KILL -u {name}; userdel -r -f {name} 2>/dev/null; rm -f {MARKER}", check=False)


def su_as(host: Host, user: str, evil: bool):
    """``su -c true root`` as ``user``, no terminal, stdin closed, with the evil tree first on PATH or not."""
    host.run(["rm", "-f", MARKER])
    path = f"/home/{user}/evil/bin:/usr/local/bin:/usr/bin:/bin" if evil else "/usr/local/bin:/usr/bin:/bin"
    mark = host.syslog_mark()
    done = host.run(f"PATH={path} timeout 30 su -c true root </dev/null", user=user, check=False, timeout=60)
    marker = host.run(["cat", MARKER], check=False).stdout
    return done, marker, host.syslog()[mark:]


def write_pam(host: Host, name: str, text: str) -> None:
    host.write_file(f"/etc/pam.d/{name}", text)


def restore(host: Host, *names: str) -> None:
    for name in names:
        host.run(f"cp -p {BACKUP}/{name} /etc/pam.d/{name}")


def test_the_hole_is_real_with_a_bare_pam_python_module(host, attacker, pam_python):
    original = host.run(["cat", f"{BACKUP}/su"]).stdout
    write_pam(host, "su", f"auth required {pam_python} {BARE_MODULE}\n" + original)
    try:
        done, marker, _log = su_as(host, attacker, evil=True)
        assert done.returncode != 0, done  # no password given: su itself fails, which does not matter
        assert "euid=0" in marker.split(), (marker, done)  # the user's code ran as root
        # Control: without the evil tree first on PATH nothing of the user's runs.
        done, marker, _log = su_as(host, attacker, evil=False)
        assert marker == "", marker
    finally:
        restore(host, "su")


def test_our_module_in_su_cannot_stop_the_hijack_but_refuses_and_logs(host, attacker, module_line):
    original = host.run(["cat", f"{BACKUP}/su"]).stdout
    write_pam(host, "su", module_line + "\n" + original)
    try:
        done, marker, log = su_as(host, attacker, evil=True)
        # Honest: the copied standard library ran as root before our module was read.
        assert "euid=0" in marker.split(), (marker, done)
        crit = [line for line in log.splitlines() if "pam_twofa(su:auth): refusing to run" in line]
        assert len(crit) == 1, log
        assert crit[0].startswith(LOG_AUTHPRIV_CRIT), crit
        assert "remove the pam_python line from /etc/pam.d/su" in crit[0], crit
        assert done.returncode != 0, done
    finally:
        restore(host, "su")


def test_our_module_as_the_only_auth_line_of_su_refuses_a_setuid_caller(host, attacker, module_line):
    write_pam(host, "su", module_line + "\n" + SU_TAIL)
    try:
        done, marker, log = su_as(host, attacker, evil=False)
        assert done.returncode != 0, done
        assert "Authentication failure" in done.stderr, done
        assert marker == "", marker
        crit = [line for line in log.splitlines() if "pam_twofa(su:auth): refusing to run" in line]
        assert len(crit) == 1 and "loaded by a setuid or setgid program" in crit[0], log
        assert crit[0].startswith(LOG_AUTHPRIV_CRIT), crit
    finally:
        restore(host, "su")


def check(host: Host):
    done = host.run(["twofa-admin", "check"], check=False)
    return done.returncode, done.stdout, done.stderr.splitlines()


def test_check_flags_su_common_auth_and_a_substack(host, module_line):
    code, out, errors = check(host)
    assert code == 0 and errors == [], (out, errors)  # the installed state: sshd only
    assert "OK" in out

    original = host.run(["cat", f"{BACKUP}/su"]).stdout
    write_pam(host, "su", module_line + "\n" + original)
    try:
        code, _out, errors = check(host)
        assert code == 2
        hole = f"/etc/pam.d/su:1: {HOLE} — a local root hole (see docs/threat-model.md); remove it"
        assert hole in errors and f"/etc/pam.d/su-l includes su: {hole}" in errors, errors
        assert all("/etc/pam.d/su:1:" in error for error in errors), errors
    finally:
        restore(host, "su")

    common = host.run(["cat", f"{BACKUP}/common-auth"]).stdout
    number = len(common.splitlines()) + 1
    write_pam(host, "common-auth", common + module_line + "\n")
    try:
        code, _out, errors = check(host)
        assert code == 2
        assert (
            f"/etc/pam.d/common-auth:{number}: {HOLE} — a local root hole (see docs/threat-model.md); remove it"
            in errors
        )
        for service in ("su", "login", "chfn"):
            assert any(
                e.startswith(f"/etc/pam.d/{service} includes common-auth: /etc/pam.d/common-auth:") for e in errors
            ), (
                service,
                errors,
            )
        assert not any(e.startswith("/etc/pam.d/sshd") for e in errors), errors  # sshd is where it belongs
    finally:
        restore(host, "common-auth")

    chsh = host.run(["cat", f"{BACKUP}/chsh"]).stdout
    write_pam(host, "twofa-e2e-sub", module_line + "\n")
    write_pam(host, "chsh", "auth substack twofa-e2e-sub\n" + chsh)
    try:
        code, _out, errors = check(host)
        assert code == 2
        assert (
            f"/etc/pam.d/chsh includes twofa-e2e-sub: /etc/pam.d/twofa-e2e-sub:1: {HOLE}"
            " — a local root hole (see docs/threat-model.md); remove it"
        ) in errors, errors
    finally:
        restore(host, "chsh")
        host.run(["rm", "-f", "/etc/pam.d/twofa-e2e-sub"])
    assert check(host)[0] == 0
