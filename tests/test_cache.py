"""fleet.cache: the agent's local state file (versions seen, the offline copy, the journal), alone.

The agent's use of it against a real PostgreSQL is in tests/db/test_offline.py and test_rollback.py."""

from __future__ import annotations

import os
import sqlite3

import pytest

from pam_twofa.fleet.cache import FILE, Cache
from pam_twofa.store import RolledBack, StoreError

pytestmark = pytest.mark.root  # the file and its folder must be root's


@pytest.fixture
def path(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return str(state / "agent" / FILE)


def reopened(cache: Cache, keep_rows: bool = True) -> Cache:
    cache.stop()
    return Cache(cache.path, keep_rows)


def test_versions_and_rows_outlive_the_agent(path):
    cache = Cache(path)
    cache.start()
    cache.saw("alice", 3, "sealed-3")
    cache.saw("alice", 2, "sealed-2")  # older: ignored
    cache.confirmed(1000.0)
    cache = reopened(cache)
    assert cache.known("alice") == 3
    assert cache.row("alice") == ("sealed-3", 3)
    assert cache.confirmed_at == 1000.0
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"


def test_a_row_older_than_seen_or_missing_is_a_rollback(path):
    cache = Cache(path)
    cache.saw("alice", 5)
    cache.check("alice", True, 5)
    cache.check("bob", False, 0)  # never seen: nothing to compare
    for exists, version in ((True, 4), (False, 0), (True, None)):
        with pytest.raises(RolledBack, match="rollback: user=alice"):
            cache.check("alice", exists, version)


def test_the_journal_is_in_the_file_when_append_returns(path):
    cache = Cache(path)
    cache.append("alice", 3, "base", "entry-1", 100)
    cache.append("alice", 3, "base", "entry-2", None)
    cache.append("bob", 0, None, "entry-3", None)
    # Another connection (another process) sees them at once, before any stop or flush.
    found = sqlite3.connect(path).execute("SELECT user_name, sealed FROM journal ORDER BY seq").fetchall()
    assert found == [("alice", "entry-1"), ("alice", "entry-2"), ("bob", "entry-3")]
    assert cache.journal_users() == ["alice", "bob"]
    entries = cache.journal("alice")
    assert [e.step for e in entries] == [100, None]
    cache.drop("alice", entries[-1].seq)
    assert cache.journal_users() == ["bob"] and not cache.has_journal("alice")
    cache = reopened(cache)
    assert cache.journal_users() == ["bob"] and cache.counts() == (0, 1, 1)


def test_without_offline_logins_no_copy_is_kept(path):
    cache = Cache(path)
    cache.start()
    cache.saw("alice", 3, "sealed-3")
    cache.confirmed(1000.0)
    cache = reopened(cache, keep_rows=False)
    assert cache.row("alice") is None and cache.confirmed_at is None
    assert cache.known("alice") == 3  # the versions stay: the rollback check needs no copy
    cache.saw("alice", 4, "sealed-4")
    cache.stop()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM rows").fetchone()[0] == 0


def test_a_state_file_others_may_read_or_a_link_is_refused(path):
    Cache(path).stop()
    os.chmod(path, 0o644)
    with pytest.raises(StoreError, match="readable by others"):
        Cache(path)
    os.unlink(path)
    os.symlink("/etc/passwd", path)
    with pytest.raises(StoreError, match="not a regular file"):
        Cache(path)
