"""The store contract: one suite of the ``Store`` interface run against every backend.

``FileStore`` (files under a scratch state folder), ``PgStore`` (the commands'
store) and ``AgentStore`` (the login's store, through a real
``pam-twofa-agent``), the last two on one real PostgreSQL 15 and one fleet for
the module (tests/pgfixtures.py ``shared_fleet``; every row of ``twofa_records``
is made a tombstone at its next version before each test: the agent, which
remembers the versions it saw, would take rows deleted under it for a rollback). What the contract is: docs/store.md, "The store contract",
and the docstrings of pam_twofa/store/__init__.py. A test here speaks only the
interface; what it needs to see or do beneath it (a corrupted record, whether a
record was written again) is the backend helper's job.
"""

import os
import select
import threading
import time

import psycopg
import pytest
from pgfixtures import shared_fleet  # noqa: F401  (fixture)

from pam_twofa.core.record import FIELDS, MAX_BYTES, MAX_SEEN, MAX_TRUSTED, Record, RecordError, dumps
from pam_twofa.fleet.database import TOMBSTONE
from pam_twofa.store import MAX_NAME_BYTES, CorruptedRecord, Store, StoreError, storable_name
from pam_twofa.store.agent import AgentStore
from pam_twofa.store.files import FileStore

AGENT_TIMEOUT = 10.0  # seconds for each answer of the agent: far above any wait below


# -- the backends ----------------------------------------------------------------------


