"""Regression guard for the login budget (docs/performance.md): what a login imports, not how long it takes.

A successful login runs in a fresh ``/usr/bin/python3 -I`` (as pam_python
embeds it) with a warm policy cache, and must not import the modules that
alone cost more than the budget (yaml, json, re, dataclasses, hashlib...).
"""

import os
import subprocess
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FORBIDDEN = {
    "yaml",
    "json",
    "re",
    "dataclasses",
    "hashlib",
    "hmac",
    "base64",
    "ipaddress",
    "typing",
    "enum",
    "pyotp",
    "qrcode",
    "socket",
    "pam_twofa.policy.parse",
    "contextlib",
    "argparse",
    "secrets",
    "random",
    "smtplib",
    "email",
}

SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, REPO)  # -I, as pam_python runs it, ignores PYTHONPATH
    before = set(sys.modules)
    from pam_twofa import pam_module
    from pam_twofa.core import totp
    KEY = bytes(range(20))

    class Resp:
        def __init__(self, resp): self.resp = resp

    class Handle:
        PAM_SUCCESS, PAM_AUTH_ERR, PAM_IGNORE = 0, 7, 25
        PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_ERROR_MSG, PAM_TEXT_INFO = 1, 2, 3, 4
        exception = RuntimeError
        rhost, service = "192.0.2.1", "sshd"
        def get_user(self, prompt=None): return "root"
        def Message(self, style, text): return (style, text)
        def conversation(self, msg):
            return Resp(totp.totp(KEY, time.time()) if msg[0] == 1 else None)

    rc = pam_module.pam_sm_authenticate(Handle(), 0, ["pam_module.py", "policy=" + POLICY])
    print(rc)
    print(" ".join(sorted(set(sys.modules) - before)))
    """
)


def test_successful_login_imports_only_what_it_uses(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: 1\nstorage: {{state_dir: {state}}}\n")
    setup = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {REPO!r})  # -I ignores PYTHONPATH
        from pam_twofa import policy
        from pam_twofa.core.record import Record
        from pam_twofa.store.files import FileStore
        policy.load({str(policy)!r})  # writes the compiled cache
        FileStore({str(state)!r}).update("root", lambda old: Record("root", key=bytes(range(20))))
        """
    )
    subprocess.run(["/usr/bin/python3", "-I", "-c", setup], check=True)
    script = f"REPO = {REPO!r}\nPOLICY = {str(policy)!r}\n" + SCRIPT
    out = subprocess.run(["/usr/bin/python3", "-I", "-c", script], capture_output=True, text=True, check=True)
    rc, imported = out.stdout.splitlines()
    assert rc == "0", out.stderr
    loaded = set(imported.split())
    assert not loaded & FORBIDDEN, f"the login path imported {sorted(loaded & FORBIDDEN)}"
    assert "pam_twofa.store" in loaded  # the test really ran a login
