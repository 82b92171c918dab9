"""Shared fixtures (a scratch policy and state folder in tmp_path) and the layer marker of every test.

A test's layer is the folder it lives in: tests/*.py are ``unit``, tests/pam
``pam``, tests/hardening ``hardening``, tests/db ``db``, tests/e2e ``e2e``,
tests/e2e_fleet ``e2e_fleet`` (markers registered in pyproject.toml). The
hook below gives each test its folder's marker, so ``pytest -m unit`` selects
a layer and no file can be left out of one: a test file anywhere else stops
the collection, and a marker naming another layer than the folder's is
dropped with a warning.
"""

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# Folder under tests/ -> layer marker; the files directly in tests/ are the unit layer.
LAYERS = {"pam": "pam", "hardening": "hardening", "db": "db", "e2e": "e2e", "e2e_fleet": "e2e_fleet"}
UNIT = "unit"
ALL_LAYERS = {UNIT, *LAYERS.values()}


def layer_of(path: Path) -> str | None:
    """The layer of a test file from its folder, or None when it is in no layer's folder."""
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    if len(parts) == 1:
        return UNIT
    if len(parts) == 2:
        return LAYERS.get(parts[0])
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    outside: list[str] = []
    overridden: dict[str, tuple[str, set[str]]] = {}
    for item in items:
        layer = layer_of(Path(item.path))
        if layer is None:
            outside.append(item.nodeid)
            continue
        # The folder decides, so that "-m LAYER" selects exactly that folder's
        # tests: a marker naming another layer stops the run (below).
        for node in item.listchain():
            other = {mark.name for mark in node.own_markers} & ALL_LAYERS - {layer}
            if other:
                node.own_markers[:] = [mark for mark in node.own_markers if mark.name not in other]
                overridden.setdefault(str(item.path), (layer, set()))[1].update(other)
        item.add_marker(layer)
    if outside:
        raise pytest.UsageError(
            f"{len(outside)} tests in no layer folder (tests/*.py or tests/{{{','.join(LAYERS)}}}/): move them into "
            "one, or add the folder to LAYERS in tests/conftest.py and its marker to pyproject.toml:\n  "
            + "\n  ".join(outside)
        )
    if overridden:
        raise pytest.UsageError(
            "a test marked with another layer than its folder's (the folder decides; remove the marker):\n  "
            + "\n  ".join(
                f"{path}: {', '.join(sorted(other))} in {layer}" for path, (layer, other) in sorted(overridden.items())
            )
        )


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


def pytest_collection_finish(session):
    """Never a skip: a run that selected a test it cannot run fails (CI runs as root). Without root,
    leave the root tests out in so many words, -m "not root" (make unit does)."""
    if os.geteuid() == 0:
        return
    needs_root = sorted({str(item.path) for item in session.items if item.get_closest_marker("root")})
    if needs_root:
        raise pytest.UsageError(
            "selected tests need root: run as root (as scripts/test.sh does), or add -m 'not root' to leave "
            "them out: " + ", ".join(needs_root)
        )
