"""Where records live: the ``Store`` interface every backend implements, and the rules for user names.

The login, the commands and any other backend speak one interface
(docs/store.md): ``load(user)`` reads without a lock; ``locked(user)`` opens
an exclusive section for one user, in which the record is read, a decision
made and the result written (``section.record``, ``section.save(record)``,
``section.delete()``); ``update``, ``delete``, ``discard`` and ``users``
serve the commands. The lock is held only while deciding, never while a
user types.

Backends: ``store.files`` (root-only files under ``state_dir/users``) and
``store.agent`` (the database backend, through the host agent).
"""

import abc

from pam_twofa.core.record import Record

MAX_NAME_BYTES = 1024  # far beyond what NSS backends hand out (LOGIN_NAME_MAX is 256)
SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@$")


class StoreError(Exception):
    """The store cannot be read or written safely; the message says which file and why."""


class CorruptedRecord(StoreError):
    """The record is there but does not parse (or decrypt): ``discard`` removes it unread."""


def storable_name(user: str) -> bool:
    """Every name NSS can return, except empty ones and ones with control characters (which
    no directory hands out, and which must never reach a log line or a record)."""
    return bool(user) and user.isprintable() and len(user.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES


def shell_word(text: str) -> str:
    """``text`` as one word a shell reads back as it is, for commands printed in messages."""
    if text and all(c in SAFE_CHARS for c in text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


class Section(abc.ABC):
    """One user's exclusive section: what was stored when it opened, and how to change it."""

    user: str
    record: Record | None

    @abc.abstractmethod
    def save(self, record: Record) -> None:
        """Replace the user's record (atomically: all of it or nothing)."""

    @abc.abstractmethod
    def delete(self) -> bool:
        """Remove the user's record (read or not); True if there was one."""


class Store(abc.ABC):
    """The interface every backend implements (files today)."""

    @abc.abstractmethod
    def load(self, user: str) -> Record | None:
        """The user's record, or None; CorruptedRecord if it is there but unreadable."""

    @abc.abstractmethod
    def locked(self, user: str, read: bool = True):
        """A context manager giving a ``Section`` for ``user``, exclusive against every other
        section of the same user (on this host, or fleet-wide for a shared backend). With
        ``read=False`` the record is not read (``section.record`` is None): for ``discard``."""

    @abc.abstractmethod
    def users(self) -> list[str]:
        """Every user that has a record."""

    def update(self, user: str, change) -> Record | None:
        """Apply ``change(record_or_None) -> record_or_None`` in one section; None deletes.
        Returns what ``change`` returned."""
        with self.locked(user) as section:
            new = change(section.record)
            if new is None:
                if section.record is not None:
                    section.delete()
            elif new != section.record:
                section.save(new)
        return new

    def delete(self, user: str) -> bool:
        """Remove the user's record; True if there was one."""
        with self.locked(user) as section:
            existed = section.record is not None
            if existed:
                section.delete()
        return existed

    def discard(self, user: str) -> bool:
        """Remove the user's record WITHOUT reading it (a corrupted one, which ``load`` refuses:
        ``twofa-admin disable``). True if there was one."""
        with self.locked(user, read=False) as section:
            return section.delete()
