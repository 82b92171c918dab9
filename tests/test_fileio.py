"""write_atomic and friends (docs/store.md): temporary file in the same folder, fsync, rename; never through a symlink."""

import multiprocessing
import os
import signal
import stat
import time

import pytest

from pam_twofa.system import fileio
from pam_twofa.system.fileio import describe_mode, fsync_dir, is_private, owner_mode_problem, write_atomic


def listing(folder):
    return sorted(os.listdir(folder))


@pytest.mark.root
def test_creates_file_with_data_and_private_mode(tmp_path):
    path = tmp_path / "a.rec"
    old = os.umask(0)
    try:
        write_atomic(str(path), b"hello\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"hello\n"
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert listing(tmp_path) == ["a.rec"]


def test_mode_is_exact_whatever_the_umask(tmp_path):
    path = tmp_path / "cache"
    old = os.umask(0o077)
    try:
        write_atomic(str(path), b"x", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_replaces_by_rename_not_in_place(tmp_path):
    path = tmp_path / "a.rec"
    write_atomic(str(path), b"old")
    os.link(path, tmp_path / "reader-view")  # what a reader that opened the old file sees
    before = os.stat(path).st_ino
    write_atomic(str(path), b"new contents")
    assert path.read_bytes() == b"new contents"
    assert (tmp_path / "reader-view").read_bytes() == b"old"
    assert os.stat(path).st_ino != before
    assert listing(tmp_path) == ["a.rec", "reader-view"]


def test_large_data_written_completely(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    write_atomic(str(tmp_path / "big"), data)
    assert (tmp_path / "big").read_bytes() == data


def test_empty_data(tmp_path):
    write_atomic(str(tmp_path / "e"), b"")
    assert (tmp_path / "e").read_bytes() == b""


@pytest.mark.parametrize("locked", [True, False])
def test_stale_temporary_file_is_replaced(tmp_path, locked):
    path = tmp_path / "a.rec"
    stale = tmp_path / (".a.rec.tmp" if locked else f".a.rec.{os.getpid()}.tmp")
    stale.write_bytes(b"half-written garbage from a crash")
    os.chmod(stale, 0o644)
    write_atomic(str(path), b"fresh", locked=locked)
    assert path.read_bytes() == b"fresh"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert listing(tmp_path) == ["a.rec"]


def test_unlocked_writers_use_their_own_temporary_name(tmp_path):
    other = tmp_path / ".a.rec.1.tmp"  # another process's temporary file (pid 1 is never us)
    other.write_bytes(b"theirs")
    write_atomic(str(tmp_path / "a.rec"), b"mine", locked=False)
    assert other.read_bytes() == b"theirs"
    assert listing(tmp_path) == [".a.rec.1.tmp", "a.rec"]


@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_planted_at_the_temporary_name_is_never_followed(tmp_path, dangling):
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"precious")
        os.chmod(victim, 0o644)
    os.symlink(victim, tmp_path / ".a.rec.tmp")
    write_atomic(str(tmp_path / "a.rec"), b"record")
    assert (tmp_path / "a.rec").read_bytes() == b"record"
    assert not os.path.islink(tmp_path / "a.rec")
    if dangling:
        assert not os.path.lexists(victim)  # never created through the link
        assert listing(tmp_path) == ["a.rec"]
    else:
        assert victim.read_bytes() == b"precious"
        assert stat.S_IMODE(os.stat(victim).st_mode) == 0o644
        assert listing(tmp_path) == ["a.rec", "victim"]


def test_symlink_at_the_final_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, tmp_path / "a.rec")
    write_atomic(str(tmp_path / "a.rec"), b"record")
    assert not os.path.islink(tmp_path / "a.rec")
    assert (tmp_path / "a.rec").read_bytes() == b"record"
    assert victim.read_bytes() == b"precious"


def test_failure_before_rename_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.rec"
    write_atomic(str(path), b"old")

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fileio.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_atomic(str(path), b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert listing(tmp_path) == ["a.rec"]


def test_failure_at_rename_leaves_no_temporary(tmp_path):
    (tmp_path / "a.rec").mkdir()  # cannot rename a file over a folder
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "a.rec"), b"new")
    assert listing(tmp_path) == ["a.rec"]
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "a.rec"), b"new", locked=False)
    assert listing(tmp_path) == ["a.rec"]


def _writer(path, contents, ready):
    ready.set()
    i = 0
    while True:
        write_atomic(path, contents[i % 2])
        i += 1


