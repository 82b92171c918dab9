"""Shared fixtures: a scratch policy and state folder in tmp_path."""

import os

import pytest


@pytest.fixture
def make_policy(tmp_path):
    """make_policy(body="") -> path of tmp_path/etc/policy.yaml (folder 0755) with ``body``.

    Unless ``body`` has its own ``storage:`` section, the policy points
    ``storage.state_dir`` at tmp_path/state (created 0700). Writing again
    replaces the file by a rename (a new inode), as editors do.
    """
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    os.chmod(etc, 0o755)
    state = tmp_path / "state"
    if not state.exists():
        state.mkdir(mode=0o700)
    os.chmod(state, 0o700)
    path = etc / "policy.yaml"

    def make(body: str = "") -> str:
        text = body
        if "storage:" not in body:
            text = body + ("" if not body or body.endswith("\n") else "\n") + f"storage:\n  state_dir: {state}\n"
        tmp = etc / ".policy.yaml.new"
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
        return str(path)

    return make


@pytest.fixture
def scratch_policy(make_policy):
    """Path of a policy with every default except ``state_dir`` (tmp_path/state, 0700)."""
    return make_policy("")


@pytest.fixture
def state_dir(tmp_path):
    """tmp_path/state, mode 0700 (the folder ``scratch_policy`` points at)."""
    state = tmp_path / "state"
    if not state.exists():
        state.mkdir(mode=0o700)
    os.chmod(state, 0o700)
    return str(state)


@pytest.fixture
def logs(monkeypatch):
    """Every line the code under test sends to syslog, instead of sending it."""
    from pam_twofa import log

    lines = []
    monkeypatch.setattr(log, "emit", lambda priority, message: lines.append(message))
    return lines
