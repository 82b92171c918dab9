"""The lines an admin installs in /etc/pam.d/sshd and sshd_config (``twofa-admin pam-config``)."""

from __future__ import annotations

import os

from pam_twofa.policy import DEFAULT_PATH

# The bare name: libpam finds it in its module folders, and libpam-python moved
# from /lib/security (Debian 12) to /usr/lib/x86_64-linux-gnu/security (Debian 13).
PAM_PYTHON = "pam_python.so"


def pam_python_path() -> str:
    return PAM_PYTHON


def module_path() -> str:
    # This package's own file: installed by the Debian package it is
    # /usr/lib/python3/dist-packages/pam_twofa/pam_module.py, the same for
    # every Python 3 version, so the line survives an upgrade from Debian 12 to 13.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, "pam_module.py")


def auth_line(policy_path: str = DEFAULT_PATH) -> str:
    line = f"auth required {pam_python_path()} {module_path()}"
    if os.path.abspath(policy_path) != DEFAULT_PATH:
        line += f" policy={os.path.abspath(policy_path)}"
    return line


def render(stack: str = "password", policy_path: str = DEFAULT_PATH) -> str:
    auth = auth_line(policy_path)
    if stack == "password":
        return f"""# --- /etc/pam.d/sshd: add this line right after "@include common-auth" ---
{auth}

# --- /etc/ssh/sshd_config.d/pam-twofa.conf (then: systemctl reload ssh) ---
UsePAM yes
KbdInteractiveAuthentication yes
PasswordAuthentication no
AuthenticationMethods keyboard-interactive
"""
    return f"""# --- /etc/pam.d/sshd: replace "@include common-auth" with these two lines ---
# (the password is not asked: the SSH key is the first factor, the code the second)
{auth}
auth required pam_permit.so

# --- /etc/ssh/sshd_config.d/pam-twofa.conf (then: systemctl reload ssh) ---
UsePAM yes
PubkeyAuthentication yes
KbdInteractiveAuthentication yes
PasswordAuthentication no
AuthenticationMethods publickey,keyboard-interactive:pam
"""
