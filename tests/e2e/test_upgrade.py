"""Upgrading the host from Debian 12 to Debian 13 keeps SSH logins with a code working, /etc/pam.d untouched.

A Debian 12 SSH host built by docker/Dockerfile (the package installed by
scripts/install.sh, the password+code stack of ``twofa-admin pam-config``),
an enrolled user who logs in with a code; then the admin's upgrade: sources
bookworm -> trixie, ``apt-get full-upgrade``, restart (of the container: a
reboot). Afterwards the same user logs in with a code over SSH, and the PAM
file, the policy and the store are byte for byte what they were.

It has its own container and port (127.0.0.1:2203), so it does not need the
e2e session's containers; it takes a few minutes (the upgrade downloads
Debian 13). Run alone: ``sudo bash scripts/upgrade-test.sh``.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from e2e_harness import build_sshd_image, port_open, ssh_banner, ssh_login, totp_at, wait_for_fresh_step, wrong_code

pytestmark = pytest.mark.e2e

PORT = 2203
NAME = "pam-twofa-upgrade"
IMAGE = "pam-twofa-upgrade:bookworm"
USER, PASSWORD = "uma", "pw-uma-upgrade"
SECRET = "ONSWG4TFOQQHEZLDN5ZGIIDCMFRWW5LQ"
POLICY = "version: 1\nenforce:\n  mode: all\n  unenrolled: deny\n# the admin's policy, before the upgrade\n"
KEPT = "sha256sum /etc/pam.d/sshd /etc/pam-twofa/policy.yaml /var/lib/pam-twofa/users/uma.rec"
PAM_LINE = "auth required pam_python.so /usr/lib/python3/dist-packages/pam_twofa/pam_module.py"
UPGRADE = r"""
set -e
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
sed -i 's/\bbookworm\b/trixie/g' /etc/apt/sources.list
ls /etc/apt/sources.list.d/ | grep -q . && sed -i 's/\bbookworm\b/trixie/g' /etc/apt/sources.list.d/* || true
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get full-upgrade -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold >/var/log/upgrade.log 2>&1 \
    || { tail -30 /var/log/upgrade.log; exit 1; }
rm -f /usr/sbin/policy-rc.d
"""


def sh(script: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", "exec", "-i", NAME, "bash", "-c", script], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{script!r} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wait_for_sshd() -> None:
    deadline = time.monotonic() + 60
    while not ssh_banner(PORT):
        assert time.monotonic() < deadline, subprocess.run(["docker", "logs", NAME], capture_output=True, text=True)
        time.sleep(0.5)


def login_with_code():
    wait_for_fresh_step()
    return ssh_login(PORT, USER, password=PASSWORD, code=lambda: totp_at(SECRET), command="id -un")


@pytest.fixture
def bookworm_host():
    build_sshd_image(IMAGE, "bookworm", port=PORT)
    subprocess.run(["docker", "rm", "-f", NAME], capture_output=True)
    if port_open(PORT):
        pytest.fail(f"127.0.0.1:{PORT} is in use: the upgrade test's sshd needs it")
    subprocess.run(["docker", "run", "-d", "--name", NAME, "--network", "host", IMAGE], check=True, capture_output=True)
    yield
    subprocess.run(["docker", "rm", "-f", NAME], capture_output=True)


def test_upgrade_debian_12_to_13_keeps_code_logins(bookworm_host, record_property):
    wait_for_sshd()
    assert sh("grep VERSION_ID= /etc/os-release").strip() == 'VERSION_ID="12"'
    assert PAM_LINE in sh("cat /etc/pam.d/sshd").splitlines()
    assert sh("test -e /lib/security/pam_python.so && echo yes").strip() == "yes"  # Debian 12's location
    sh(f"useradd -m {USER} && echo {USER}:{PASSWORD} | chpasswd")
    sh(f"cat > /etc/pam-twofa/policy.yaml <<'EOF'\n{POLICY}EOF")
    wait_for_fresh_step()
    sh(f"twofa-enroll --user {USER} --secret {SECRET} --code {totp_at(SECRET, -1)} --force")
    before = login_with_code()
    assert before.ok and before.asked_code and before.output.strip() == USER, before
    kept = sh(KEPT)

    started = time.monotonic()
    sh(UPGRADE, timeout=1200)
    upgrade_seconds = time.monotonic() - started
    record_property("upgrade_seconds", round(upgrade_seconds))
    print(f"\napt-get full-upgrade bookworm -> trixie: {upgrade_seconds:.0f} s")
    subprocess.run(["docker", "restart", "-t", "3", NAME], check=True, capture_output=True)  # the reboot
    wait_for_sshd()

    assert sh("grep VERSION_ID= /etc/os-release").strip() == 'VERSION_ID="13"'
    assert sh("/usr/bin/python3 -c 'import sys; print(sys.version_info[:2])'").strip() == "(3, 13)"
    assert sh("/usr/sbin/sshd -V 2>&1 || true").startswith("OpenSSH_10"), "openssh-server was not upgraded"
    assert sh("test -e /lib/security/pam_python.so || echo gone").strip() == "gone"  # the old absolute path is dead
    assert sh("dpkg-query -W -f='${Status}' pam-twofa") == "install ok installed"
    assert sh(KEPT) == kept  # /etc/pam.d/sshd, the policy and the record: untouched

    after = login_with_code()
    assert after.ok and after.asked_code and after.output.strip() == USER, after
    row = [line.split() for line in sh(f"twofa-admin status {USER}").splitlines() if line.startswith(USER + " ")]
    assert row and row[0][1] != "no" and row[0][2] == "enforced", row
    refused = ssh_login(PORT, USER, password=PASSWORD, code=wrong_code(SECRET))
    assert not refused.ok and refused.asked_code, refused
