"""The file store (docs/store.md): one private record per user, atomic updates under a per-user fcntl lock."""

import multiprocessing
import os
import stat
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.blocking import no_block

from pam_twofa.core.record import MAX_BYTES, Record, dumps, loads
from pam_twofa.store import Store, StoreError, storable_name
from pam_twofa.store.files import FileStore, decode_name, encode_name

KEY = bytes(range(20))


@pytest.fixture
def store(state_dir):
    return FileStore(state_dir)


def enrolled(user="alice", **fields) -> Record:
    base = dict(key=KEY, enrolled_at=1_700_000_000, recovery_salt=b"s" * 16, recovery_hashes=[b"h" * 32], last_step=5)
    base.update(fields)
    return Record(user, **base)


def put(store, record):
    return store.update(record.user, lambda old: record)


def rec_path(store, user="alice"):
    return os.path.join(store.users_dir, user + ".rec")


def refused(call, path) -> str:
    with no_block():
        with pytest.raises(StoreError) as info:
            call()
    message = str(info.value)
    assert message.startswith(str(path) + ":"), message
    assert "\n" not in message
    return message


# -- the interface ----------------------------------------------------------------


def test_missing_user_is_none(store):
    assert store.load("alice") is None
    assert not os.path.exists(store.users_dir)  # a read creates nothing
    assert store.users() == []


@pytest.mark.root
def test_update_creates_private_folder_and_record_and_roundtrips(store):
    record = enrolled(failures=[1, 2], email="a@example.org", last_success_rhost="192.0.2.1")
    returned = put(store, record)
    assert returned is record
    st = os.lstat(store.users_dir)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 0
    st = os.lstat(rec_path(store))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0 and st.st_nlink == 1
    loaded = store.load("alice")
    assert loaded == record
    assert loaded.key == KEY and loaded.failures == [1, 2] and loaded.email == "a@example.org"
    with open(rec_path(store), encoding="utf-8") as handle:
        assert loads(handle.read(), "alice") == record
    lock = os.path.join(store.users_dir, "alice.lock")
    assert stat.S_IMODE(os.lstat(lock).st_mode) == 0o600
    assert sorted(os.listdir(store.users_dir)) == ["alice.lock", "alice.rec"]


def test_update_passes_the_current_record(store):
    put(store, enrolled(failures=[1]))
    seen = []

    def change(old):
        seen.append(old)
        new = old.copy()
        new.failures.append(2)
        return new

    store.update("alice", change)
    assert seen[0] == enrolled(failures=[1])
    assert store.load("alice").failures == [1, 2]


def test_update_returning_none_deletes(store):
    put(store, enrolled())
    assert store.update("alice", lambda old: None) is None
    assert store.load("alice") is None
    assert not os.path.exists(rec_path(store))


def test_change_that_raises_writes_nothing(store):
    put(store, enrolled(failures=[1]))

    def boom(old):
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        store.update("alice", boom)
    assert store.load("alice") == enrolled(failures=[1])
    assert sorted(os.listdir(store.users_dir)) == ["alice.lock", "alice.rec"]


def test_delete(store):
    put(store, enrolled())
    put(store, enrolled("bob"))
    assert store.delete("alice") is True
    assert store.load("alice") is None
    assert store.load("bob") is not None
    assert store.delete("alice") is False
    assert store.delete("carol") is False
    assert store.users() == ["bob"]


def test_users_lists_records_only(store):
    for name in ("carol", "alice", "bob.smith", "MACHINE$"):
        put(store, enrolled(name))
    open(os.path.join(store.users_dir, ".x.rec.tmp"), "w").close()
    open(os.path.join(store.users_dir, "stray.txt"), "w").close()
    assert store.users() == ["MACHINE$", "alice", "bob.smith", "carol"]


def test_locked_section_reads_under_the_lock_and_saves(store):
    put(store, enrolled())
    with store.locked("alice") as section:
        record = section.record
        assert record == enrolled()
        record.last_step = 99
        section.save(record)
    assert store.load("alice").last_step == 99


def test_section_refuses_another_users_record(store):
    with store.locked("alice") as section, pytest.raises(StoreError):
        section.save(enrolled("bob"))
    assert store.users() == []


def test_file_store_implements_the_store_interface():
    assert issubclass(FileStore, Store)
    assert not Store.__abstractmethods__ - {"load", "locked", "users"}


@pytest.mark.parametrize("name", ["alice", "john.doe", "user@example.org", "MACHINE$", "a-b", "_svc", "x" * 200, "a1"])
def test_safe_user_names_are_their_own_file_names(store, name):
    assert encode_name(name) == name
    put(store, enrolled(name))
    assert store.load(name).user == name
    assert name in store.users()
    assert os.path.exists(os.path.join(store.users_dir, name + ".rec"))


