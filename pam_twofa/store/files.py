"""The file store: records under ``state_dir/users``, one file and one lock file per user.

File layout: ``STATE_DIR/users/STEM.rec`` (the record) and ``STEM.lock`` (an
empty file for fcntl locks; it survives renames of the record, so a lock
always guards the current file). Every folder and file must be owned by root
with no access for group or others, and nothing is opened through a symlink.
``STEM`` is the account name itself when it is a safe file name, else a
reversible encoding of it (``encode_name``), so that any name the system's
user database returns can be stored.
"""

import os
import stat

from pam_twofa.core.record import MAX_BYTES, Record, RecordError, dumps, loads
from pam_twofa.store import SAFE_CHARS, CorruptedRecord, Section, Store, StoreError, shell_word, storable_name
from pam_twofa.system.fileio import describe_mode, fsync_dir, is_private, write_atomic

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from types import TracebackType

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MAX_STEM = 240  # a file name is at most 255 bytes, and ".lock" / ".tmp" / a leading "." are added


def encode_name(user: str) -> str:
    """The file name stem for ``user``: the name itself when it is a safe file name; otherwise
    ``%XX`` for every byte outside ``[A-Za-z0-9._-@$]`` (and a leading ``.`` or ``-``); and when
    that is too long for a file name, ``#`` and a SHA-256 of the name (the name is then read
    from inside the record). Safe names never hold ``%`` or ``#``, so the forms cannot collide."""
    if len(user) <= _MAX_STEM and user[0] not in ".-" and all(c in SAFE_CHARS for c in user):
        return user
    data = user.encode("utf-8", "surrogatepass")
    parts = []
    for index, byte in enumerate(data):
        char = chr(byte)
        if char in SAFE_CHARS and not (index == 0 and char in ".-"):
            parts.append(char)
        else:
            parts.append(f"%{byte:02X}")
    stem = "".join(parts)
    if len(stem) <= _MAX_STEM:
        return stem
    from pam_twofa.core.primitives import sha256_hex

    return "#" + sha256_hex(data)


def decode_name(stem: str) -> str | None:
    """The account name of a file name stem; None for the hashed form (read it from the record)."""
    if stem.startswith("#"):
        return None
    if "%" not in stem:
        return stem
    out = bytearray()
    index = 0
    while index < len(stem):
        char = stem[index]
        if char == "%":
            out += bytes.fromhex(stem[index + 1 : index + 3])
            index += 3
        else:
            out += char.encode("ascii")
            index += 1
    return out.decode("utf-8", "surrogatepass")


class _FileSection(Section):
    """An exclusive fcntl lock on the user's lock file, for ``with``; the record is read under it.

    ``save`` and ``delete`` only note the change (``save`` as the record's text, so a record
    edited after its save is stored as it was then); it is made when the section ends without
    an exception, and an exception drops it: the same all-or-nothing as a database section's
    transaction (docs/store.md, "The store contract").
    """

    def __init__(self, store: "FileStore", user: str, read: bool) -> None:
        self.store = store
        self.user = user
        self.read = read
        self.record = None
        self.path, self.lock_path = store._paths(user)
        self.fd = -1
        self.changed = False  # save or delete was called: ``pending`` is what the section stores
        self.pending: bytes | None = None  # the record's text, or None to remove it

    def __enter__(self) -> "_FileSection":
        import fcntl

        self.store._ready(create=True)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
        except OSError as exc:
            raise StoreError(
                f"{self.lock_path}: cannot open the lock file ({exc.strerror}); remove it if it is a link"
            ) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not is_private(st, self.store.uid):
            os.close(fd)
            raise StoreError(
                f"{self.lock_path}: lock file is not a private regular file ({describe_mode(st)}); remove it"
            )
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd
        if self.read:
            try:
                # Read again under the lock: another login may have written meanwhile.
                self.record = self.store.load(self.user)
            except BaseException:
                self._release()
                raise
        return self

    def __exit__(
        self, exc_type: "type[BaseException] | None", exc: "BaseException | None", tb: "TracebackType | None"
    ) -> None:
        try:
            if exc_type is None and self.changed:
                if self.pending is None:
                    self.store._remove(self.path)
                else:
                    write_atomic(self.path, self.pending)
        finally:
            self._release()  # after the write: the next section reads what this one stored

    def _release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the lock
            self.fd = -1

    def save(self, record: Record) -> None:
        if record.user != self.user:
            raise StoreError("a record can only be saved in its own user's section")
        self.pending = dumps(record).encode("utf-8")  # RecordError here, at the call, if it cannot be written
        self.changed = True
        self.record = record

    def delete(self) -> bool:
        existed = self.pending is not None if self.changed else os.path.lexists(self.path)
        self.pending = None
        self.changed = True
        self.record = None
        return existed


class FileStore(Store):
    """Records as files under ``STATE_DIR/users`` (docs/store.md)."""

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
        if not storable_name(user):
            raise StoreError("user name cannot be stored (empty, control characters, or too long)")
        base = os.path.join(self.users_dir, encode_name(user))
        return base + ".rec", base + ".lock"

    # -- interface ------------------------------------------------------------

    def load(self, user: str) -> Record | None:
        """The user's record, or None if there is none. Reads need no lock: writes are atomic renames."""
        path, _lock = self._paths(user)
        if not self._ready(create=False):
            return None
        data = self._read(path)
        if data is None:
            return None
        try:
            return loads(data.decode("utf-8"), user)
        except (UnicodeDecodeError, RecordError) as exc:
            # Never the decoder's own message: it quotes a byte of the record.
            why = str(exc) if isinstance(exc, RecordError) else "not UTF-8"
            raise CorruptedRecord(
                f"{path}: corrupted record ({why}); restore it from backup or run "
                f"twofa-admin disable {shell_word(user)} and re-enroll"
            ) from None

    def _read(self, path: str) -> bytes | None:
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
            return os.read(fd, MAX_BYTES + 1)
        finally:
            os.close(fd)

    def locked(self, user: str, read: bool = True) -> _FileSection:
        return _FileSection(self, user, read)

    def users(self) -> list[str]:
        if not self._ready(create=False):
            return []
        found = []
        for name in os.listdir(self.users_dir):
            if not name.endswith(".rec") or name.startswith("."):
                continue
            stem = name[:-4]
            try:
                user = decode_name(stem)
            except ValueError:
                continue  # not a name this store wrote
            if user is None:
                user = self._name_inside(os.path.join(self.users_dir, name))
            if user is not None and encode_name(user) == stem:
                found.append(user)
        return sorted(found)

    def _name_inside(self, path: str) -> str | None:
        """The user line of a record stored under a hashed name (too long to encode)."""
        try:
            data = self._read(path)
        except StoreError:
            return None
        if data is None:
            return None
        lines = data.decode("utf-8", "replace").split("\n", 2)
        if len(lines) < 2 or not lines[1].startswith("user "):
            return None
        return lines[1][5:]

    def _remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_dir(os.path.dirname(path))
