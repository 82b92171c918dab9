"""(5) An SSH login with password + code against the same login through a bare pam_python module.

One container of the password-stack image on 127.0.0.1:2299, and the
system's OpenSSH client doing what a user does: ``ssh -T USER@host true``,
a whole login (key exchange, password, code, session, the command, logout),
its prompts answered by an askpass script. Runs rotate between four PAM
stacks in the same sshd process (sshd reads the stack at each connection): F
the floor (pam_python with a bare module that only prompts: interpreter start
plus the second keyboard-interactive round trip), B pam-twofa, and as
references A password only (the pam_python line commented out) and G
``pam_google_authenticator.so`` (the C peer, its secrets in a root-owned
folder). Every round logs in one user of its own through all four stacks
(a code is accepted once); F and B swap places every other round.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from floor import BARE_MODULE

IMAGE = os.environ.get("PAM_TWOFA_SSHD_IMAGE", "pam-twofa-sshd:password")
NAME = "pam-twofa-bench-sshd"
PORT = 2299
BARE_PATH = "/etc/pam-twofa-bench-bare.py"
GA_DIR = "/etc/pam-twofa-bench-ga"  # root-owned: pam_google_authenticator reads it as user=root
PASSWORD = "pw"

SETUP = r"""
import os, sys
from pam_twofa.core.record import Record
from pam_twofa.store.files import FileStore
n = int(sys.argv[1])
store = FileStore("/var/lib/pam-twofa")
for i in range(n):
    name = f"bench{i}"
    os.system(f"id {name} >/dev/null 2>&1 || useradd -M -d / -s /bin/sh {name}")
    key = bytes.fromhex(sys.argv[2]) + i.to_bytes(4, "big")
    store.update(name, lambda old, name=name, key=key: Record(name, key=key))
os.system("echo '" + "\n".join(f"bench{i}:" + sys.argv[3] for i in range(n)) + "' | chpasswd")
"""

# ssh asks its keyboard-interactive prompts through this program (SSH_ASKPASS_REQUIRE=force).
ASKPASS = """#!/bin/sh
case "$1" in
  *[Cc]ode*) printf '%s\\n' "$BENCH_CODE" ;;
  *) printf '%s\\n' "$BENCH_PASSWORD" ;;
esac
"""


def _docker(*args, **kw):
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, **kw)


def _login(askpass: str, user: str, code: str) -> float:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "SSH_ASKPASS": askpass,
        "SSH_ASKPASS_REQUIRE": "force",
        "BENCH_CODE": code,
        "BENCH_PASSWORD": PASSWORD,
    }
    command = [
        "ssh", "-F", "/dev/null", "-p", str(PORT), "-T",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-o", "PreferredAuthentications=keyboard-interactive", "-o", "NumberOfPasswordPrompts=1",
        f"{user}@127.0.0.1", "true",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"ssh {user}: exit {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
    return seconds


def ssh_rows(runs: int) -> list:
    """The rows of (5) and its references."""
    from pam_twofa.core import totp

    subprocess.run(["docker", "rm", "-f", NAME], capture_output=True)
    scratch = tempfile.mkdtemp(prefix="pam-twofa-bench-ssh-")
    pamd = os.path.join(scratch, "pam.d")
    askpass = os.path.join(scratch, "askpass")
    try:
        with open(askpass, "w") as out:
            out.write(ASKPASS)
        os.chmod(askpass, 0o700)
        # The container's /etc/pam.d is this host folder, so a stack is switched by one rename here
        # and not by a `docker exec` whose process would still be ending during the next login.
        image_pamd = subprocess.run(["docker", "run", "--rm", "--network", "host", IMAGE, "tar", "-C", "/etc", "-cf", "-", "pam.d"], check=True, capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-C", scratch, "-xf", "-"], input=image_pamd, check=True)
        with open(os.path.join(pamd, "sshd")) as image_stack:
            with_twofa = image_stack.read()
        stacks = {
            "twofa": with_twofa,
            "password": re.sub(r"(?m)^auth required .*pam_python.*$", r"# \g<0>", with_twofa),
            "floor": re.sub(r"(?m)^(auth required .*pam_python\.so) .*$", r"\1 " + BARE_PATH, with_twofa),
            "google": re.sub(
                r"(?m)^auth required .*pam_python\.so .*$",
                f"auth required pam_google_authenticator.so secret={GA_DIR}/${{USER}} user=root",
                with_twofa,
            ),
        }
        for name, text in stacks.items():
            if name != "twofa" and text == with_twofa:
                raise RuntimeError(f"the image's /etc/pam.d/sshd has no pam_python auth line to replace for {name}")

        def use(stack: str) -> None:
            new = os.path.join(pamd, ".sshd.new")
            with open(new, "w") as out:
                out.write(stacks[stack])
            os.chmod(new, 0o644)
            os.replace(new, os.path.join(pamd, "sshd"))

        _docker("run", "-d", "--name", NAME, "--network", "host", "-v", f"{pamd}:/etc/pam.d", IMAGE,
                "/usr/sbin/sshd", "-D", "-e", "-o", f"Port={PORT}")  # fmt: skip
        prefix = os.urandom(16)
        users = [f"bench{i}" for i in range(runs + 1)]  # bench0 warms every stack up, unmeasured
        _docker("exec", NAME, "python3", "-c", SETUP, str(len(users)), prefix.hex(), PASSWORD)
        _docker("exec", "-i", NAME, "sh", "-c", f"cat > {BARE_PATH}", input=BARE_MODULE)
        ga_secret = base64.b32encode(prefix[:10]).decode()
        _docker(
            "exec", NAME, "sh", "-c",
            "apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            f"libpam-google-authenticator >/dev/null && install -d -m 0700 {GA_DIR} && umask 077 && "
            f"for u in {' '.join(users)}; do printf '%s\\n\" TOTP_AUTH\\n' {ga_secret} > {GA_DIR}/$u; done",
        )  # fmt: skip
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        samples: dict[str, list] = {"password": [], "floor": [], "twofa": [], "google": []}
        failed = dict.fromkeys(samples, 0)
        for i, user in enumerate(users):
            key = prefix + i.to_bytes(4, "big")
            # The floor and pam-twofa swap places every other round, so neither always comes first.
            for stack in ("google", "password", *(("floor", "twofa") if i % 2 else ("twofa", "floor"))):
                use(stack)
                secret = key if stack == "twofa" else prefix[:10] if stack == "google" else None
                answer = totp.totp(secret, time.time()) if secret else "1"  # the floor takes any answer
                try:
                    seconds = _login(askpass, user, answer)
                except RuntimeError:
                    if stack in ("password", "floor"):
                        raise  # the references must work, or no figure means anything
                    failed[stack] += i > 0
                    continue
                if i > 0:
                    samples[stack].append(seconds)
        a, f, b, g = samples["password"], samples["floor"], samples["twofa"], samples["google"]
        failures, g_failures = failed["twofa"], failed["google"]
        nan = [float("nan")]
        return [
            ("(5) SSH password+code vs bare pam_python, same sshd", f, b or nan, failures, 1.05),
            ("    reference: SSH password+code vs password only", a, b or nan, failures, None),
            ("    reference: pam_google_authenticator.so vs password only", a, g or nan, g_failures, None),
            ("    reference: bare pam_python vs password only", a, f, 0, None),
        ]
    finally:
        subprocess.run(["docker", "rm", "-f", NAME], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
