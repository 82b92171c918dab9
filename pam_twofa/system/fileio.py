"""Safe file primitives for root: atomic replace, no-follow opens, ownership checks."""

import os
import stat

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomic(path: str, data: bytes, mode: int = 0o600, locked: bool = True) -> None:
    """Replace ``path`` with ``data``: temporary file in the same folder, fsync, rename, fsync folder.

    The temporary name is created exclusively and never through a symlink. A
    crash at any point leaves either the old file or the new one, plus at
    worst a stale temporary file that the next write removes. Callers that
    do not hold a lock for ``path`` pass ``locked=False`` and get a name of
    their own process.
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp" if locked else f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, _CREATE, mode)
    except FileExistsError:
        # Left by a writer that crashed (under the lock, or with our pid): no
        # live writer owns it. unlink does not follow symlinks.
        os.unlink(tmp)
        fd = os.open(tmp, _CREATE, mode)
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, path)
    except BaseException:  # e.g. path is a folder: leave no temporary file behind
        os.unlink(tmp)
        raise
    fsync_dir(folder)


def write_all(fd: int, data: bytes) -> None:
    """Every byte of ``data`` to ``fd`` (``os.write`` may write less than it was given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(folder: str) -> None:
    fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_private(st, uid: int) -> bool:
    """Owned by ``uid`` and no access for group or others."""
    return st.st_uid == uid and not st.st_mode & 0o077


def describe_mode(st) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}"
