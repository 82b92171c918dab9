"""The login budget with the database backend: a login through the agent imports neither psycopg nor cryptography."""

import subprocess

from test_login_imports import FORBIDDEN, REPO, SCRIPT

from pam_twofa.core.record import Record

# What the agent needs and the login path must never load (docs/performance.md).
FORBIDDEN_WITH_AGENT = FORBIDDEN | {
    "psycopg",
    "cryptography",
    "pam_twofa.fleet.database",
    "pam_twofa.fleet.key",
    "struct",
}


def test_a_login_through_the_agent_imports_only_what_it_uses(fleet):
    fleet.start_agent()
    fleet.store().update("root", lambda old: Record("root", key=bytes(range(20))))
    policy = str(fleet.policy_path)
    # -I, as pam_python runs the login, ignores PYTHONPATH: the children put the checkout on sys.path themselves.
    setup = f"import sys; sys.path.insert(0, {REPO!r})\nfrom pam_twofa import policy\npolicy.load({policy!r})\n"
    subprocess.run(["/usr/bin/python3", "-I", "-c", setup], check=True)  # writes the compiled cache
    script = f"REPO = {REPO!r}\nPOLICY = {policy!r}\n" + SCRIPT
    out = subprocess.run(["/usr/bin/python3", "-I", "-c", script], capture_output=True, text=True, check=True)
    rc, imported = out.stdout.splitlines()
    assert rc == "0", out.stderr
    loaded = set(imported.split())
    assert not loaded & FORBIDDEN_WITH_AGENT, f"the login path imported {sorted(loaded & FORBIDDEN_WITH_AGENT)}"
    assert "pam_twofa.store.agent" in loaded and "pam_twofa.store" in loaded
    assert fleet.store().load("root").last_step > 0  # the login really went through the agent to the database
