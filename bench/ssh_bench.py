"""(5) An SSH login with password + code against the same login through a bare pam_python module.

One container of the password-stack image on 127.0.0.1:2299. Runs rotate
between four PAM stacks (sshd reads the stack at each connection, so it is
the same sshd process): F the floor (pam_python with a bare module that only
prompts: interpreter start plus the second keyboard-interactive round trip),
B pam-twofa, and as references A password only (the pam_python line
commented out) and G ``pam_google_authenticator.so`` (the C peer, its secret
in a root-owned folder, reuse allowed so one user serves every run). Each B
run logs in a different enrolled user, as a code is accepted once.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time

from floor import BARE_MODULE

IMAGE = os.environ.get("PAM_TWOFA_SSHD_IMAGE", "pam-twofa-sshd:password")
NAME = "pam-twofa-bench-sshd"
PORT = 2299


SETUP = r"""
import os, sys
from pam_twofa.record import Record
from pam_twofa.store import FileStore
n = int(sys.argv[1])
store = FileStore("/var/lib/pam-twofa")
for i in range(n):
    name = f"bench{i}"
    os.system(f"id {name} >/dev/null 2>&1 || useradd -M -s /bin/sh {name}")
    key = bytes.fromhex(sys.argv[2]) + i.to_bytes(4, "big")
    store.update(name, lambda old, name=name, key=key: Record(name, key=key))
os.system("echo '" + "\n".join(f"bench{i}:pw" for i in range(n)) + "' | chpasswd")
"""


def _docker(*args, **kw):
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, **kw)


def _login(user: str, answers: dict) -> float:
    import paramiko

    start = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", PORT))
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)

        def handler(_title, _instructions, prompts):
            return [answers["code" if "code" in p.lower() else "password"] for p, _echo in prompts]

        transport.auth_interactive(user, handler)
        if not transport.is_authenticated():
            raise RuntimeError("not authenticated")
    finally:
        transport.close()
    return time.perf_counter() - start


def ssh_rows(runs: int) -> list:
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from pam_twofa import totp

    subprocess.run(["docker", "rm", "-f", NAME], capture_output=True)
    _docker("run", "-d", "--name", NAME, "--network", "host", IMAGE, "/usr/sbin/sshd", "-D", "-e", "-o", f"Port={PORT}")
    try:
        prefix = os.urandom(16)
        _docker("exec", NAME, "python3", "-c", SETUP, str(runs + 1), prefix.hex())
        _docker("exec", NAME, "cp", "/etc/pam.d/sshd", "/etc/pam.d/sshd.with-twofa")
        _docker(
            "exec",
            NAME,
            "sh",
            "-c",
            "sed 's/^auth required .*pam_python.*/# &/' /etc/pam.d/sshd > /etc/pam.d/sshd.password-only",
        )
        _docker("exec", "-i", NAME, "sh", "-c", "cat > /etc/pam-twofa-bench-bare.py", input=BARE_MODULE)
        _docker(
            "exec",
            NAME,
            "sh",
            "-c",
            "sed 's|^\\(auth required .*pam_python.so\\) .*|\\1 /etc/pam-twofa-bench-bare.py|' /etc/pam.d/sshd > /etc/pam.d/sshd.floor",
        )
        ga_secret = base64.b32encode(prefix[:10]).decode()
        _docker(
            "exec",
            NAME,
            "sh",
            "-c",
            "apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            "libpam-google-authenticator >/dev/null && install -d -m 0700 /etc/pam-twofa-bench-ga && "
            "sed 's|^auth required .*pam_python.so .*|auth required pam_google_authenticator.so "
            "secret=/etc/pam-twofa-bench-ga/${USER} user=root|' /etc/pam.d/sshd > /etc/pam.d/sshd.google",
        )
        _docker(
            "exec", "-i", NAME, "sh", "-c", "umask 077; cat > /etc/pam-twofa-bench-ga/bench0",
            input=f'{ga_secret}\n" TOTP_AUTH\n',
        )  # fmt: skip
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        a, f, b, g, failures, g_failures = [], [], [], [], 0, 0
        for i in range(runs):
            _docker("exec", NAME, "cp", "/etc/pam.d/sshd.google", "/etc/pam.d/sshd")
            try:
                g.append(_login("bench0", {"password": "pw", "code": totp.totp(prefix[:10], time.time())}))
            except Exception:
                g_failures += 1
            _docker("exec", NAME, "cp", "/etc/pam.d/sshd.password-only", "/etc/pam.d/sshd")
            a.append(_login("bench0", {"password": "pw"}))
            _docker("exec", NAME, "cp", "/etc/pam.d/sshd.floor", "/etc/pam.d/sshd")
            f.append(_login("bench0", {"password": "pw", "code": "1"}))
            _docker("exec", NAME, "cp", "/etc/pam.d/sshd.with-twofa", "/etc/pam.d/sshd")
            user = f"bench{i + 1}"
            key = prefix + (i + 1).to_bytes(4, "big")
            try:
                b.append(_login(user, {"password": "pw", "code": totp.totp(key, time.time())}))
            except Exception:
                failures += 1
        return [
            ("(5) SSH password+code vs bare pam_python, same sshd", f, b or [float("nan")], failures, 1.05),
            ("    reference: SSH password+code vs password only", a, b or [float("nan")], failures, None),
            ("    reference: pam_google_authenticator.so vs password only", a, g or [float("nan")], g_failures, None),
            ("    reference: bare pam_python vs password only", a, f, 0, None),
        ]
    finally:
        subprocess.run(["docker", "rm", "-f", NAME], capture_output=True)
