"""Where records live: the ``Store`` interface every backend implements, and the rules for user names.

The login, the commands and any other backend speak one interface
(docs/store.md): ``load(user)`` reads without a lock; ``locked(user)`` opens
an exclusive section for one user, in which the record is read, a decision
made and the result written (``section.record``, ``section.save(record)``,
``section.delete()``); ``update``, ``delete``, ``discard`` and ``users``
serve the commands. The lock is held only while deciding, never while a
user types. What every backend promises, and where they may differ, is
docs/store.md, "The store contract" (tests/db/test_store_contract.py runs one
suite against all of them).

Backends: ``store.files`` (root-only files under ``state_dir/users``),
``store.agent`` (the database backend, through the host agent) and
``fleet.database.PgStore`` (the database backend, for the commands).
"""

import abc

from pam_twofa.core.record import Record

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Protocol

    class Change(Protocol):
        """What ``Store.update`` applies (a Protocol, not a Callable: so ``lambda old, r=r: r`` fits too)."""

        def __call__(self, old: Record | None, /) -> Record | None: ...


MAX_NAME_BYTES = 1024  # far beyond what NSS backends hand out (LOGIN_NAME_MAX is 256)
SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@$")


class StoreError(Exception):
    """The store cannot be read or written safely; the message says which file and why."""


class CorruptedRecord(StoreError):
    """The record is there but does not parse (or decrypt): ``discard`` removes it unread."""


class RolledBack(StoreError):
    """The database shows this host an older state of the user's row than it has already seen (an
    older version, or no row at all): written back from a backup, a failover or by hand. The login
    refuses it whatever ``on_error`` says (docs/store.md, "Versions")."""


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
    """One user's exclusive section: what was stored when it opened, and how to change it.

    All or nothing: what ``save`` and ``delete`` did is stored when the section ends
    without an exception, and nothing of it when it ends with one (the exception goes on).
    Others (``load``, other sections) see the change only once the section has ended."""

    user: str
    record: Record | None

    @abc.abstractmethod
    def save(self, record: Record) -> None:
        """Replace the user's record with ``record`` as it is now (later edits of the object are
        not stored); StoreError for another user's record; ``section.record`` is then ``record``."""

    @abc.abstractmethod
    def delete(self) -> bool:
        """Remove the user's record (read or not); True if there was one (in this section's view:
        after a ``save``, True; after a ``delete``, False)."""


class Store(abc.ABC):
    """The interface every backend implements. Every method taking a user name raises
    ``StoreError`` for a name ``storable_name`` refuses; a store object serves one section at
    a time (no nesting, and nothing else of the same object inside a section)."""

    @abc.abstractmethod
    def load(self, user: str) -> Record | None:
        """The user's record, or None; CorruptedRecord if it is there but unreadable. No lock:
        it never waits for a section."""

    @abc.abstractmethod
    def locked(self, user: str, read: bool = True) -> "AbstractContextManager[Section]":
        """A context manager giving a ``Section`` for ``user``, exclusive against every other
        section of the same user (on this host, or fleet-wide for a shared backend); sections
        of other users never wait for it. It reads the record under the lock (CorruptedRecord
        if unreadable, the lock then released); with ``read=False`` the record is not read
        (``section.record`` is None): for ``discard``."""

    @abc.abstractmethod
    def users(self) -> list[str]:
        """Every user that has a record (a corrupted one too), sorted by code point."""

    def update(self, user: str, change: "Change") -> Record | None:
        """Apply ``change(record_or_None) -> record_or_None`` in one section; None deletes, a
        record equal to the stored one writes nothing. ``change`` gets a copy, so it may edit
        and return it. Returns what ``change`` returned."""
        with self.locked(user) as section:
            new = change(None if section.record is None else section.record.copy())
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