class FilesBackend:
    """FileStore objects on one state folder, and the files beneath them."""

    def __init__(self, root) -> None:
        self.state = root / "state"
        self.state.mkdir(mode=0o700)
        os.chmod(self.state, 0o700)

    def make(self) -> Store:
        """A new store object, as another process would have it."""
        return FileStore(str(self.state))

    def _path(self, user: str) -> str:
        return FileStore(str(self.state))._paths(user)[0]

    def _write(self, user: str, data: bytes) -> None:
        FileStore(str(self.state))._ready(create=True)
        fd = os.open(self._path(user), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def corrupt(self, user: str, how: str) -> None:
        if how == "garbage":
            self._write(user, b"\xff\xfe\x00garbage\n")
        else:  # "bad field": a record in every other way
            self._write(user, dumps(Record(user)).replace("digits 6", "digits six").encode())

    def copy_record(self, source: str, target: str) -> None:
        with open(self._path(source), "rb") as handle:
            self._write(target, handle.read())

    def stamp(self, user: str):
        """Changes whenever the user's record is written again."""
        st = os.stat(self._path(user))
        return st.st_ino, st.st_mtime_ns, st.st_ctime_ns

    def close(self) -> None:
        pass


class DatabaseBackend:
    """PgStore or AgentStore objects on the shared fleet, and its rows (as the database's owner)."""

    def __init__(self, fleet, via_agent: bool) -> None:
        from pam_twofa.fleet import key as fleetkey

        self.fleet = fleet
        self.via_agent = via_agent
        self.keyring = fleetkey.load(str(fleet.key_file))
        self.opened: list = []
        self.conn = psycopg.connect(fleet.server.admin_dsn(fleet.dbname))
        self.conn.autocommit = True
        for (user,) in self.sql("SELECT user_name FROM twofa_records"):
            self._put_sealed(user, lambda version, u=user: fleetkey.seal(self.keyring, u, TOMBSTONE, version))

    def sql(self, statement: str, params=()) -> list:
        with self.conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def make(self) -> Store:
        """A new store object, as another process would have it (a PgStore is one connection)."""
        if self.via_agent:
            return AgentStore(str(self.fleet.socket), AGENT_TIMEOUT)
        store = self.fleet.store()
        self.opened.append(store)
        return store

    def _put_sealed(self, user: str, sealed) -> None:
        """Write the user's row at its next version (so that it is never a rollback): ``sealed(version)``."""
        (version,) = self.sql("SELECT coalesce(max(version), 0) + 1 FROM twofa_records WHERE user_name = %s", (user,))[
            0
        ]
        self.sql(
            "INSERT INTO twofa_records (user_name, sealed, key_ids, version) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (user_name) DO UPDATE SET sealed = EXCLUDED.sealed, key_ids = EXCLUDED.key_ids, "
            "version = EXCLUDED.version",
            (user, sealed(version), ",".join(self.keyring.ids), version),
        )

    def corrupt(self, user: str, how: str) -> None:
        from pam_twofa.fleet import key as fleetkey

        if how == "garbage":
            self._put_sealed(user, lambda version: "garbage")
        else:  # "bad field": sealed right, under this user's name, but not a valid record
            text = dumps(Record(user)).replace("digits 6", "digits six")
            self._put_sealed(user, lambda version: fleetkey.seal(self.keyring, user, text, version))

    def copy_record(self, source: str, target: str) -> None:
        (sealed,) = self.sql("SELECT sealed FROM twofa_records WHERE user_name = %s", (source,))[0]
        self._put_sealed(target, lambda version: sealed)

    def stamp(self, user: str):
        """Changes whenever the user's row is written again (xmin: the transaction that wrote it)."""
        return self.sql("SELECT xmin::text, sealed FROM twofa_records WHERE user_name = %s", (user,))

    def close(self) -> None:
        for store in self.opened:
            store.close()
        self.conn.close()


@pytest.fixture(params=["files", "database", "agent"])
def backend(request, tmp_path):
    made: FilesBackend | DatabaseBackend
    if request.param == "files":
        made = FilesBackend(tmp_path)
    else:
        made = DatabaseBackend(request.getfixturevalue("shared_fleet"), via_agent=request.param == "agent")
    try:
        yield made
    finally:
        made.close()


# -- helpers ---------------------------------------------------------------------------------


def put(store: Store, record: Record) -> None:
    with store.locked(record.user) as section:
        section.save(record)


def within(seconds: float, work):
    """``work()`` in another thread: its result if it ends within ``seconds``; the test fails if it
    is still waiting then (a wait on a lock that must not be taken)."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class Holder(threading.Thread):
    """A section of ``user`` in another thread, on a store object of its own, held until
    ``release`` is set; then it saves ``save`` (if given) and notes the time just before the
    section ends."""

    def __init__(self, store: Store, user: str, read: bool = True, save: Record | None = None) -> None:
        super().__init__(daemon=True)
        self.store, self.user, self.read, self.save = store, user, read, save
        self.entered = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self.ending_at: float | None = None

    def run(self) -> None:
        try:
            with self.store.locked(self.user, read=self.read) as section:
                self.entered.set()
                self.release.wait(30)
                if self.save is not None:
                    section.save(self.save)
                self.ending_at = time.monotonic()
        except BaseException as exc:
            self.error = exc
        finally:
            self.entered.set()

    def hold(self) -> "Holder":
        self.start()
        assert self.entered.wait(30) and self.error is None, self.error
        return self

    def finish(self) -> None:
        self.release.set()
        self.join(30)
        assert not self.is_alive() and self.error is None, self.error


def full_record(user: str, big: bool = False) -> Record:
    """A record with every field of ``FIELDS`` set to something else than its default; ``big``:
    each as large as the format takes (text of 1024 characters, 16 trusted and 32 seen addresses, ...)."""
    count = 300 if big else 3
    values = {
        "digits": 10 if big else 8,
        "period": 3600 if big else 60,
        "enrolled_at": 1_700_000_000,
        "last_step": 99_999_999_999_999_999_999 if big else 56_666_667,  # 20 digits: the codec's limit
        "locked_until": -99_999_999_999_999_999_999 if big else 1_900_000_000,
        "last_success_at": 1_700_000_100,
        "email_code_expires": 1_700_000_900,
        "key": bytes(range(256)) if big else b"\x00\xff" + bytes(range(1, 19)),
        "recovery_salt": b"\x01" * 16,
        "email_code_salt": b"\x02" * 16,
        "email_code_hash": b"\x03" * 32,
        "algorithm": "SHA512",
        "last_success_rhost": "ä" * 1024 if big else "2001:db8::7",
        "email": "é" * 1024 if big else "José Ünïcode <jose+2fa@example.org>",
        "recovery_hashes": [bytes([i % 256]) * 32 for i in range(count)],
        "failures": [1_700_000_000 + i for i in range(count)],
        "email_sends": [1_700_000_500 + i for i in range(count)],
        "trusted": {
            ("f" * 60 if big else "2001:db8::") + format(i, "x"): 1_800_000_000 + i for i in range(MAX_TRUSTED)
        },
        "seen": {("e" * 60 if big else "192.0.2.") + format(i, "x"): 1_700_000_200 + i for i in range(MAX_SEEN)},
        "invited_at": 1_700_000_300,
    }
    assert list(values) == [field[0] for field in FIELDS], "a new field of record.FIELDS needs a value here"
    default = Record(user)
    for name, value in values.items():
        assert value != getattr(default, name), name
    record = Record(user, **values)
    assert len(dumps(record).encode()) <= MAX_BYTES
    return record


# Every name NSS could hand out that storable_name takes: each must come back as it went in.
STORABLE = [
    "alice",
    "Alice",  # another user than alice, on every backend
    "MACHINE$",
    "$",
    "john.doe",
    "user@example.org",
    "_svc",
    "CORP\\alice",
    "josé",  # precomposed é ...
    "jose\u0301",  # ... and e + a combining accent: another name
    "日本語",
    "emoji \U0001f642",
    "two words",
    " leading space",
    "trailing space ",
    "a/b",
    "../../etc/passwd",
    ".",
    "..",
    ".hidden",
    "-",
    "-dash",
    "--help",
    "%41",  # what the file encoding of "A" would look like
    "%",
    "#" + "0" * 64,  # what the file form of a hashed long name looks like
    "x'; DROP TABLE twofa_records; --",
    'say "hi"',
    "x" * 240,
    "x" * 241,
    "x" * MAX_NAME_BYTES,
    "é" * (MAX_NAME_BYTES // 2),
    "\U0001f642" * (MAX_NAME_BYTES // 4),
    "." + "-" * (MAX_NAME_BYTES - 1),
]

UNSTORABLE = [
    "",
    "a\nb",
    "a\rb",
    "\t",
    "a\x00b",
    "a\x7fb",
    "a\x85b",  # NEL
    "a\u2028b",  # LINE SEPARATOR
    "a\xa0b",  # NO-BREAK SPACE: a separator, not printable for str.isprintable
    "\udcff",  # a lone surrogate (what surrogateescape makes of a byte that is not UTF-8)
    "x" * (MAX_NAME_BYTES + 1),
    "é" * (MAX_NAME_BYTES // 2) + "x",  # 1025 bytes in 513 characters
    "x" * 200_000,  # longer than an agent frame
]


def name_id(name: str) -> str:
    return f"{ascii(name)[1:25]}-{len(name.encode('utf-8', 'surrogatepass'))}b"


# -- load, save, update, delete, discard ---------------------------------------------------


def test_a_user_without_a_record(backend):
    store = backend.make()
    assert store.load("alice") is None
    assert store.users() == []
    with store.locked("alice") as section:
        assert section.user == "alice"
        assert section.record is None
    assert store.delete("alice") is False
    assert store.discard("alice") is False
    assert store.update("alice", lambda old: None) is None
    assert store.users() == [] and store.load("alice") is None  # none of that made a record


def test_save_then_load_from_this_and_another_store_object(backend):
    store = backend.make()
    record = Record("alice", key=b"k" * 20, last_step=5)
    with store.locked("alice") as section:
        section.save(record)
        assert section.record == record
    assert store.load("alice") == record
    assert backend.make().load("alice") == record
    with backend.make().locked("alice") as section:
        assert section.record == record
    assert store.users() == ["alice"]


def test_update_gives_the_current_record_stores_what_change_returns_and_returns_it(backend):
    store = backend.make()
    seen, bump_results = [], []

    def bump(old):
        seen.append(old)
        bump_results.append(Record("alice", last_step=1 if old is None else old.last_step + 1))
        return bump_results[-1]

    assert store.update("alice", bump) == Record("alice", last_step=1)
    returned = store.update("alice", bump)
    assert returned == Record("alice", last_step=2)
    assert returned is bump_results[-1]  # what change returned, not a copy
    assert seen == [None, Record("alice", last_step=1)]
    assert store.load("alice") == Record("alice", last_step=2)


def test_update_returning_none_deletes(backend):
    store = backend.make()
    put(store, Record("alice", last_step=1))
    assert store.update("alice", lambda old: None) is None
    assert store.load("alice") is None
    assert store.users() == []


def test_update_with_a_change_that_edits_the_record_it_is_given(backend):
    store = backend.make()
    put(store, Record("alice", last_step=1))

    def edit(record):
        record.last_step = 2
        record.failures.append(3)
        return record

    assert store.update("alice", edit) == Record("alice", last_step=2, failures=[3])
    assert store.load("alice") == Record("alice", last_step=2, failures=[3])


def test_an_unchanged_record_is_not_written_again(backend):
    store = backend.make()
    put(store, Record("alice", last_step=1))
    before = backend.stamp("alice")
    assert store.update("alice", lambda old: old) == Record("alice", last_step=1)
    assert store.update("alice", lambda old: Record("alice", last_step=1)) == Record("alice", last_step=1)
    with store.locked("alice"):
        pass
    with store.locked("alice", read=False):
        pass
    assert backend.stamp("alice") == before
    store.update("alice", lambda old: Record("alice", last_step=2))
    assert backend.stamp("alice") != before  # and the stamp does see a write


def test_delete_and_discard_say_whether_there_was_a_record(backend):
    store = backend.make()
    assert store.delete("alice") is False
    put(store, Record("alice"))
    assert store.delete("alice") is True
    assert store.load("alice") is None
    assert store.delete("alice") is False
    assert store.discard("alice") is False
    put(store, Record("alice"))
    assert store.discard("alice") is True
    assert store.load("alice") is None
    assert store.users() == []


def test_a_section_sees_its_own_saves_and_deletes(backend):
    store = backend.make()
    with store.locked("alice") as section:
        assert section.delete() is False
        section.save(Record("alice", last_step=1))
        assert section.record == Record("alice", last_step=1)
        assert section.delete() is True
        assert section.record is None
        assert section.delete() is False
        section.save(Record("alice", last_step=2))
    assert store.load("alice") == Record("alice", last_step=2)
    with store.locked("alice") as section:
        section.save(Record("alice", last_step=3))
        assert section.delete() is True
    assert store.load("alice") is None


def test_save_stores_the_record_as_it_was_at_the_call(backend):
    store = backend.make()
    record = Record("alice", last_step=1, failures=[1])
    with store.locked("alice") as section:
        section.save(record)
        record.last_step = 99
        record.failures.append(2)
    assert store.load("alice") == Record("alice", last_step=1, failures=[1])


def test_a_section_saves_only_its_own_users_record(backend):
    store = backend.make()
    put(store, Record("alice", last_step=1))
    with store.locked("alice") as section:
        with pytest.raises(StoreError, match="its own user"):
            section.save(Record("bob"))
        assert section.record == Record("alice", last_step=1)
    assert store.users() == ["alice"]
    assert store.load("alice") == Record("alice", last_step=1)


def test_a_section_without_reading_gives_no_record_and_can_delete_or_save(backend):
    store = backend.make()
    put(store, Record("alice", last_step=1))
    with store.locked("alice", read=False) as section:
        assert section.record is None
    assert store.load("alice") == Record("alice", last_step=1)  # leaving it changed nothing
    with store.locked("alice", read=False) as section:
        assert section.delete() is True
        assert section.delete() is False
    assert store.load("alice") is None
    with store.locked("alice", read=False) as section:
        section.save(Record("alice", last_step=2))
    assert store.load("alice") == Record("alice", last_step=2)


@pytest.mark.parametrize("big", [False, True], ids=["every-field", "every-field-at-its-largest"])
def test_a_record_with_every_field_set_round_trips_exactly(backend, big):
    store = backend.make()
    for user in ("alice", "é" * (MAX_NAME_BYTES // 2)):
        record = full_record(user, big)
        put(store, record)
        assert store.load(user) == record
        assert backend.make().load(user) == record
        with store.locked(user) as section:
            assert section.record == record
        assert store.update(user, lambda old: old) == record
    assert store.users() == sorted(["alice", "é" * (MAX_NAME_BYTES // 2)])


@pytest.mark.parametrize(
    "field, value",
    [
        ("email", "a\nb"),
        ("algorithm", "MD5"),
        ("digits", 99),
        ("period", 0),
        ("trusted", {f"192.0.2.{i}": 1 for i in range(MAX_TRUSTED + 1)}),
    ],
)
def test_a_record_the_reader_would_refuse_is_refused_at_save(backend, field, value):
    """Never stored to come back as a CorruptedRecord (the user locked out): RecordError at save."""
    store = backend.make()
    put(store, Record("alice", last_step=1))
    with store.locked("alice") as section:
        with pytest.raises(RecordError):
            section.save(Record("alice", **{field: value}))
    assert store.load("alice") == Record("alice", last_step=1)


# -- all or nothing ----------------------------------------------------------------------------


class Crash(Exception):
    pass


@pytest.mark.parametrize("before", [None, Record("alice", last_step=1)], ids=["no-record", "a-record"])
@pytest.mark.parametrize(
    "steps",
    [["save"], ["delete"], ["save", "delete"], ["delete", "save"], []],
    ids=["save", "delete", "save-delete", "delete-save", "nothing"],
)
def test_a_section_that_raises_changes_nothing_and_releases_the_lock(backend, before, steps):
    store = backend.make()
    if before is not None:
        put(store, before)
        stamp = backend.stamp("alice")
    crash = Crash("the login died")
    with pytest.raises(Crash) as info:
        with store.locked("alice") as section:
            for step in steps:
                if step == "save":
                    section.save(Record("alice", last_step=7))
                else:
                    section.delete()
            raise crash
    assert info.value is crash  # the body's own exception, not another
    assert store.load("alice") == before
    assert store.users() == ([] if before is None else ["alice"])
    if before is not None:
        assert backend.stamp("alice") == stamp
    # The lock is free at once, and the same store object works on.
    assert within(5, lambda: backend.make().update("alice", lambda old: Record("alice", last_step=8)))
    assert store.load("alice") == Record("alice", last_step=8)


def test_a_change_that_raises_in_update_writes_nothing(backend):
    store = backend.make()
    put(store, Record("alice", last_step=1))

    def change(old):
        old.last_step = 2
        raise Crash("the command died")

    with pytest.raises(Crash):
        store.update("alice", change)
    assert store.load("alice") == Record("alice", last_step=1)
    assert within(5, lambda: backend.make().delete("alice")) is True


def test_others_see_a_sections_change_only_when_it_ends(backend):
    store, other = backend.make(), backend.make()
    put(store, Record("alice", last_step=1))
    with store.locked("alice") as section:
        section.save(Record("alice", last_step=2))
        assert other.load("alice") == Record("alice", last_step=1)  # and a load does not wait
    assert other.load("alice") == Record("alice", last_step=2)
    with store.locked("alice") as section:
        section.delete()
        assert other.load("alice") == Record("alice", last_step=2)
        assert other.users() == ["alice"]
    assert other.load("alice") is None


# -- corrupted records -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["garbage", "bad field", "another user's record"])
def test_a_corrupted_record_is_refused_by_every_read_and_kept(backend, how):
    store = backend.make()
    put(store, Record("alice", last_step=1))
    if how == "another user's record":
        put(store, Record("bob", key=b"b" * 20))
        backend.copy_record("bob", "alice")
    else:
        backend.corrupt("alice", how)
    with pytest.raises(CorruptedRecord) as info:
        store.load("alice")
    assert "twofa-admin disable alice" in str(info.value)  # what to do about it
    with pytest.raises(CorruptedRecord):
        with store.locked("alice"):
            pytest.fail("a section opened on a corrupted record")
    with pytest.raises(CorruptedRecord):
        store.update("alice", lambda old: pytest.fail("update's change got a corrupted record"))
    with pytest.raises(CorruptedRecord):
        store.delete("alice")  # delete reads: only discard removes what does not read
    assert isinstance(info.value, StoreError)
    # Kept, still corrupted, listed (an admin finds it), and its lock was released each time.
    assert sorted(store.users()) == (["alice", "bob"] if how == "another user's record" else ["alice"])
    with pytest.raises(CorruptedRecord):
        within(5, lambda: backend.make().load("alice"))
    assert within(5, lambda: backend.make().discard("alice")) is True
    assert store.load("alice") is None
    assert store.discard("alice") is False
    put(store, Record("alice", last_step=2))  # and the user can enroll again
    assert store.load("alice") == Record("alice", last_step=2)


@pytest.mark.parametrize("how", ["garbage", "bad field"])
def test_a_corrupted_record_without_a_good_one_before(backend, how):
    backend.corrupt("alice", how)
    store = backend.make()
    assert store.users() == ["alice"]
    with pytest.raises(CorruptedRecord):
        store.load("alice")
    with store.locked("alice", read=False) as section:
        assert section.record is None
        assert section.delete() is True
    assert store.users() == []


# -- users() -----------------------------------------------------------------------------------


def test_users_lists_exactly_the_users_with_records_sorted_by_code_point(backend):
    store = backend.make()
    names = ["bob", "Zed", "alice", "Alice", "émile", "zoë", "_svc", "MACHINE$", "two words", "日本", "-x", ".y"]
    for name in names:
        put(store, Record(name))
    with store.locked("carol"):  # a section that wrote nothing
        pass
    with store.locked("dave", read=False):
        pass
    store.update("erin", lambda old: None)
    put(store, Record("frank"))
    store.delete("frank")
    put(store, Record("gina"))
    store.discard("gina")
    assert store.users() == sorted(names)
    assert backend.make().users() == sorted(names)
    if isinstance(backend, DatabaseBackend):  # the key canary is a row of the database, never a user
        assert backend.sql("SELECT count(*) FROM twofa_meta WHERE name = 'canary'") == [(1,)]


@pytest.mark.parametrize("via_agent", [False, True], ids=["database", "agent"])
def test_users_are_in_code_point_order_whatever_the_databases_collation(fleet, via_agent):
    """A database made with a natural-language collation (en_US.UTF-8 is the default of many
    systems; here ICU's "en", on the column) must not change the order users() gives."""
    fleet.server.psql('ALTER TABLE twofa_records ALTER COLUMN user_name TYPE text COLLATE "en-x-icu"', fleet.dbname)
    if via_agent:
        fleet.start_agent()
    from pam_twofa.fleet.database import Database, PgStore

    pg = PgStore(Database.from_policy(fleet.policy()))
    store: Store = AgentStore(str(fleet.socket), AGENT_TIMEOUT) if via_agent else pg
    names = ["alice", "Bob", "émile", "Zed", "_svc", "a b"]
    try:
        for name in names:
            put(store, Record(name))
        assert store.users() == sorted(names) == ["Bob", "Zed", "_svc", "a b", "alice", "émile"]
    finally:
        pg.close()


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STORABLE, ids=name_id)
def test_every_storable_name_round_trips(backend, name):
    assert storable_name(name)
    store = backend.make()
    record = Record(name, key=b"k" * 20, last_step=3)
    assert store.load(name) is None
    put(store, record)
    loaded = backend.make().load(name)
    assert loaded == record and loaded.user == name
    assert store.users() == [name]
    assert store.update(name, lambda old: Record(name, last_step=old.last_step + 1)) == Record(name, last_step=4)
    with store.locked(name) as section:
        assert section.record == Record(name, last_step=4)
    assert store.delete(name) is True
    put(store, record)
    assert store.discard(name) is True
    assert store.users() == []


def test_every_storable_name_is_a_user_of_its_own(backend):
    store = backend.make()
    for index, name in enumerate(STORABLE):
        put(store, Record(name, last_step=index))
    assert store.users() == sorted(STORABLE)
    for index, name in enumerate(STORABLE):
        assert store.load(name) == Record(name, last_step=index), name_id(name)
    for name in STORABLE:
        assert store.delete(name) is True, name_id(name)
    assert store.users() == []


@pytest.mark.parametrize("name", UNSTORABLE, ids=name_id)
def test_an_unstorable_name_is_a_store_error_for_every_call(backend, name):
    assert not storable_name(name)
    store = backend.make()

    def change(old):
        pytest.fail("update called its change for an unstorable name")

    def section(read):
        with store.locked(name, read=read):
            pytest.fail("a section opened for an unstorable name")

    calls = {
        "load": lambda: store.load(name),
        "locked": lambda: section(True),
        "locked(read=False)": lambda: section(False),
        "update": lambda: store.update(name, change),
        "delete": lambda: store.delete(name),
        "discard": lambda: store.discard(name),
    }
    for what, call in calls.items():
        with pytest.raises(StoreError) as info:
            call()
        assert not isinstance(info.value, CorruptedRecord), what
        assert "user name cannot be stored" in str(info.value), (what, str(info.value))
    # Nothing was stored, and the store object works on.
    assert store.users() == []
    put(store, Record("alice"))
    assert store.users() == ["alice"]


# -- exclusivity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("first_reads, second_reads", [(True, True), (False, True), (True, False)])
def test_a_second_section_of_a_user_waits_for_the_first_to_end(backend, first_reads, second_reads):
    holder = Holder(backend.make(), "alice", read=first_reads, save=Record("alice", last_step=1)).hold()
    threading.Timer(0.5, holder.release.set).start()
    with backend.make().locked("alice", read=second_reads) as section:
        entered_at = time.monotonic()
        seen = section.record
    holder.finish()
    assert holder.ending_at is not None and entered_at > holder.ending_at
    assert seen == (Record("alice", last_step=1) if second_reads else None)


def test_sections_of_other_users_and_loads_do_not_wait(backend):
    put(backend.make(), Record("alice", last_step=1))
    holder = Holder(backend.make(), "alice", save=Record("alice", last_step=2)).hold()
    try:
        other = backend.make()
        within(3, lambda: put(other, Record("bob", last_step=1)))
        assert within(3, lambda: other.update("carol", lambda old: Record("carol"))) == Record("carol")
        assert within(3, lambda: other.load("alice")) == Record("alice", last_step=1)
        assert within(3, other.users) == ["alice", "bob", "carol"]
        assert not holder.release.is_set()
    finally:
        holder.finish()
    assert backend.make().load("alice") == Record("alice", last_step=2)


def test_a_section_in_another_process_excludes_too(backend):
    put(backend.make(), Record("alice", last_step=1))
    ready, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own store object, a section held for half a second
        code = 1
        try:
            os.close(ready)
            with backend.make().locked("alice") as section:
                os.write(ready_w, b"in")
                time.sleep(0.5)
                section.save(Record("alice", last_step=section.record.last_step + 1))
            code = 0
        except BaseException as exc:
            os.write(ready_w, repr(exc).encode()[:200])
        finally:
            os._exit(code)
    os.close(ready_w)
    try:
        assert select.select([ready], [], [], 30)[0], "the child never entered its section"
        assert os.read(ready, 200) == b"in"
        with backend.make().locked("alice") as section:
            assert section.record == Record("alice", last_step=2)  # read after the child's section ended
            section.save(Record("alice", last_step=3))
    finally:
        os.close(ready)
        _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.make().load("alice") == Record("alice", last_step=3)


def test_parallel_updates_of_one_user_lose_nothing(backend):
    threads, rounds = 4, 12
    errors: list = []

    def work():
        store = backend.make()
        try:
            for _ in range(rounds):
                store.update("alice", lambda old: Record("alice", last_step=(old.last_step if old else 0) + 1))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert backend.make().load("alice") == Record("alice", last_step=threads * rounds)
