"""Library of the hardening suite (fixtures are in conftest.py).

Two ways to drive a login:

* ``World``: ``login.Login`` in this process with a scripted conversation, a
  scratch policy and a real file store in tmp_path, fake accounts
  (``pam_twofa.system.accounts.lookup``/``group_ids`` monkeypatched) and syslog
  captured by monkeypatching ``log.emit``. Fast: thousands of logins a test.
* the PAM harness of tests/pam (``pam_harness``): the real pam_python.so and
  the INSTALLED module under pamtester, for the cases that matter most.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from support.codes import code_not_in
from support.conversation import Conv

from pam_twofa.core import totp
from pam_twofa.core.record import Record, dumps
from pam_twofa.login import flow as login
from pam_twofa.login.flow import Login, Options
from pam_twofa.store.files import FileStore
from pam_twofa.system import accounts, log
from pam_twofa.system.accounts import Account

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

KEY = bytes.fromhex("5d1c0f6e9a24b7c3e8f10a2b4c6d8e0f1a3b5c7d")  # the genuine secret
EVIL_KEY = bytes.fromhex("0badc0de0badc0de0badc0de0badc0de0badc0de")  # an attacker's secret
T = 1_700_000_015.0  # inside a 30 s step
CODE = totp.totp(KEY, T)
EVIL_CODE = totp.totp(EVIL_KEY, T)
VALID_NOW = {totp.totp(KEY, T + d * 30) for d in (-1, 0, 1)}


WRONG = code_not_in(VALID_NOW | {EVIL_CODE}, start=int(CODE) + 7919, stride=7919)
assert CODE != EVIL_CODE and EVIL_CODE not in VALID_NOW

# name: (uid, gid); every account lives in /home/NAME
USERS = {
    "alice": Account("alice", 1001, 1001, {1001, 2000}, "/home/alice"),
    "bob": Account("bob", 1002, 1002, {1002}, "/home/bob"),
    "carol": Account("carol", 1003, 1003, {1003}, "/home/carol"),
}
GROUPS = {"staff": 2000}

POLICY = """version: 1
enforce:
  mode: all
  unenrolled: deny
rate_limit:
  max_failures: {max_failures}
  per_seconds: 900
on_error: deny
"""


class World:
    """A scratch policy (tmp/etc/policy.yaml) and state (tmp/state) with fake accounts and captured logs."""

    def __init__(self, root: Path, monkeypatch, max_failures: int = 3) -> None:
        self.root = root
        os.chmod(root, 0o755)
        self.etc = root / "etc"
        self.etc.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.etc, 0o755)
        self.state = root / "state"
        self.state.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.state, 0o700)
        self.users_dir = self.state / "users"
        self.policy_path = self.etc / "policy.yaml"
        self.cache_path = self.etc / ".policy.yaml.cache"
        self.store = FileStore(str(self.state))
        self.accounts = dict(USERS)
        self.logs: list = []  # (priority, message)
        monkeypatch.setattr(log, "emit", lambda priority, message: self.logs.append((priority, message)))
        monkeypatch.setattr(accounts, "lookup", self.lookup)
        monkeypatch.setattr(accounts, "group_ids", lambda names: {n: GROUPS.get(n) for n in names})
        self.write_policy(POLICY.format(max_failures=max_failures))

    def lookup(self, name):
        return self.accounts.get(name)

    def write_policy(self, text: str, with_state: bool = True) -> str:
        if with_state:  # and the required version, unless the text has it
            text = text + f"storage:\n  state_dir: {self.state}\n"
            if not any(line.startswith("version:") for line in text.splitlines()):
                text += "version: 1\n"
        tmp = self.etc / ".policy.yaml.new"
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.policy_path)
        return str(self.policy_path)

    def enroll(self, user: str = "alice", key: bytes = KEY, **fields) -> Record:
        record = Record(user, key=key, enrolled_at=int(T) - 86400, **fields)
        self.store.update(user, lambda old: record)
        return record

    def record_path(self, user: str = "alice") -> Path:
        return self.users_dir / f"{user}.rec"

    def lock_path(self, user: str = "alice") -> Path:
        return self.users_dir / f"{user}.lock"

    def tmp_path(self, user: str = "alice") -> Path:
        return self.users_dir / f".{user}.rec.tmp"

    def run(self, user="alice", answers=(), rhost="192.0.2.10", now=T, argv=None, service="sshd"):
        """(result, conversation) of one ``Login.run``; logs accumulate in ``self.logs``."""
        conv = Conv(answers)
        options = Options(argv if argv is not None else ["policy=" + str(self.policy_path)])
        flow = Login(conv, user, rhost, service, options, clock=lambda: now)
        return flow.run(), conv

    def log_text(self) -> str:
        return "\n".join(message for _priority, message in self.logs)


# --- sentinels: root-owned files that must never change -----------------------------


class Sentinel:
    """A root-owned file standing for /etc/shadow: its bytes, mode, owner, inode and mtime must not change."""

    def __init__(self, path: Path, content: bytes = b"root:$6$sentinel$hash:19000:0:99999:7:::\n", mode=0o600) -> None:
        self.path = path
        path.write_bytes(content)
        os.chmod(path, mode)
        self.content = content
        self.stat = os.lstat(path)

    def assert_untouched(self) -> None:
        st = os.lstat(self.path)
        assert stat.S_ISREG(st.st_mode), f"{self.path} was replaced"
        assert self.path.read_bytes() == self.content, f"{self.path} was written through"
        # (st_nlink is not compared: the tests plant hard links to sentinels)
        assert (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) == (
            self.stat.st_ino,
            self.stat.st_mode,
            self.stat.st_uid,
            self.stat.st_gid,
            self.stat.st_mtime_ns,
        ), f"{self.path} changed: {st} != {self.stat}"


def snapshot(root: Path) -> dict:
    """{relative path: (kind, mode, uid, content digest)} of everything under ``root`` (links not followed)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            found[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, digest)
    return found


def plant(path: Path, kind: str, target: Path | None = None) -> None:
    """Put a ``kind`` (symlink, dangling, hardlink, fifo, directory, file) at ``path``, replacing what is there."""
    if path.is_symlink() or path.is_file() or (path.exists() and stat.S_ISFIFO(os.lstat(path).st_mode)):
        path.unlink()
    elif path.is_dir():
        import shutil

        shutil.rmtree(path)
    if kind == "symlink":
        assert target is not None
        os.symlink(target, path)
    elif kind == "dangling":
        assert target is not None
        os.symlink(target, path)
        assert not target.exists()
    elif kind == "hardlink":
        assert target is not None
        os.link(target, path)
    elif kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "directory":
        path.mkdir(mode=0o700)
    elif kind == "file":
        path.write_bytes(b"")
        os.chmod(path, 0o600)
    else:
        raise AssertionError(kind)


def record_text(user: str, key: bytes = KEY, **fields) -> bytes:
    return dumps(Record(user, key=key, enrolled_at=int(T) - 86400, **fields)).encode()


__all__ = [
    "CODE",
    "Conv",
    "EVIL_CODE",
    "EVIL_KEY",
    "KEY",
    "POLICY",
    "REPO",
    "Record",
    "Sentinel",
    "T",
    "USERS",
    "VALID_NOW",
    "WRONG",
    "World",
    "login",
    "plant",
    "record_text",
    "snapshot",
    "totp",
]
