"""The version: ``--version`` of both commands, and the newest CHANGELOG.md heading."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import pam_twofa

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534

# What the console scripts (setup.cfg) run: the module's entry(), with argv[0] the command; this
# checkout's package first on sys.path (PYTHONPATH), as the installed one is for /usr/bin/python3.
ENTRY = """
import sys
module, sys.argv = sys.argv[1], sys.argv[2:]
entry = __import__("pam_twofa.cli." + module, fromlist=["entry"]).entry
entry()
"""


def command(name: str, module: str, *args: str, as_nobody: bool) -> subprocess.CompletedProcess:
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if as_nobody else []
    return subprocess.run(
        [*prefix, "/usr/bin/python3", "-c", ENTRY, module, name, *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name, module", [("twofa-admin", "admin"), ("twofa-enroll", "enroll")])
# Without root the "user" case could not switch users: it needs root (tests/conftest.py skips it otherwise).
@pytest.mark.parametrize("as_nobody", [False, pytest.param(True, marks=pytest.mark.root)], ids=["root", "user"])
def test_version_option_prints_the_package_version(name, module, as_nobody):
    done = command(name, module, "--version", as_nobody=as_nobody)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{name} {pam_twofa.__version__}\n", "")


@pytest.mark.root  # runs a command as nobody
def test_admin_still_requires_root_for_commands():
    done = command("twofa-admin", "admin", "status", as_nobody=True)
    assert done.returncode != 0 and "must be run as root" in done.stderr


def test_version_is_the_newest_changelog_heading():
    headings = re.findall(r"^## (\d+\.\d+\.\d+)\b", (REPO / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)
    assert headings, "CHANGELOG.md has no '## X.Y.Z — date' heading"
    assert headings[0] == pam_twofa.__version__, (
        f"pam_twofa/__init__.py says {pam_twofa.__version__} but the newest CHANGELOG.md entry is {headings[0]}"
    )