ANY_NAMES = [
    "CORP\\alice",
    "alice@corp.example",
    "jos\u00e9",
    "two words",
    "../x",
    ".hidden",
    "a/b",
    "-rf",
    "..",
    "/etc/passwd",
    "a*",
    "a%41",
    "#x",
    "x" * 201,
    "\u00e9" * 200,  # 400 bytes: stored under a hashed name
    "y" * 1000,
    "\U0001f600 emoji",
]


@pytest.mark.parametrize("name", ANY_NAMES)
def test_any_account_name_is_stored_under_a_reversible_safe_file_name(store, name):
    stem = encode_name(name)
    assert "/" not in stem and not stem.startswith(".") and len(stem.encode()) <= 240
    assert decode_name(stem) in (name, None)
    put(store, enrolled(name))
    assert store.load(name).user == name
    assert store.users() == [name]
    assert sorted(os.listdir(store.users_dir)) == sorted([stem + ".rec", stem + ".lock"])
    assert store.delete(name) is True and store.users() == []


def test_encodings_of_distinct_names_never_collide():
    names = ANY_NAMES + ["alice", "a%2541", "%41", "A", "a"]
    assert len({encode_name(n) for n in names}) == len(set(names))


@given(st.text(min_size=1, max_size=300).filter(storable_name))
@settings(max_examples=300, deadline=None)
def test_name_encoding_roundtrips(name):
    stem = encode_name(name)
    assert len(stem) <= 240 and stem.isascii() and "/" not in stem and not stem.startswith((".", "-"))
    assert decode_name(stem) in (name, None)
    assert encode_name(decode_name(stem) or name) == stem


def test_files_that_are_not_canonical_encodings_are_not_listed(store):
    put(store, enrolled("alice"))
    for stray in ("%61lice.rec", "%zz.rec", "%C3.rec"):
        open(os.path.join(store.users_dir, stray), "w").close()
    assert store.users() == ["alice"]


@pytest.mark.parametrize("name", ["", "a\nb", "a\0b", "a\tb", "x\x1b[2J", "y" * 1025])
def test_unstorable_user_names_are_refused(store, name):
    assert not storable_name(name)
    for call in (
        lambda: store.load(name),
        lambda: store.update(name, lambda old: enrolled(name)),
        lambda: store.delete(name),
        lambda: store.locked(name),
    ):
        with pytest.raises(StoreError) as info:
            call()
        assert "user name" in str(info.value)
    # and nothing was written anywhere
    assert not os.path.exists(store.users_dir) or os.listdir(store.users_dir) == []


# -- refusals: the record ---------------------------------------------------------


def test_record_symlink_to_another_record_is_refused(store):
    put(store, enrolled("bob"))
    os.symlink(rec_path(store, "bob"), rec_path(store))
    message = refused(lambda: store.load("alice"), rec_path(store))
    assert "link" in message and "remove it" in message
    refused(lambda: store.update("alice", lambda old: enrolled()), rec_path(store))
    assert os.path.islink(rec_path(store))
    assert store.load("bob") == enrolled("bob")


def test_record_symlink_to_etc_passwd_is_refused(store):
    with open("/etc/passwd", "rb") as handle:
        before = handle.read()
    os.makedirs(store.users_dir, mode=0o700)
    os.symlink("/etc/passwd", rec_path(store))
    refused(lambda: store.load("alice"), rec_path(store))
    refused(lambda: store.update("alice", lambda old: enrolled()), rec_path(store))
    refused(lambda: store.delete("alice"), rec_path(store))
    with open("/etc/passwd", "rb") as handle:
        assert handle.read() == before


def test_hard_linked_record_is_refused(store, tmp_path):
    put(store, enrolled())
    os.link(rec_path(store), tmp_path / "elsewhere")
    message = refused(lambda: store.load("alice"), rec_path(store))
    assert "single link" in message


def test_fifo_record_is_refused_without_blocking(store):
    os.makedirs(store.users_dir, mode=0o700)
    os.mkfifo(rec_path(store), 0o600)
    assert "not a plain file" in refused(lambda: store.load("alice"), rec_path(store))


def test_directory_record_is_refused(store):
    os.makedirs(store.users_dir, mode=0o700)
    os.mkdir(rec_path(store), 0o700)
    assert "not a plain file" in refused(lambda: store.load("alice"), rec_path(store))


