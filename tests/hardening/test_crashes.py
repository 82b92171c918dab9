"""Crashes (docs/store.md): SIGKILL the authenticating process at every step of a write.

A child ``/usr/bin/python3 -I`` (the interpreter pam_python embeds; sys.path =
this checkout) wraps ``os.open/write/fsync/close/rename/unlink/fchmod/mkdir``
and ``fcntl.flock`` and SIGKILLs itself at the Nth call: before it, after
it, or (for ``write``) after writing half the bytes. N runs over every step
of the write path (lock, temporary file, data, fsync, rename, folder fsync)
of four operations: ``FileStore.update`` creating a record, updating one, a
login with the right code and a login with a wrong code, and the policy
cache rewrite. After every kill, in this process:

* the record is byte for byte the one before or the one after the
  operation, and loads;
* no lock is left held (fcntl locks die with their process);
* a later login succeeds although a stale temporary file may be left, and
  leaves no temporary file behind.

A dry run (no kill) also records the call trace, and the test checks the
order a crash-safe write needs: exclusive no-follow create of the temporary
file, data, fsync of that file, rename over the record, fsync of the folder;
the record itself is never opened for writing.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import textwrap

import pytest
from hardening_helpers import KEY, REPO, WRONG, T, World, login, totp

from pam_twofa.core.record import loads

PYTHON = "/usr/bin/python3"

CHILD = textwrap.dedent(r"""
    import fcntl, json, os, signal, sys
    sys.path.insert(0, sys.argv[1])  # -I, as pam_python embeds it, ignores PYTHONPATH
    spec = json.loads(sys.argv[2])

    from pam_twofa.system import accounts, log

    from pam_twofa.login import flow as login

    from pam_twofa import policy
    from pam_twofa.system.accounts import Account
    from pam_twofa.core.record import Record
    from pam_twofa.store.files import FileStore
    import pam_twofa.core.auth, pam_twofa.core.totp, pam_twofa.core.decision, pam_twofa.system.fileio, pam_twofa.core.network  # imported before the wrapping

    accounts.lookup = lambda name: Account(name, 1001, 1001, {1001}, "/home/" + name) if name == "alice" else None
    accounts.group_ids = lambda names: {n: None for n in names}
    log.emit = lambda priority, message: None

    calls = []
    kill_at, when = spec.get("kill_at"), spec.get("when")

    def describe(name, args):
        if name == "open":
            return [name, str(args[0]), args[1]]
        if name in ("write",):
            return [name, args[0], len(args[1])]
        if name in ("fsync", "close", "fchmod"):
            return [name, args[0]]
        if name == "flock":
            return [name, getattr(args[0], "fileno", lambda: args[0])(), args[1]]
        return [name] + [str(a) for a in args[:2]]

    def wrap(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.append(describe(name, args))
            index = len(calls)
            if index == kill_at and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            if index == kill_at and when == "partial" and name == "write":
                real(args[0], bytes(args[1])[: max(1, len(args[1]) // 2)])
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                return real(*args, **kwargs)
            finally:  # after the call, whether it returned or raised (FileNotFoundError...)
                if index == kill_at and when == "after":
                    os.kill(os.getpid(), signal.SIGKILL)

        setattr(module, name, wrapper)

    store = FileStore(spec["state"])
    if spec["op"] == "cache":
        os.utime(spec["policy"])  # a changed policy file: the next load re-parses and rewrites the cache
    for name in ("open", "write", "fsync", "close", "rename", "unlink", "fchmod", "mkdir", "replace"):
        wrap(os, name)
    wrap(fcntl, "flock")

    op = spec["op"]
    if op == "create" or op == "update":
        def change(old):
            new = old.copy() if old is not None else Record("alice", key=bytes.fromhex(spec["key"]), enrolled_at=1)
            new.failures = new.failures + [int(spec["now"])]
            return new
        store.update("alice", change)
    elif op in ("login-pass", "login-fail"):
        conv = type("Conv", (), {"prompt": lambda self, text, info=None: spec["typed"],
                                 "info": lambda self, text: None, "error": lambda self, text: None})()
        flow = login.Login(conv, "alice", "192.0.2.1", "sshd", login.Options(["policy=" + spec["policy"]]))
        flow.now = lambda: spec["now"]
        result = flow.run()
        assert result == spec["expect"], result
    elif op == "cache":
        policy.load(spec["policy"])
    else:
        raise SystemExit("unknown op")
    sys.stdout.write(json.dumps(calls))
""")

# the calls that belong to the write path (reads before it are harmless to interrupt)
WRITE_STEPS = {"flock", "write", "fsync", "rename", "unlink", "fchmod", "mkdir", "replace"}


def _child(tmp_path, spec: dict) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    return subprocess.run(
        [PYTHON, "-I", str(script), str(REPO), json.dumps(spec)], capture_output=True, text=True, timeout=60
    )


def _kill_points(calls, users_dir: str, etc: str):
    """1-based indices of the write-path steps: opens in the users or policy folder, and every write step."""
    points = []
    for index, call in enumerate(calls, 1):
        name = call[0]
        if name in WRITE_STEPS:
            points.append(index)
        elif name in ("open", "close") and (name == "close" or call[1].startswith((users_dir, etc))):
            points.append(index)
    return points


def _lock_is_free(path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


class Setup:
    def __init__(self, tmp_path, monkeypatch, op: str) -> None:
        (tmp_path / "world").mkdir()
        self.world = World(tmp_path / "world", monkeypatch, max_failures=1000)
        self.op = op
        self.tmp_path = tmp_path
        world = self.world
        world.enroll("alice")
        self.before: bytes | None = world.record_path().read_bytes()
        if op == "create":
            world.record_path().unlink()
            self.before = None
        self.typed = {"login-pass": totp.totp(KEY, T), "login-fail": WRONG}.get(op)
        self.expect = {"login-pass": login.PASS, "login-fail": login.FAIL}.get(op)
        from pam_twofa import policy

        policy.load(str(world.policy_path))  # the compiled cache exists, as on a running host

    def spec(self, **more) -> dict:
        world = self.world
        spec = {
            "op": self.op,
            "state": str(world.state),
            "policy": str(world.policy_path),
            "key": KEY.hex(),
            "now": T,
            "typed": self.typed,
            "expect": self.expect,
        }
        spec.update(more)
        return spec

    def reset(self) -> None:
        world = self.world
        for entry in world.users_dir.iterdir():
            if entry.name.endswith(".tmp"):
                entry.unlink()
        if self.before is None:
            if world.record_path().exists():
                world.record_path().unlink()
        else:
            world.record_path().write_bytes(self.before)
            os.chmod(world.record_path(), 0o600)


OPS = ["create", "update", "login-pass", "login-fail"]


@pytest.mark.parametrize("op", OPS)
def test_sigkill_at_every_write_step_loses_nothing(tmp_path, monkeypatch, op):
    setup = Setup(tmp_path, monkeypatch, op)
    world = setup.world
    dry = _child(tmp_path, setup.spec())
    assert dry.returncode == 0, dry.stderr
    calls = json.loads(dry.stdout)
    after = world.record_path().read_bytes()
    assert after != setup.before
    loads(after.decode(), "alice")
    points = _kill_points(calls, str(world.users_dir), str(world.etc))
    assert len(points) >= 8, calls
    runs = 0
    for index in points:
        for when in ("before", "after", "partial") if calls[index - 1][0] == "write" else ("before", "after"):
            setup.reset()
            killed = _child(tmp_path, setup.spec(kill_at=index, when=when))
            runs += 1
            where = f"killed {when} call {index} {calls[index - 1]}"
            assert killed.returncode == -signal.SIGKILL, (
                f"{where}: the child was not killed ({killed.returncode}): {killed.stderr}"
            )
            # every earlier state is intact and readable
            path = world.record_path()
            if path.exists():
                data = path.read_bytes()
                assert data in (setup.before, after), f"{where}: the record is neither the old nor the new one"
                loads(data.decode(), "alice")
            else:
                assert setup.before is None, f"{where}: the record vanished"
            # no stale lock
            if world.lock_path().exists():
                assert _lock_is_free(world.lock_path()), f"{where}: the lock is still held"
            # a later login works, stale temporary file or not
            if setup.before is None and not path.exists():
                world.enroll("alice")
            result, conv = world.run("alice", [totp.totp(KEY, T + 90)], now=T + 90)
            assert result == login.PASS, (where, conv.transcript, world.log_text())
            assert not list(world.users_dir.glob(".*.tmp")), f"{where}: a temporary file was left behind"
    assert runs >= len(points)


def test_sigkill_while_rewriting_the_policy_cache(tmp_path, monkeypatch):
    setup = Setup(tmp_path, monkeypatch, "cache")
    world = setup.world
    dry = _child(tmp_path, setup.spec())
    assert dry.returncode == 0, dry.stderr
    calls = json.loads(dry.stdout)
    points = [
        i for i, call in enumerate(calls, 1) if call[0] in WRITE_STEPS or (call[0] == "open" and ".cache" in call[1])
    ]
    assert len(points) >= 5, calls
    for index in points:
        for when in ("before", "after"):
            killed = _child(tmp_path, setup.spec(kill_at=index, when=when))
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            from pam_twofa import policy

            assert policy.load(str(world.policy_path)).mode == "all"
            result, _conv = world.run("alice", [WRONG], now=T + 30)
            assert result == login.FAIL
    # stale per-process temporary cache files do not block anything, and are only ever ours
    for stale in world.etc.glob("..policy.yaml.cache.*.tmp"):
        assert stale.stat().st_uid == 0


@pytest.mark.parametrize("op", ["update", "login-pass"])
def test_write_path_order_is_crash_safe(tmp_path, monkeypatch, op):
    """The trace of one write: O_EXCL|O_NOFOLLOW temporary file, data, fsync it, rename, fsync the folder."""
    setup = Setup(tmp_path, monkeypatch, op)
    world = setup.world
    dry = _child(tmp_path, setup.spec())
    assert dry.returncode == 0, dry.stderr
    calls = json.loads(dry.stdout)
    record, tmp, folder = str(world.record_path()), str(world.tmp_path()), str(world.users_dir)
    for call in calls:  # the record is never opened for writing: it is only ever replaced by a rename
        if call[0] == "open" and call[1] == record:
            assert call[2] & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC) == 0, call
    opened = [i for i, c in enumerate(calls) if c[0] == "open" and c[1] == tmp]
    assert len(opened) == 1, calls
    i = opened[0]
    flags = calls[i][2]
    assert flags & os.O_EXCL and flags & os.O_CREAT and flags & os.O_NOFOLLOW, calls[i]
    flocks = [j for j, c in enumerate(calls) if c[0] == "flock" and c[2] == fcntl.LOCK_EX]
    assert flocks and flocks[0] < i, "the temporary file is written without the lock"
    rest = calls[i + 1 :]
    names = [c[0] for c in rest]
    rename = names.index("rename")
    assert rest[rename][1:] == [tmp, record], rest[rename]
    fd_writes = [c for c in rest[:rename] if c[0] == "write"]
    assert fd_writes and sum(c[2] for c in fd_writes) == len(world.record_path().read_bytes())
    tmp_fd = fd_writes[0][1]
    assert ["fsync", tmp_fd] in rest[:rename], "the data is not fsynced before the rename"
    fsync_at = rest.index(["fsync", tmp_fd])
    assert all(c[0] != "write" for c in rest[fsync_at:rename]), "written after the fsync"
    dir_opens = [k for k, c in enumerate(rest) if k > rename and c[0] == "open" and c[1] == folder]
    assert dir_opens, "the folder is not opened (for its fsync) after the rename"
    dir_fd_fsync = [c for c in rest[dir_opens[0] :] if c[0] == "fsync"]
    assert dir_fd_fsync, "the folder is not fsynced after the rename"


def test_killed_lock_holder_does_not_block_the_next_login(tmp_path, monkeypatch):
    """A process killed while holding the user's lock (mid-login): the next login goes through at once."""
    world = World(tmp_path, monkeypatch, max_failures=1000)
    world.enroll("alice")
    script = tmp_path / "holder.py"
    script.write_text(
        textwrap.dedent("""
        import os, signal, sys, time
        from pam_twofa.store.files import FileStore
        with FileStore(sys.argv[1]).locked("alice"):
            sys.stdout.write("locked\\n"); sys.stdout.flush()
            time.sleep(60)
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([PYTHON, str(script), str(world.state)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "locked\n"
        assert not _lock_is_free(world.lock_path())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _lock_is_free(world.lock_path())
    assert world.run("alice", [totp.totp(KEY, T)])[0] == login.PASS