def test_readers_never_see_a_partial_file_and_sigkill_loses_nothing(tmp_path):
    """A real writer process replacing the file in a loop, killed with SIGKILL at a random moment."""
    path = str(tmp_path / "a.rec")
    contents = (b"A" * 200_000, b"B" * 150_000)
    write_atomic(path, contents[0])
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_writer, args=(path, contents, ready))
    proc.start()
    try:
        assert ready.wait(10)
        seen = set()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with open(path, "rb") as handle:
                data = handle.read()
            assert data in contents
            seen.add(data[:1])
    finally:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    assert seen == {b"A", b"B"}  # the writer really was replacing the file meanwhile
    with open(path, "rb") as handle:
        assert handle.read() in contents
    # a temporary file may be left by the kill; the next write removes it
    write_atomic(path, b"after")
    assert listing(tmp_path) == ["a.rec"]
    with open(path, "rb") as handle:
        assert handle.read() == b"after"


def test_fsync_dir(tmp_path):
    fsync_dir(str(tmp_path))
    with pytest.raises(NotADirectoryError):
        (tmp_path / "f").write_text("x")
        fsync_dir(str(tmp_path / "f"))


@pytest.mark.root
def test_is_private_and_describe_mode(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, 0o600)
    assert is_private(os.stat(path), 0)
    assert not is_private(os.stat(path), 1000)
    for mode in (0o640, 0o604, 0o610, 0o601, 0o700 | 0o020):
        os.chmod(path, mode)
        assert not is_private(os.stat(path), 0)
    os.chmod(path, 0o644)
    os.chown(path, 65534, 65534)
    assert describe_mode(os.stat(path)) == "mode 0644, owner uid 65534"


@pytest.mark.root
def test_owner_mode_problem_names_the_file_what_is_wrong_and_the_fix(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, 0o600)
    assert owner_mode_problem(os.stat(path), "P", "the file") is None
    assert owner_mode_problem(os.stat(path), "P", "the file", uid=1000) == (
        "P: the file must be owned by uid 1000, not uid 0: chown 1000 P"
    )
    os.chown(path, 65534, 65534)
    assert owner_mode_problem(os.stat(path), "P", "the file") == (
        "P: the file must be owned by root (uid 0), not uid 65534: chown root P"
    )
    assert owner_mode_problem(os.stat(path), "P", "the file", uid=65534) is None
    os.chown(path, 0, 0)
    cases = [
        # (mode, forbidden, message after "P: the file is mode ...")
        (0o640, 0o077, "0640, readable by others: chmod go-rwx P"),
        (0o604, 0o077, "0604, readable by others: chmod go-rwx P"),
        (0o620, 0o077, "0620, writable by others: chmod go-rwx P"),
        (0o610, 0o077, "0610, open to others: chmod go-rwx P"),
        (0o664, 0o022, "0664, writable by others: chmod go-w P"),
        (0o602, 0o022, "0602, writable by others: chmod go-w P"),
    ]
    for mode, forbidden, says in cases:
        os.chmod(path, mode)
        assert owner_mode_problem(os.stat(path), "P", "the file", forbidden=forbidden) == f"P: the file is mode {says}"
    for mode in (0o644, 0o755, 0o600, 0o400):  # readable by others is fine where only writing is forbidden
        os.chmod(path, mode)
        assert owner_mode_problem(os.stat(path), "P", "the file", forbidden=0o022) is None
    os.chmod(path, 0o644)
    assert owner_mode_problem(os.stat(path), "P", "the file", fix="chown root:root P; chmod 0600 P") == (
        "P: the file is mode 0644, readable by others: chown root:root P; chmod 0600 P"
    )


@pytest.mark.root
def test_owner_mode_problem_and_is_private_agree(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    for uid in (0, 65534):
        os.chown(path, uid, uid)
        for mode in range(0o1000):
            os.chmod(path, mode)
            st = os.stat(path)
            assert is_private(st, 0) == (owner_mode_problem(st, "P", "f") is None), oct(mode)


@pytest.mark.root
def test_owner_mode_problem_of_a_sticky_folder_shows_the_whole_mode(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    os.chmod(folder, 0o1777)
    assert owner_mode_problem(os.stat(folder), "D", "the folder", forbidden=0o022) == (
        "D: the folder is mode 1777, writable by others: chmod go-w D"
    )


def test_the_file_and_then_its_folder_are_fsynced(tmp_path, fsynced):
    write_atomic(str(tmp_path / "a.rec"), b"data")
    assert fsynced == ["file", "folder"]
