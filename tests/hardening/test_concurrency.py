"""Races (docs/store.md, docs/performance.md): parallel logins of one user with the same code, with
different wrong codes around the lockout boundary, enrollment racing logins,
and many processes creating the store at once.

The PAM tests run real pamtester processes in parallel (the real
pam_python.so, each its own interpreter, as sshd's connections are); the
others fork real processes running the store or ``Login.run``. Exactly one
success per code, the failure count exact, no file left corrupted.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hardening_helpers import CODE, WRONG, T, World, login
from support.records import stored

from pam_twofa.core.record import Record, loads
from pam_twofa.store.files import FileStore


def _parallel(calls):
    """Run the callables at once (a barrier releases them together); their results in order."""
    barrier = threading.Barrier(len(calls))

    def start(call):
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(start, calls))


def _read_record(scratch, user):
    path = scratch.record_path(user)
    return loads(path.read_text(), user)


# --- the same code, many logins at once ----------------------------------------------------

PARALLEL = 12


def test_pam_same_code_in_parallel_succeeds_exactly_once(scratch):
    from pam_harness import KEY as STACK
    from pam_harness import MSG_REPLAYED, settle

    scratch.write_policy(max_failures=100)  # replays count as failures: keep them from locking the account here
    for user in ("alice", "bob", "carol", "dave"):  # a fresh user each round
        enrolled = scratch.enroll(user)
        settle(min_left=10)
        code = enrolled.code()
        mark = scratch.env.listener.mark()
        results = _parallel([lambda: scratch.login(STACK, user, code) for _ in range(PARALLEL)])  # noqa: B023 (called before the loop moves on)
        lines = scratch.env.listener.since(mark)
        ok = [r for r in results if r.ok]
        assert len(ok) == 1, f"{user}: {len(ok)} logins accepted the same code:\n" + "\n".join(map(repr, ok))
        refused = [r for r in results if not r.ok]
        assert all(r.denied and MSG_REPLAYED in r.output for r in refused), refused
        assert sum(f"user={user} " in line and "result=success" in line for line in lines) == 1
        assert sum(f"user={user} " in line and "replayed code" in line for line in lines) == PARALLEL - 1
        record = _read_record(scratch, user)
        assert len(record.failures) == PARALLEL - 1  # every replay counted, none lost
        assert record.last_success_at > 0


# --- wrong codes around the lockout boundary ---------------------------------------------


@pytest.mark.parametrize("max_failures", [3, 5])
def test_pam_wrong_codes_in_parallel_lock_at_exactly_max_failures(scratch, max_failures):
    from pam_harness import KEY as STACK
    from pam_harness import MSG_LOCKED

    scratch.write_policy(max_failures=max_failures)
    users = {3: ("erin", "frank"), 5: ("oscar", "peggy")}[max_failures]
    for user in users:
        enrolled = scratch.enroll(user)
        attempts = max_failures + 3
        wrong = [enrolled.wrong_code(salt=n) for n in range(attempts)]
        assert len(set(wrong)) == attempts
        mark = scratch.env.listener.mark()
        results = _parallel([lambda c=c: scratch.login(STACK, user, c) for c in wrong])  # noqa: B023 (called before the loop moves on)
        lines = [line for line in scratch.env.listener.since(mark) if f"user={user} " in line]
        assert all(r.denied for r in results), results
        counted = [line for line in lines if "result=bad code (failure" in line]
        newly_locked = [line for line in lines if "now locked" in line]
        refused_locked = [line for line in lines if "result=locked" in line]
        assert (len(counted), len(newly_locked), len(refused_locked)) == (max_failures - 1, 1, 3), "\n".join(lines)
        record = _read_record(scratch, user)
        assert len(record.failures) == max_failures, record.failures
        assert record.locked_until > time.time() + 800
        # and the right code is refused now
        after = scratch.login(STACK, user, enrolled.code())
        assert after.denied and MSG_LOCKED in after.output, after
        assert len(_read_record(scratch, user).failures) == max_failures  # a locked refusal counts nothing


# --- enrollment racing logins -----------------------------------------------------------------


def test_pam_enrollment_racing_logins_never_corrupts_the_record(scratch):
    from pam_harness import KEY as STACK
    from pam_harness import MSG_ERROR, current_step, new_secret, oath, settle

    scratch.write_policy(max_failures=1000)
    first = scratch.enroll("victor")
    secrets = [first.secret]
    stop = threading.Event()
    problems: list = []
    outcomes: list = []

    def enroller():
        try:
            for _ in range(6):
                settle(min_left=3)
                secret = new_secret()
                scratch.sensitive.update({secret, secret.lower()})
                code = oath(secret, current_step())
                result = scratch._checked(
                    scratch.env.run(
                        [
                            scratch.env.enroll,
                            "--user",
                            "victor",
                            "--secret",
                            secret,
                            "--code",
                            code,
                            "--force",
                            "--qr",
                            "none",
                            "--policy",
                            scratch.policy_path,
                        ],
                        scratch.env.nss_env(),
                    ),
                    [code],
                )
                if result.rc != 0:
                    problems.append(f"enrollment failed:\n{result}")
                secrets.append(secret)
        finally:
            stop.set()

    def logins(n):
        k = 0
        while not stop.is_set():
            k += 1
            secret = secrets[-1]
            code = oath(secret, current_step()) if k % 2 else f"{(n * 7919 + k * 104729) % 1_000_000:06d}"
            result = scratch.login(STACK, "victor", code)
            outcomes.append(result.ok)
            if MSG_ERROR in result.output:
                problems.append(f"a login saw a broken store:\n{result}")

    def reader():
        path = scratch.record_path("victor")
        reads = 0
        while not stop.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                problems.append("the record vanished")
                continue
            try:
                loads(text, "victor")
            except Exception as exc:
                problems.append(f"a reader saw a broken record: {exc}")
            reads += 1
        outcomes.append(reads)

    threads = [threading.Thread(target=enroller)] + [threading.Thread(target=logins, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "the race did not finish"
    assert not problems, "\n".join(problems)
    assert len(outcomes) > 10
    record = _read_record(scratch, "victor")
    import base64

    assert record.key == base64.b32decode(secrets[-1] + "=" * (-len(secrets[-1]) % 8))
    leftovers = [p.name for p in (scratch.state_dir / "users").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers
    last = scratch.enrolled.get("victor")
    del last


# --- real processes on the store and Login.run -----------------------------------------------


def _fork_all(count, work):
    """Fork ``count`` children that wait on a pipe, release them together, return their exit statuses."""
    read_end, write_end = os.pipe()
    pids = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # child
            status = 1
            try:
                os.close(write_end)
                os.read(read_end, 1)  # returns when the parent closes its end
                status = work(index)
            except BaseException as exc:  # report, never run pytest's code in a child
                os.write(2, f"child {index}: {type(exc).__name__}: {exc}\n".encode())
            finally:
                os._exit(status)
        pids.append(pid)
    os.close(read_end)
    time.sleep(0.05)
    os.close(write_end)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def test_many_processes_creating_the_store_at_once(tmp_path):
    """The users folder does not exist yet; eight first enrollments race to create it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    for round_ in range(25):
        users = state / "users"
        if users.exists():
            for entry in users.iterdir():
                entry.unlink()
            users.rmdir()

        def work(index):
            FileStore(str(state)).update(f"u{index}", lambda old: Record(f"u{index}", key=b"k" * 20))
            return 0

        statuses = _fork_all(8, work)
        assert statuses == [0] * 8, f"round {round_}: {statuses}"
        assert sorted(FileStore(str(state)).users()) == [f"u{i}" for i in range(8)]


def test_parallel_wrong_codes_in_processes_are_all_counted(tmp_path, monkeypatch):
    """Login.run in six processes, four wrong codes each, one user: 24 failures, none lost."""
    world = World(tmp_path, monkeypatch, max_failures=1000)
    world.enroll("alice")

    def work(index):
        for attempt in range(4):
            result, _conv = world.run("alice", [WRONG], now=T + attempt)
            if result != login.FAIL:
                return 2
        return 0

    assert _fork_all(6, work) == [0] * 6
    record = stored(world.store, "alice")
    assert len(record.failures) == 24
    assert world.run("alice", [CODE], now=T + 5)[0] == login.PASS


def test_parallel_same_code_in_processes_passes_once(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch, max_failures=1000)
    for round_ in range(5):
        world.enroll("alice")
        passed = tmp_path / f"passed-{round_}"
        passed.mkdir()

        def work(index):
            result, _conv = world.run("alice", [CODE])
            if result == login.PASS:
                (passed / str(index)).touch()  # noqa: B023 (called before the loop moves on)
            return 0

        assert _fork_all(8, work) == [0] * 8
        assert len(list(passed.iterdir())) == 1, f"round {round_}: {sorted(p.name for p in passed.iterdir())}"
