"""Shared fixtures: a scratch policy and state folder in tmp_path."""

import os

import pytest


def with_version(text: str) -> bool:
    """Whether a policy text has its (required) top-level ``version:`` line."""
    return any(line.startswith("version:") for line in text.splitlines())


@pytest.fixture
def make_policy(tmp_path):
    """make_policy(body="", verbatim=False) -> path of tmp_path/etc/policy.yaml (folder 0755) with ``body``.

    Unless ``body`` has its own ``storage:`` section, the policy points
    ``storage.state_dir`` at tmp_path/state (created 0700), and unless it has
    a ``version:`` line, ``version: 1`` is appended (after the body, so line
    numbers in errors stay those of the body). ``verbatim=True`` writes the
    body exactly as given. Writing again replaces the file by a rename (a new
    inode), as editors do.
    """
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    os.chmod(etc, 0o755)
    state = tmp_path / "state"
    if not state.exists():
        state.mkdir(mode=0o700)
    os.chmod(state, 0o700)
    path = etc / "policy.yaml"

    def make(body: str = "", verbatim: bool = False) -> str:
        text = body
        if not verbatim and "storage:" not in body:
            text = body + ("" if not body or body.endswith("\n") else "\n") + f"storage:\n  state_dir: {state}\n"
        if not verbatim and not with_version(text):
            text += ("" if not text or text.endswith("\n") else "\n") + "version: 1\n"
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
    from pam_twofa.system import log

    lines = []
    monkeypatch.setattr(log, "emit", lambda priority, message: lines.append(message))
    return lines


@pytest.fixture
def fsynced(monkeypatch):
    """What each fsync of ``fileio`` was called on, in order: "file" or "folder"."""
    import stat

    from pam_twofa.system import fileio

    kinds = []
    real = os.fsync

    def counted(fd):
        kinds.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real(fd)

    monkeypatch.setattr(fileio.os, "fsync", counted)
    return kinds
