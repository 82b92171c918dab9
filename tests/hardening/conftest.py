"""Fixtures of the adversarial (hardening) suite.

``world``: an in-process login world (hardening_helpers.World). ``pam_env``
and ``scratch``: the PAM harness of tests/pam (pam_harness), with its own
session listener; at the end of the session every syslog line it captured
is audited against every secret every test used (tests/pam/syslog_audit.py).
"""

from __future__ import annotations

import pytest
from hardening_helpers import World


@pytest.fixture
def world(tmp_path, monkeypatch) -> World:
    return World(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def pam_env():
    from syslog_audit import audited_env

    with audited_env("hardening") as env:
        yield env


@pytest.fixture
def scratch(pam_env, tmp_path):
    from pam_harness import Scratch

    return Scratch(pam_env, tmp_path)