@pytest.mark.root
def test_record_with_wrong_owner_is_refused(store):
    put(store, enrolled())
    os.chown(rec_path(store), 65534, 65534)
    message = refused(lambda: store.load("alice"), rec_path(store))
    assert "owned by root" in message and "uid 65534" in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_record_readable_by_others_is_refused(store, mode):
    put(store, enrolled())
    os.chmod(rec_path(store), mode)
    message = refused(lambda: store.load("alice"), rec_path(store))
    assert f"mode {mode:04o}" in message and "0600" in message


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: text[: len(text) // 2], id="truncated-half"),
        pytest.param(lambda text: text[:-1], id="truncated-last-byte"),
        pytest.param(lambda text: text.replace("\nend\n", "\n"), id="no-end"),
        pytest.param(lambda text: "", id="empty"),
        pytest.param(lambda text: "garbage\x00\x01\x02", id="garbage"),
        pytest.param(lambda text: text.replace("digits 6", "digits six"), id="bad-int"),
        pytest.param(lambda text: text.replace("user alice", "user bob"), id="other-user"),
        pytest.param(lambda text: text + "x" * MAX_BYTES, id="too-large"),
    ],
)
def test_corrupted_record(store, damage):
    put(store, enrolled())
    with open(rec_path(store), encoding="utf-8") as handle:
        text = handle.read()
    with open(rec_path(store), "w", encoding="utf-8") as handle:
        handle.write(damage(text))
    message = refused(lambda: store.load("alice"), rec_path(store))
    assert "corrupted" in message
    assert "twofa-admin disable alice" in message


def test_record_not_utf8_is_corrupted(store):
    put(store, enrolled())
    with open(rec_path(store), "ab") as handle:
        handle.write(b"\xff\xfe")
    assert "corrupted" in refused(lambda: store.load("alice"), rec_path(store))


def test_record_copied_from_another_user_is_corrupted(store):
    put(store, enrolled("bob"))
    with open(rec_path(store, "bob"), "rb") as src:
        data = src.read()
    fd = os.open(rec_path(store), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, data)
    os.close(fd)
    assert "corrupted" in refused(lambda: store.load("alice"), rec_path(store))


def test_corrupted_record_is_not_overwritten_by_update(store):
    put(store, enrolled())
    with open(rec_path(store), "w", encoding="utf-8") as handle:
        handle.write("damaged")
    refused(lambda: store.update("alice", lambda old: enrolled()), rec_path(store))
    with open(rec_path(store), encoding="utf-8") as handle:
        assert handle.read() == "damaged"  # kept for the admin to look at


# -- refusals: folders and lock ------------------------------------------------------


def test_missing_state_dir(tmp_path):
    store = FileStore(str(tmp_path / "nope"))
    for call in (lambda: store.load("alice"), lambda: store.update("alice", lambda old: enrolled()), store.users):
        message = refused(call, tmp_path / "nope")
        assert "mkdir -m 700" in message
    assert not os.path.exists(tmp_path / "nope")


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o711, 0o777])
def test_state_dir_open_to_others_is_refused(store, mode):
    os.chmod(store.state_dir, mode)
    for call in (lambda: store.load("alice"), lambda: store.update("alice", lambda old: enrolled()), store.users):
        message = refused(call, store.state_dir)
        assert f"mode {mode:04o}" in message and "chmod 700" in message


@pytest.mark.root
def test_state_dir_with_wrong_owner_is_refused(store):
    os.chown(store.state_dir, 65534, 65534)
    assert "chown root" in refused(lambda: store.load("alice"), store.state_dir)


def test_state_dir_that_is_a_symlink_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    os.symlink(real, tmp_path / "link")
    store = FileStore(str(tmp_path / "link"))
    assert "expected a folder" in refused(lambda: store.load("alice"), tmp_path / "link")


