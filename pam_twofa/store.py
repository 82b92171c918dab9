"""The file store: one record per user under ``state_dir/users``, root-only.

The interface is the one SPEC §12 asks for, so that a database backend can
be added without touching the login logic: ``load(user)``, ``update(user,
change)`` (atomic, under a per-user lock), ``delete(user)``, ``users()``.

Layout: ``STATE_DIR/users/NAME.rec`` (the record) and ``NAME.lock`` (an empty
file for fcntl locks; it survives renames of the record, so a lock always
guards the current file). Every folder and file must be owned by root with no
access for group or others, and nothing is opened through a symlink.
"""

import os
import stat

from pam_twofa.fileio import describe_mode, fsync_dir, is_private, write_atomic
from pam_twofa.record import MAX_BYTES, Record, RecordError, dumps, loads

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class StoreError(Exception):
    """The store cannot be read or written safely; the message says which file and why."""


class CorruptedRecord(StoreError):
    """The record is a root-only regular file whose content does not parse: ``discard`` removes it."""


def valid_user_name(user: str) -> bool:
    """Names that are safe as file names: what useradd, SSSD and AD accounts use."""
    if not user or len(user) > 200 or user[0] in ".-" or not user.isascii():
        return False
    return all(c.isalnum() or c in "._-@$" for c in user)


class _Lock:
    """An exclusive fcntl lock on a user's lock file, for ``with``."""

    def __init__(self, path: str, uid: int) -> None:
        self.path = path
        self.uid = uid
        self.fd = -1

    def __enter__(self):
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot open the lock file ({exc.strerror}); remove it if it is a link"
            ) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not is_private(st, self.uid):
            os.close(fd)
            raise StoreError(f"{self.path}: lock file is not a private regular file ({describe_mode(st)}); remove it")
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        os.close(self.fd)  # closing releases the lock
        self.fd = -1


class FileStore:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.users_dir = os.path.join(state_dir, "users")
        self.uid = os.geteuid()

    # -- checks -------------------------------------------------------------

    def _check_dir(self, path: str, create: bool) -> bool:
        """True if ``path`` is a safe folder; False if missing (and not created)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not create:
                return False
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:  # another login or enrollment made it meanwhile: check theirs
                pass
            st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{path}: expected a folder, found something else (a link?); move it away")
        if not is_private(st, self.uid):
            raise StoreError(
                f"{path}: must be owned by root with mode 0700 ({describe_mode(st)}): chown root {path}; chmod 700 {path}"
            )
        return True

    def _ready(self, create: bool) -> bool:
        if not self._check_dir(self.state_dir, create=False):
            raise StoreError(
                f"{self.state_dir}: state folder is missing: mkdir -m 700 {self.state_dir} (the installer does this)"
            )
        return self._check_dir(self.users_dir, create)

    def _paths(self, user: str) -> tuple[str, str]:
        if not valid_user_name(user):
            raise StoreError("user name cannot be stored (unexpected characters or length)")
        base = os.path.join(self.users_dir, user)
        return base + ".rec", base + ".lock"

    # -- interface ------------------------------------------------------------

    def load(self, user: str) -> Record | None:
        """The user's record, or None if there is none. Reads need no lock: writes are atomic renames."""
        path, _lock = self._paths(user)
        if not self._ready(create=False):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot open ({exc.strerror}); a link is never followed: remove it") from None
        try:
            st = os.fstat(fd)
            # nlink 0: replaced by a concurrent write since we opened it, still a consistent record
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                raise StoreError(f"{path}: not a plain file with a single link; move it away and re-enroll the user")
            if not is_private(st, self.uid):
                raise StoreError(f"{path}: must be owned by root with mode 0600 ({describe_mode(st)})")
            data = os.read(fd, MAX_BYTES + 1)
        finally:
            os.close(fd)
        try:
            return loads(data.decode("utf-8"), user)
        except (RecordError, UnicodeDecodeError) as exc:
            raise CorruptedRecord(
                f"{path}: corrupted record ({exc}); restore it from backup or run twofa-admin disable {user} and re-enroll"
            ) from None

    def update(self, user: str, change) -> Record | None:
        """Apply ``change(record_or_None) -> record_or_None`` atomically under the user's lock.

        Returns what ``change`` returned; None deletes the record.
        """
        path, lock = self._paths(user)
        self._ready(create=True)
        with _Lock(lock, self.uid):
            new = change(self.load(user))
            if new is None:
                self._remove(path)
            else:
                write_atomic(path, dumps(new).encode("utf-8"))
        return new

    def locked(self, user: str) -> _Lock:
        """The user's lock, for callers that must read, decide and write in one step."""
        _path, lock = self._paths(user)
        self._ready(create=True)
        return _Lock(lock, self.uid)

    def save_locked(self, record: Record) -> None:
        """Write ``record``; the caller holds ``locked(record.user)``."""
        path, _lock = self._paths(record.user)
        write_atomic(path, dumps(record).encode("utf-8"))

    def delete(self, user: str) -> bool:
        """Remove the user's record; True if there was one."""
        existed = []

        def drop(old):
            existed.append(old is not None)
            return None

        self.update(user, drop)
        return existed[0]

    def discard(self, user: str) -> bool:
        """Remove the user's record under the lock WITHOUT reading it (a corrupted one, which
        ``load`` refuses: ``twofa-admin disable``). True if there was one."""
        path, lock = self._paths(user)
        self._ready(create=True)
        with _Lock(lock, self.uid):
            existed = os.path.lexists(path)
            self._remove(path)
        return existed

    def users(self) -> list[str]:
        if not self._ready(create=False):
            return []
        return sorted(
            name[:-4] for name in os.listdir(self.users_dir) if name.endswith(".rec") and not name.startswith(".")
        )

    def _remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_dir(os.path.dirname(path))
