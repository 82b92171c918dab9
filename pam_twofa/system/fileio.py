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


def owner_mode_problem(
    st: os.stat_result, path: str, what: str, uid: int = 0, forbidden: int = 0o077, fix: str = ""
) -> str | None:
    """Why ``st`` (the stat of ``path``) is unsafe, or None: not owned by ``uid``, or a ``forbidden`` mode bit set.

    The one owner and mode rule of the package: root-only secrets and state
    forbid every group and other bit (0o077), files that others may read but
    not change (the policy, its folder) forbid the write bits (0o022). The
    message names the file, says what is wrong and ends with the commands that
    fix it: ``fix`` when the caller knows better (``chown root:root F; chmod
    0600 F`` for a secret), else the chown or ``chmod go-...`` that clears the
    problem. It never holds anything read from the file.
    """
    owner = "root" if uid == 0 else str(uid)
    if st.st_uid != uid:
        wanted = "root (uid 0)" if uid == 0 else f"uid {uid}"
        return f"{path}: {what} must be owned by {wanted}, not uid {st.st_uid}: {fix or f'chown {owner} {path}'}"
    mode = stat.S_IMODE(st.st_mode)
    bits = mode & forbidden
    if bits:
        how = "writable" if bits & 0o022 else "readable" if bits & 0o044 else "open"
        clear = "".join(c for c, mask in (("r", 0o044), ("w", 0o022), ("x", 0o011)) if forbidden & mask)
        return f"{path}: {what} is mode {mode:04o}, {how} {'to' if how == 'open' else 'by'} others: {fix or f'chmod go-{clear} {path}'}"
    return None


def is_private(st: os.stat_result, uid: int) -> bool:
    """Owned by ``uid`` and no access for group or others: ``owner_mode_problem`` with 0o077, as a yes or no."""
    return st.st_uid == uid and not st.st_mode & 0o077


def describe_mode(st: os.stat_result) -> str:
    """``mode 0644, owner uid 1000``: for messages about a file that is not what it should be."""
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}"