def test_users_dir_that_is_a_symlink_is_refused(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    os.symlink(elsewhere, store.users_dir)
    for call in (lambda: store.load("alice"), lambda: store.update("alice", lambda old: enrolled()), store.users):
        assert "expected a folder" in refused(call, store.users_dir)
    assert os.listdir(elsewhere) == []


def test_users_dir_open_to_others_is_refused(store):
    put(store, enrolled())
    os.chmod(store.users_dir, 0o755)
    refused(lambda: store.load("alice"), store.users_dir)


def test_lock_file_symlink_is_refused_and_target_untouched(store, tmp_path):
    put(store, enrolled())
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.chmod(victim, 0o644)
    lock = os.path.join(store.users_dir, "alice.lock")
    os.unlink(lock)
    os.symlink(victim, lock)
    message = refused(lambda: store.update("alice", lambda old: None), lock)
    assert "lock file" in message and "remove it" in message
    refused(lambda: store.locked("alice").__enter__(), lock)
    assert victim.read_bytes() == b"precious"
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o644
    assert store.load("alice") == enrolled()  # the record was not deleted


def test_dangling_lock_symlink_creates_nothing(store, tmp_path):
    os.makedirs(store.users_dir, mode=0o700)
    target = tmp_path / "created-through-link"
    lock = os.path.join(store.users_dir, "alice.lock")
    os.symlink(target, lock)
    refused(lambda: store.update("alice", lambda old: enrolled()), lock)
    assert not os.path.lexists(target)
    assert store.load("alice") is None


@pytest.mark.root
@pytest.mark.parametrize("how", ["mode", "owner", "fifo"])
def test_unsafe_lock_file_is_refused(store, how):
    put(store, enrolled())
    lock = os.path.join(store.users_dir, "alice.lock")
    if how == "mode":
        os.chmod(lock, 0o666)
    elif how == "owner":
        os.chown(lock, 65534, 65534)
    else:
        os.unlink(lock)
        os.mkfifo(lock, 0o600)
    message = refused(lambda: store.update("alice", lambda old: None), lock)
    assert "lock file" in message
    assert store.load("alice") == enrolled()


def test_stale_temporary_record_is_replaced(store):
    put(store, enrolled())
    tmp = os.path.join(store.users_dir, ".alice.rec.tmp")
    with open(tmp, "w") as handle:
        handle.write("crash leftover")
    put(store, enrolled(last_step=6))
    assert store.load("alice").last_step == 6
    assert sorted(os.listdir(store.users_dir)) == ["alice.lock", "alice.rec"]


def test_symlink_planted_at_the_temporary_record_name(store, tmp_path):
    put(store, enrolled())
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, os.path.join(store.users_dir, ".alice.rec.tmp"))
    put(store, enrolled(last_step=7))
    assert victim.read_bytes() == b"precious"
    assert store.load("alice").last_step == 7


# -- concurrency with real processes ------------------------------------------------------

WORKERS = 20
ROUNDS = 5


def _increment(state_dir, worker, start):
    start.wait(30)
    store = FileStore(state_dir)
    for i in range(ROUNDS):

        def change(old):
            new = old.copy()
            new.failures.append(worker * 1000 + i)  # noqa: B023 (called before the loop moves on)
            return new

        store.update("alice", change)


def _reader(state_dir, stop, errors):
    store = FileStore(state_dir)
    while not stop.is_set():
        try:
            record = store.load("alice")
            if record is None or record.key != KEY:
                errors.put("bad read")
        except Exception as exc:  # noqa: BLE001 - any exception is the failure being looked for
            errors.put(repr(exc))


def test_concurrent_updates_from_many_processes_lose_nothing(store):
    put(store, enrolled(failures=[]))
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    stop = ctx.Event()
    errors = ctx.Queue()
    reader = ctx.Process(target=_reader, args=(store.state_dir, stop, errors))
    reader.start()
    workers = [ctx.Process(target=_increment, args=(store.state_dir, w, start)) for w in range(WORKERS)]
    for proc in workers:
        proc.start()
    start.set()
    for proc in workers:
        proc.join(60)
    stop.set()
    reader.join(30)
    assert [p.exitcode for p in workers] == [0] * WORKERS
    assert reader.exitcode == 0
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    record = store.load("alice")  # parses
    assert len(record.failures) == WORKERS * ROUNDS
    assert sorted(record.failures) == sorted(w * 1000 + i for w in range(WORKERS) for i in range(ROUNDS))
    assert sorted(os.listdir(store.users_dir)) == ["alice.lock", "alice.rec"]


def _hold_lock(state_dir, held, release):
    store = FileStore(state_dir)
    with store.locked("alice") as section:
        held.set()
        release.wait(30)
        record = section.record
        assert record is not None
        record.last_step = 100
        section.save(record)


def test_update_waits_for_the_lock_of_another_process(store):
    put(store, enrolled(last_step=1))
    ctx = multiprocessing.get_context("fork")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(store.state_dir, held, release))
    holder.start()
    try:
        assert held.wait(10)
        seen = []
        timer_started = time.monotonic()

        def later():
            time.sleep(0.3)
            release.set()

        import threading

        threading.Thread(target=later).start()

        def change(old):
            seen.append(old.last_step)
            new = old.copy()
            new.last_step += 1
            return new

        store.update("alice", change)
        assert time.monotonic() - timer_started >= 0.25  # really waited for the other process
        assert seen == [100]  # and saw its write
        assert store.load("alice").last_step == 101
    finally:
        release.set()
        holder.join(10)
    assert holder.exitcode == 0


def test_lock_of_one_user_does_not_block_another(store):
    put(store, enrolled("alice"))
    ctx = multiprocessing.get_context("fork")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(store.state_dir, held, release))
    holder.start()
    try:
        assert held.wait(10)
        with no_block(3):
            put(store, enrolled("bob"))
        assert store.load("bob") == enrolled("bob")
    finally:
        release.set()
        holder.join(10)


def test_dumps_is_what_is_stored(store):
    put(store, enrolled())
    with open(rec_path(store), encoding="utf-8") as handle:
        assert handle.read() == dumps(enrolled())
