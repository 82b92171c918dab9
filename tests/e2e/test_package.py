"""The Debian package (debian/, scripts/build-deb.sh): files, remove, reinstall, purge, removal guard, lintian.

Each lifecycle test runs in a container of its own, started from the e2e
image of the release (``distro``): there scripts/install.sh built the .deb
(/src/pam-twofa/dist) and apt-installed it, and configure-sshd put the
password+code line into /etc/pam.d/sshd, as an admin following the README
would. The container has no network: remove, reinstall and purge need none.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from e2e_harness import DISTROS, REPO, build_sshd_image, totp_at, wait_for_fresh_step

pytestmark = pytest.mark.e2e

PAM_LINE = "auth required pam_python.so /usr/lib/python3/dist-packages/pam_twofa/pam_module.py"
SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
ENFORCE_ALL = "version: 1\nenforce:\n  mode: all\n  unenrolled: deny\n# edited by the admin\n"
FORCE_HINT = "PAM_TWOFA_FORCE_REMOVE=1 apt remove pam-twofa"
VERSION_ID = {"bookworm": "12", "trixie": "13"}


def image(distro: str, stack: str = "password") -> str:
    return f"pam-twofa-sshd:{stack}" + ("" if distro == DISTROS[0] else f"-{distro}")


class Box:
    """A throw-away container of an e2e image (no sshd; no network unless it needs Debian's packages)."""

    def __init__(self, image: str, network: str = "none") -> None:
        self.name = f"pam-twofa-pkg-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            ["docker", "run", "-d", "--name", self.name, "--network", network, image, "sleep", "infinity"],
            check=True,
            capture_output=True,
        )

    def sh(self, script: str, *, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
        done = subprocess.run(
            ["docker", "exec", "-i", *flags, self.name, "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{script!r} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def status(self) -> str:
        return self.sh("dpkg-query -W -f='${Status}' pam-twofa 2>/dev/null || true").stdout

    def exists(self, path: str) -> bool:
        return self.sh(f"test -e {path} || test -L {path}", check=False).returncode == 0

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)


@pytest.fixture
def box(hosts, distro):
    """A fresh container of this release's password+code image (``hosts``: the images are built)."""
    made = Box(image(distro))
    yield made
    made.remove()


APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"


def test_installed_layout(box, distro):
    """What scripts/install.sh installed: package, paths, modes, conffiles, the PAM line of pam-config."""
    assert box.status() == "install ok installed"
    assert box.sh("grep VERSION_ID= /etc/os-release").stdout.strip() == f'VERSION_ID="{VERSION_ID[distro]}"'
    assert "OK" in box.sh("twofa-admin check").stdout
    auth = [line for line in box.sh("twofa-admin pam-config").stdout.splitlines() if line.startswith("auth ")]
    assert auth == [PAM_LINE]
    assert PAM_LINE in box.sh("cat /etc/pam.d/sshd").stdout.splitlines()
    modes = box.sh(
        "stat -c '%n %a %U:%G' /etc/sudoers.d/pam-twofa /var/lib/pam-twofa /usr/libexec/pam-twofa/enroll-self"
        " /usr/bin/twofa-admin /usr/bin/twofa-enroll /etc/pam-twofa/policy.yaml"
        " /usr/lib/python3/dist-packages/pam_twofa/pam_module.py"
    ).stdout.split("\n")
    assert modes[:6] == [
        "/etc/sudoers.d/pam-twofa 440 root:root",
        "/var/lib/pam-twofa 700 root:root",
        "/usr/libexec/pam-twofa/enroll-self 755 root:root",
        "/usr/bin/twofa-admin 755 root:root",
        "/usr/bin/twofa-enroll 755 root:root",
        "/etc/pam-twofa/policy.yaml 644 root:root",
    ]
    box.sh("visudo -cf /etc/sudoers.d/pam-twofa")
    conffiles = box.sh("dpkg-query -W -f='${Conffiles}' pam-twofa").stdout
    assert "/etc/pam-twofa/policy.yaml" in conffiles and "/etc/sudoers.d/pam-twofa" in conffiles
    listed = box.sh("dpkg -L pam-twofa").stdout.splitlines()
    assert "/usr/share/doc/pam-twofa/examples/pam.d/sshd.password-code" in listed
    # the guides the man pages and the log lines name (docs/threat-model.md, docs/many-hosts.md, ...)
    assert "/usr/share/doc/pam-twofa/docs/threat-model.md.gz" in listed
    assert not [p for p in listed if p.startswith("/usr/local")]
    # nothing of the earlier pip layout, and the module Debian's python3 imports is the package's
    assert (
        box.sh(
            "ls -d /usr/local/lib/python3*/dist-packages/pam_twofa* /usr/local/bin/twofa-* 2>/dev/null || true"
        ).stdout
        == ""
    )
    where = box.sh("cd / && /usr/bin/python3 -I -c 'import pam_twofa; print(pam_twofa.__file__)'").stdout.strip()
    assert where == "/usr/lib/python3/dist-packages/pam_twofa/__init__.py"
    # the package's Depends are installed: every import of the module and the CLIs works
    box.sh("cd / && /usr/bin/python3 -I -c 'import yaml, qrcode, pam, six, pam_twofa.cli.enroll, pam_twofa.cli.admin'")


def _enroll(box: Box, user: str) -> None:
    box.sh(f"useradd -m {user}")
    wait_for_fresh_step()
    done = box.sh(f"twofa-enroll --user {user} --secret {SECRET} --code {totp_at(SECRET, -1)} --force")
    assert f"now on for {user}" in done.stdout


def _status(box: Box, user: str) -> str:
    return box.sh(f"twofa-admin status {user}").stdout


def _enrolled(status: str, user: str) -> bool:
    row = [line.split() for line in status.splitlines() if line.split()[:1] == [user]]
    return len(row) == 1 and row[0][1] != "no"


def test_guard_refuses_remove_while_pam_names_the_module(box):
    """apt remove stops, naming the file and line; the package and logins stay; it passes once the line is out."""
    refused = box.sh(f"{APT} remove pam-twofa", check=False)
    assert refused.returncode != 0
    out = refused.stdout + refused.stderr
    line_no = box.sh("grep -n pam_twofa /etc/pam.d/sshd | cut -d: -f1").stdout.strip()
    assert f"/etc/pam.d/sshd:{line_no}:{PAM_LINE}" in out, out
    assert FORCE_HINT in out
    assert box.status() == "install ok installed"
    assert box.exists("/usr/lib/python3/dist-packages/pam_twofa/pam_module.py")
    assert "OK" in box.sh("twofa-admin check").stdout
    # a commented-out line does not count; once the line is out, remove goes through
    box.sh(r"sed -i 's|^auth required pam_python.so|# &|' /etc/pam.d/sshd")
    box.sh(f"{APT} remove pam-twofa")
    assert box.status() == "deinstall ok config-files"


def test_guard_can_be_forced(box):
    forced = box.sh(f"{APT} remove pam-twofa", env={"PAM_TWOFA_FORCE_REMOVE": "1"}, check=False)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert box.status() == "deinstall ok config-files"


def test_upgrade_in_place_is_not_guarded(box):
    """Reinstalling (prerm upgrade) with the PAM line in place goes through: the guard is for removal only."""
    deb = box.sh("ls /src/pam-twofa/dist/pam-twofa_*_all.deb").stdout.strip()
    box.sh(f"{APT} install --reinstall {deb}")
    assert box.status() == "install ok installed"


def test_remove_keeps_policy_and_state_reinstall_and_purge(box):
    _enroll(box, "ursula")
    box.sh(f"cat > /etc/pam-twofa/policy.yaml <<'EOF'\n{ENFORCE_ALL}EOF")
    assert "OK" in box.sh("twofa-admin check").stdout  # also writes the policy cache
    assert box.exists("/etc/pam-twofa/.policy.yaml.cache")
    before = _status(box, "ursula")
    assert _enrolled(before, "ursula"), before
    record = box.sh("sha256sum /var/lib/pam-twofa/users/ursula.rec").stdout

    box.sh("sed -i '/pam_twofa/d' /etc/pam.d/sshd")
    box.sh(f"{APT} remove pam-twofa")
    assert box.status() == "deinstall ok config-files"
    for gone in (
        "/usr/bin/twofa-admin",
        "/usr/bin/twofa-enroll",
        "/usr/libexec/pam-twofa/enroll-self",
        "/usr/lib/python3/dist-packages/pam_twofa",
    ):
        assert not box.exists(gone), gone
    assert box.sh("cat /etc/pam-twofa/policy.yaml").stdout == ENFORCE_ALL  # the admin's policy, kept
    assert box.sh("sha256sum /var/lib/pam-twofa/users/ursula.rec").stdout == record
    assert box.sh("stat -c %a /var/lib/pam-twofa").stdout.strip() == "700"

    deb = box.sh("ls /src/pam-twofa/dist/pam-twofa_*_all.deb").stdout.strip()
    box.sh(f"{APT} install {deb}")
    assert box.status() == "install ok installed"
    assert box.sh("cat /etc/pam-twofa/policy.yaml").stdout == ENFORCE_ALL  # conffile: no prompt, admin's kept
    assert not box.exists("/etc/pam-twofa/policy.yaml.dpkg-dist")
    assert _status(box, "ursula") == before  # the enrollment made before works again
    assert "decision: totp" in box.sh("twofa-admin explain ursula").stdout

    box.sh(f"{APT} purge pam-twofa")
    assert box.status() in ("", "unknown ok not-installed")
    for gone in ("/etc/pam-twofa", "/var/lib/pam-twofa", "/etc/sudoers.d/pam-twofa", "/usr/share/doc/pam-twofa"):
        assert not box.exists(gone), gone


def test_lintian_reports_no_error(tmp_path):
    """scripts/build-deb.sh on this host, then lintian: no error, no warning."""
    built = subprocess.run(["bash", str(REPO / "scripts" / "build-deb.sh")], capture_output=True, text=True, cwd=REPO)
    assert built.returncode == 0, built.stderr
    deb = REPO / built.stdout.strip()
    found = re.search(r'__version__ = "(.*)"', (REPO / "pam_twofa" / "__init__.py").read_text())
    assert found, "no __version__ in pam_twofa/__init__.py"
    version = found.group(1)
    assert deb.name == f"pam-twofa_{version}_all.deb" and deb.is_file()
    # the checkout stays clean: the build ran in a copy
    assert not (REPO / "debian" / "changelog").exists() and not (REPO / "build").exists()
    lint = subprocess.run(
        ["lintian", "--fail-on", "error,warning", str(deb)],
        capture_output=True,
        text=True,
        env=dict(os.environ, LC_ALL="C.UTF-8"),
    )
    report = lint.stdout + lint.stderr
    assert lint.returncode == 0 and not re.search(r"^[EW]: ", report, re.M), report
    assert Path(deb).stat().st_size > 10_000


# The commit before the Debian package: its scripts/install.sh pip-installed into /usr/local.
PIP_ERA = "0463632"
OLD_LINE = "auth required /lib/security/pam_python.so /usr/local/lib/python3.11/dist-packages/pam_twofa/pam_module.py"


@pytest.fixture
def pip_era_host():
    """A Debian 12 host set up by the earlier installer: pip layout in /usr/local, the old PAM line, a user enrolled."""
    made = Box(build_sshd_image("pam-twofa-upgrade:bookworm"), network="host")
    try:
        made.sh(f"sed -i '/pam_twofa/d' /etc/pam.d/sshd && {APT} purge pam-twofa >/dev/null")
        old = subprocess.run(
            ["git", "archive", PIP_ERA, "pam_twofa", "scripts", "setup.cfg", "pyproject.toml", "README.md"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(
            ["docker", "exec", "-i", made.name, "bash", "-c", "mkdir /old && tar -C /old -x"], input=old, check=True
        )
        made.sh("bash /old/scripts/install.sh >/dev/null")
        made.sh(f"cat > /etc/pam-twofa/policy.yaml <<'EOF'\n{ENFORCE_ALL}EOF")
        _enroll(made, "olga")
        made.sh(f"sed -i 's|^@include common-auth$|&\\n{OLD_LINE}|' /etc/pam.d/sshd")
        assert OLD_LINE in made.sh("cat /etc/pam.d/sshd").stdout
        yield made
    finally:
        made.remove()


def test_install_sh_replaces_the_pip_layout(pip_era_host):
    box = pip_era_host
    assert box.exists("/usr/local/bin/twofa-admin") and box.exists("/usr/local/libexec/pam-twofa/enroll-self")
    record = box.sh("sha256sum /var/lib/pam-twofa/users/olga.rec").stdout

    out = box.sh("bash /src/pam-twofa/scripts/install.sh").stdout
    assert box.status() == "install ok installed"
    assert "still name the earlier copy" in out and OLD_LINE in out, out
    for gone in ("/usr/local/bin/twofa-admin", "/usr/local/bin/twofa-enroll", "/usr/local/libexec/pam-twofa"):
        assert not box.exists(gone), gone
    assert box.sh("ls -d /usr/local/lib/python3*/dist-packages/pam_twofa-* 2>/dev/null || true").stdout == ""
    # the old line still loads a module: the package's, through the link
    site = "/usr/local/lib/python3.11/dist-packages/pam_twofa"
    assert box.sh(f"readlink {site}").stdout.strip() == "/usr/lib/python3/dist-packages/pam_twofa"
    assert "dpkg" not in box.sh("dpkg -S /etc/sudoers.d/pam-twofa").stderr  # the package's drop-in now
    box.sh("visudo -cf /etc/sudoers.d/pam-twofa")
    assert box.sh("cat /etc/pam-twofa/policy.yaml").stdout == ENFORCE_ALL  # the admin's policy, kept
    assert box.sh("sha256sum /var/lib/pam-twofa/users/olga.rec").stdout == record
    assert _enrolled(_status(box, "olga"), "olga")
    assert box.sh("command -v twofa-admin").stdout.strip() == "/usr/bin/twofa-admin"

    # the admin changes the line to the one pam-config prints; the next run drops the link
    box.sh(f"sed -i 's|^{OLD_LINE}$|{PAM_LINE}|' /etc/pam.d/sshd")
    again = box.sh("bash /src/pam-twofa/scripts/install.sh").stdout
    assert "earlier copy" not in again
    assert not box.exists(site)
    assert box.sh("cd / && /usr/bin/python3 -I -c 'import pam_twofa; print(pam_twofa.__file__)'").stdout.strip() == (
        "/usr/lib/python3/dist-packages/pam_twofa/__init__.py"
    )
