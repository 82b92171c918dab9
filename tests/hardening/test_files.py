"""Adversarial files (docs/store.md, docs/login.md): links, FIFOs, folders, wrong owners and modes,
truncated, empty, oversized, binary and wrong-shaped files, wherever pam-twofa
expects one of its own.

For every case: root never writes through a path it did not expect (a
root-owned sentinel standing for /etc/shadow keeps its bytes, inode, mode and
mtime), nothing raises out of ``Login.run``, and no login is accepted that
should be refused (an attacker's record reached through a link must not let
the attacker's code in). Most cases run ``login.Login`` in-process
(hardening_helpers.World); the important ones also run through the real
pam_python.so (marked ``pam``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hardening_helpers import (
    CODE,
    EVIL_CODE,
    EVIL_KEY,
    WRONG,
    Sentinel,
    T,
    World,
    login,
    plant,
    record_text,
    snapshot,
)
from support.blocking import no_block

from pam_twofa import policy as policy_module
from pam_twofa.core.record import MAX_BYTES
from pam_twofa.policy import PolicyError
from pam_twofa.store import StoreError
from pam_twofa.system import googleauth

NOBODY = 65534
PASS, FAIL, IGNORE = login.PASS, login.FAIL, login.IGNORE


def no_traceback_in(world: World) -> None:
    text = world.log_text()
    assert "Traceback" not in text and "internal error" not in text, text


# --- the store's paths: record, lock, temporary file, users folder, state folder -----

# (location, kind, may the right code pass?)
STORE_CASES = [
    ("record", "symlink", False),  # to a valid record of alice with the ATTACKER's key
    ("record", "dangling", False),
    ("record", "hardlink", False),  # a second name of the attacker's record
    ("record", "fifo", False),
    ("record", "directory", False),
    ("lock", "symlink", False),  # to the sentinel
    ("lock", "dangling", False),
    ("lock", "hardlink", True),  # a root-only file is only flock'ed, never written: harmless
    ("lock", "fifo", False),
    ("lock", "directory", False),
    ("tmp", "symlink", True),  # a stale temporary name is unlinked, never opened
    ("tmp", "dangling", True),
    ("tmp", "hardlink", True),
    ("tmp", "fifo", True),
    ("tmp", "directory", False),  # cannot be removed: fail closed
    ("users", "symlink", False),  # to the real users folder, moved away
    ("users", "dangling", False),
    ("users", "file", False),
    ("users", "fifo", False),
    ("users", "directory", False),  # an empty folder: alice looks unenrolled, and is enforced (deny)
    ("state", "symlink", False),
    ("state", "dangling", False),
    ("state", "file", False),
    ("state", "fifo", False),
    ("state", "directory", False),
]


@pytest.mark.parametrize("where,kind,may_pass", STORE_CASES, ids=[f"{w}-{k}" for w, k, _ in STORE_CASES])
def test_planted_store_paths(world, tmp_path, where, kind, may_pass):
    world.enroll("alice")
    shadow = Sentinel(tmp_path / "shadow")
    evil = Sentinel(tmp_path / "evil.rec", record_text("alice", EVIL_KEY))  # valid, root 0600
    ghost = tmp_path / "ghost"  # target of dangling links: must never be created
    paths = {
        "record": world.record_path(),
        "lock": world.lock_path(),
        "tmp": world.tmp_path(),
        "users": world.users_dir,
        "state": world.state,
    }
    path = paths[where]
    if where in ("users", "state"):
        real = tmp_path / f"{where}.real"
        os.rename(path, real)
        target = real if kind == "symlink" else ghost
    elif where == "record":
        target = evil.path if kind in ("symlink", "hardlink") else ghost
    else:
        target = shadow.path if kind in ("symlink", "hardlink") else ghost
    plant(path, kind, target)
    before = snapshot(tmp_path)

    with no_block(10):
        attacker = world.run("alice", [EVIL_CODE])
        right = world.run("alice", [CODE], now=T + 30)
        wrong = world.run("alice", [WRONG], now=T + 60)
        try:
            world.store.update("alice", lambda old: old)  # an admin command's write path
        except (StoreError, OSError):
            pass

    assert attacker[0] != PASS, attacker[1].transcript
    assert wrong[0] != PASS, wrong[1].transcript
    if may_pass:
        assert right[0] == PASS, (right[1].transcript, world.log_text())
    else:
        assert right[0] == FAIL, (right[1].transcript, world.log_text())
        assert right[1].errors, right[1].transcript  # told something, not silently dropped
    shadow.assert_untouched()
    evil.assert_untouched()
    assert not os.path.lexists(ghost), "root created the target of a dangling link"
    no_traceback_in(world)
    after = snapshot(tmp_path)
    # What was planted is still there (not "repaired" through the link), except a
    # stale temporary file, which the next write removes.
    rel = os.path.relpath(path, tmp_path)
    if where == "tmp" and may_pass:
        assert rel not in after
    else:
        assert after.get(rel) == before.get(rel), (before.get(rel), after.get(rel))
    if not may_pass and where in ("record", "lock", "users", "state") and kind != "directory":
        assert str(path) in world.log_text(), world.log_text()  # the admin is told which file


# --- wrong owners and modes ---------------------------------------------------------------

OWNER_MODE_CASES = [
    ("state", "owner", None),
    ("state", "mode", 0o750),
    ("state", "mode", 0o705),
    ("state", "mode", 0o777),
    ("users", "owner", None),
    ("users", "mode", 0o750),
    ("users", "mode", 0o701),
    ("users", "mode", 0o777),
    ("record", "owner", None),
    ("record", "mode", 0o640),
    ("record", "mode", 0o604),
    ("record", "mode", 0o666),
    ("lock", "owner", None),
    ("lock", "mode", 0o644),
    ("lock", "mode", 0o660),
]


@pytest.mark.parametrize(
    "where,what,mode", OWNER_MODE_CASES, ids=[f"{w}-{m and oct(m) or o}" for w, o, m in OWNER_MODE_CASES]
)
def test_state_with_wrong_owner_or_mode_fails_closed_naming_the_file(world, where, what, mode):
    world.enroll("alice")
    path = {"state": world.state, "users": world.users_dir, "record": world.record_path(), "lock": world.lock_path()}[
        where
    ]
    if what == "owner":
        os.chown(path, NOBODY, NOBODY)
    else:
        os.chmod(path, mode)
    result, conv = world.run("alice", [CODE])
    assert result == FAIL
    assert conv.errors == [login.MSG_ERROR]
    text = world.log_text()
    assert str(path) in text and ("owner" in text or "owned" in text or "mode" in text), text
    assert os.lstat(path).st_uid == (NOBODY if what == "owner" else 0)  # not "fixed" behind the admin's back
    no_traceback_in(world)


POLICY_OWNER_CASES = [
    ("file", "owner", None, "must be owned by root"),
    ("file", "mode", 0o664, "writable by others"),
    ("file", "mode", 0o646, "writable by others"),
    ("file", "mode", 0o666, "writable by others"),
    ("folder", "owner", None, "must be owned by root"),
    ("folder", "mode", 0o775, "writable by others"),
    ("folder", "mode", 0o777, "writable by others"),
    ("folder", "mode", 0o1777, "writable by others"),
]


@pytest.mark.parametrize(
    "where,what,mode,says", POLICY_OWNER_CASES, ids=[f"{w}-{m and oct(m) or o}" for w, o, m, _s in POLICY_OWNER_CASES]
)
def test_policy_writable_by_a_user_fails_closed_naming_the_file(world, where, what, mode, says):
    world.enroll("alice")
    assert world.run("alice", [WRONG])[0] == FAIL  # control: the policy works, and is cached
    path = world.policy_path if where == "file" else world.etc
    if what == "owner":
        os.chown(path, NOBODY, NOBODY)
    else:
        os.chmod(path, mode)
    world.logs.clear()
    for answers, now in (([CODE], T), ([WRONG], T + 30)):
        result, conv = world.run("alice", answers, now=now)
        assert result == FAIL
        assert conv.errors == [login.MSG_ERROR] and conv.prompts == []
    text = world.log_text()
    assert f"{path}: " in text and says in text, text
    # the compiled cache does not bypass the check either
    with pytest.raises(PolicyError):
        policy_module.load(str(world.policy_path))
    no_traceback_in(world)


def test_policy_on_error_allow_in_a_tampered_policy_is_not_trusted(world):
    """A user who could write the policy would set on_error: allow: the write access itself is refused first."""
    world.enroll("alice")
    world.write_policy("on_error: allow\nenforce:\n  mode: all\n")
    os.chmod(world.policy_path, 0o666)
    result, conv = world.run("alice", [WRONG])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]


# --- the policy file and its compiled cache ------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "hardlink-user-file", "fifo", "directory"])
def test_policy_path_is_not_a_plain_root_file(world, tmp_path, kind):
    world.enroll("alice")
    lax = tmp_path / "lax.yaml"  # a valid policy that would let alice in without a code
    lax.write_text(
        f"version: 1\nenforce:\n  mode: off\nexempt:\n  users: [alice]\nstorage:\n  state_dir: {world.state}\n"
    )
    os.chmod(lax, 0o644)
    if kind == "hardlink-user-file":
        os.chown(lax, NOBODY, NOBODY)
        plant(world.policy_path, "hardlink", lax)
    else:
        plant(world.policy_path, kind.split("-")[0], lax)
    with no_block(10):
        result, conv = world.run("alice", [WRONG])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]
    assert f"{world.policy_path}: " in world.log_text(), world.log_text()
    no_traceback_in(world)


def _forged_cache(world: World) -> bytes:
    """A cache that matches the policy file exactly but says mode off and exempts alice."""
    policy_module.load(str(world.policy_path))
    lines = world.cache_path.read_text().split("\n")
    forged = []
    for line in lines:
        key = line.split(" ", 1)[0]
        if key == "enforce.mode":
            line = "enforce.mode off"
        elif key == "exempt.users":
            line = "exempt.users alice"
        elif key == "on_error":
            line = "on_error allow"
        forged.append(line)
    return "\n".join(forged).encode()


@pytest.mark.parametrize("kind", ["symlink", "foreign-owner", "mode-0644", "mode-0640"])
def test_forged_policy_cache_is_never_trusted(world, tmp_path, kind):
    world.enroll("alice")
    data = _forged_cache(world)
    if kind == "symlink":
        elsewhere = tmp_path / "forged.cache"
        elsewhere.write_bytes(data)
        os.chmod(elsewhere, 0o600)
        plant(world.cache_path, "symlink", elsewhere)
    else:
        world.cache_path.unlink()
        world.cache_path.write_bytes(data)
        os.chmod(world.cache_path, 0o600)
        if kind == "foreign-owner":
            os.chown(world.cache_path, NOBODY, NOBODY)
        else:
            os.chmod(world.cache_path, int(kind[-4:], 8))
    assert policy_module.load(str(world.policy_path)).mode == "all"
    result, conv = world.run("alice", [WRONG])
    assert result == FAIL and conv.prompts == [login.PROMPT]


@pytest.mark.parametrize("kind", ["symlink", "dangling", "hardlink", "fifo", "directory"])
def test_planted_policy_cache_is_never_written_through(world, tmp_path, kind):
    world.enroll("alice")
    shadow = Sentinel(tmp_path / "shadow")
    ghost = tmp_path / "ghost"
    if world.cache_path.exists():
        world.cache_path.unlink()
    plant(world.cache_path, kind, shadow.path if kind in ("symlink", "hardlink") else ghost)
    with no_block(10):
        result, conv = world.run("alice", [CODE])
        assert result == PASS, (conv.transcript, world.log_text())  # the cache is only an optimisation
        assert policy_module.load(str(world.policy_path)).mode == "all"
    shadow.assert_untouched()
    assert not os.path.lexists(ghost)
    no_traceback_in(world)


@pytest.mark.parametrize("kind", ["symlink", "dangling", "hardlink", "fifo", "directory"])
def test_planted_policy_cache_temporary_name(world, tmp_path, kind):
    """The cache's temporary file has the writer's pid in its name: plant at this process's."""
    shadow = Sentinel(tmp_path / "shadow")
    ghost = tmp_path / "ghost"
    folder, name = os.path.split(world.cache_path)
    tmp = Path(folder) / f".{name}.{os.getpid()}.tmp"  # fileio.write_atomic(locked=False)
    if world.cache_path.exists():
        world.cache_path.unlink()
    plant(tmp, kind, shadow.path if kind in ("symlink", "hardlink") else ghost)
    with no_block(10):
        assert policy_module.load(str(world.policy_path)).mode == "all"
    shadow.assert_untouched()
    assert not os.path.lexists(ghost)


# --- damaged files: truncated at every byte, empty, oversized, binary, wrong shape ---------


def test_record_truncated_at_every_byte_fails_closed_and_is_left_alone(world):
    world.enroll("alice", recovery_salt=b"s" * 16, recovery_hashes=[b"h" * 32], failures=[int(T) - 5])
    full = world.record_path().read_bytes()
    assert len(full) > 300
    for size in range(len(full)):
        world.record_path().write_bytes(full[:size])
        result, conv = world.run("alice", [CODE])
        assert result == FAIL, size
        assert conv.errors == [login.MSG_ERROR], (size, conv.transcript)
        assert world.record_path().read_bytes() == full[:size], size
    no_traceback_in(world)
    world.record_path().write_bytes(full)
    assert world.run("alice", [CODE])[0] == PASS  # control


DAMAGED_RECORDS = {
    "empty": lambda full: b"",
    "oversized": lambda full: full[:-4] + b"x" * (MAX_BYTES + 10) + b"\nend\n",
    "huge": lambda full: full + b"\0" * (8 * 1024 * 1024),
    "binary": lambda full: bytes(range(256)) * 4,
    "invalid-utf8": lambda full: full.replace(b"algorithm SHA1", b"algorithm SHA\xff"),
    "nul-bytes": lambda full: full.replace(b"\n", b"\0\n", 3),
    "crlf": lambda full: full.replace(b"\n", b"\r\n"),
    "another-users": lambda full: record_text("bob", EVIL_KEY),
    "duplicate-key-line": lambda full: full.replace(b"end\n", b"key " + EVIL_KEY.hex().encode() + b"\nend\n"),
    "unknown-field": lambda full: full.replace(b"end\n", b"admin 1\nend\n"),
    "digits-out-of-range": lambda full: full.replace(b"digits 6", b"digits 99"),
    "period-zero": lambda full: full.replace(b"period 30", b"period 0"),
    "negative-period": lambda full: full.replace(b"period 30", b"period -30"),
    "huge-int": lambda full: full.replace(b"last_step -1", b"last_step " + b"9" * 5000),
    "unicode-digits": lambda full: full.replace(b"digits 6", "digits \u0666".encode()),
    "hex-with-spaces": lambda full: full.replace(b"key ", b"key  "),
    "json": lambda full: b'{"user": "alice", "key": "' + EVIL_KEY.hex().encode() + b'"}\n',
}


@pytest.mark.parametrize("damage", DAMAGED_RECORDS)
def test_damaged_record_fails_closed(world, damage):
    world.enroll("alice")
    full = world.record_path().read_bytes()
    world.record_path().write_bytes(DAMAGED_RECORDS[damage](full))
    broken = world.record_path().read_bytes()
    for answers in ([CODE], [EVIL_CODE], [WRONG]):
        result, conv = world.run("alice", answers)
        assert result == FAIL and conv.errors == [login.MSG_ERROR], (damage, conv.transcript)
    assert world.record_path().read_bytes() == broken
    assert str(world.record_path()) in world.log_text()
    no_traceback_in(world)


# storage and on_error first, unenrolled before mode: no prefix of it can point
# at the host's state folder or send mail
FULL_POLICY = """storage:
  state_dir: {state}
on_error: deny
version: 1
enforce:
  unenrolled: deny
  mode: all
  groups: [staff]
exempt:
  users: [carol]
  groups: []
  networks: [198.51.100.0/24, "2001:db8::/32"]
totp:
  issuer: "{{hostname}}"
  digits: 6
  period: 30
  window: 1
rate_limit:
  max_failures: 3
  per_seconds: 900
"""


def test_policy_truncated_at_every_byte_never_lets_a_wrong_code_in(world):
    """Every prefix parses or fails with file:line errors; a login with a wrong code never passes.

    (A prefix that parses is a valid, possibly weaker policy: YAML cannot tell
    a truncated file from a short one. The login runs for every distinct
    policy that parses and for every 8th prefix that does not: each wrong code
    costs a PBKDF2.)
    """
    world.enroll("alice")
    data = FULL_POLICY.format(state=world.state).encode()
    seen = set()
    for size in range(len(data) + 1):
        world.write_policy(data[:size].decode(), with_state=False)
        try:
            loaded = policy_module.load(str(world.policy_path))
        except PolicyError as exc:
            assert exc.errors and all(e.startswith(f"{world.policy_path}:") for e in exc.errors), (size, exc.errors)
            if size % 8:
                continue
        else:
            assert loaded.path == str(world.policy_path)
            key = tuple(sorted(loaded.as_dict().items()))
            if key in seen:
                continue
            seen.add(key)
        result, conv = world.run("alice", [WRONG], now=T + size * 30)  # a new step: nothing is a replay
        assert result != PASS, (size, conv.transcript)
    assert len(seen) >= 5
    no_traceback_in(world)


def test_policy_cache_truncated_at_every_byte_is_ignored(world):
    world.enroll("alice")
    policy_module.load(str(world.policy_path))
    good = world.cache_path.read_bytes()
    forged = good.replace(b"enforce.mode all", b"enforce.mode off")
    st = os.stat(world.policy_path)
    control = policy_module.loads_cache(forged.decode(), str(world.policy_path), st)
    assert control is not None and control.mode == "off"  # control: the forged cache itself parses
    for size in range(len(forged)):
        text = forged[:size].decode("utf-8", "replace")
        assert policy_module.loads_cache(text, str(world.policy_path), st) is None, size
        if size % 16 == 0:  # and through the file, as a login reads it
            world.cache_path.write_bytes(forged[:size])
            os.chmod(world.cache_path, 0o600)
            assert policy_module.load(str(world.policy_path)).mode == "all", size


WRONG_SHAPES = {
    "empty-mapping-value": "enforce:\n",
    "list-at-top": "- version: 1\n- enforce: {mode: all}\n",
    "scalar-at-top": "all\n",
    "number-at-top": "42\n",
    "enforce-is-list": "enforce: [all]\n",
    "mode-is-list": "enforce:\n  mode: [all]\n",
    "mode-is-mapping": "enforce:\n  mode: {all: true}\n",
    "groups-is-string": "enforce:\n  groups: staff\n",
    "groups-of-mappings": "enforce:\n  groups: [{name: staff}]\n",
    "networks-nested": "exempt:\n  networks: [[10.0.0.0/8]]\n",
    "int-as-string": "rate_limit:\n  max_failures: '5'\n",
    "float": "rate_limit:\n  max_failures: 5.0\n",
    "bool-for-int": "rate_limit:\n  max_failures: true\n",
    "huge-int": "rate_limit:\n  max_failures: " + "9" * 5000 + "\n",
    "unicode-digit-version": "version: \u00b2\n",
    "two-documents": "version: 1\n---\nversion: 1\n",
    "json-flow": '{"version": 1, "enforce": {"mode": "all", "extra": 1}}\n',
    "anchor-loop": "enforce: &a\n  mode: all\n  groups: *a\n",
    "python-tag": "rate_limit:\n  max_failures: !!python/object/apply:os.system [5]\n",
    "binary-tag": "on_error: !!binary ZGVueQ==\n",
    "deep-nesting": "enforce: " + "[" * 1000 + "]" * 1000 + "\n",
    "null-key": "~: 1\n",
    "int-key": "1: 1\n",
    "duplicate-key": "on_error: deny\non_error: allow\n",
    "tab-indent": "enforce:\n\tmode: all\n",
    "control-char": "on_error: deny\x07\n",
}


@pytest.mark.parametrize("shape", WRONG_SHAPES)
def test_policy_of_the_wrong_shape_fails_closed_with_file_and_line(world, shape):
    world.enroll("alice")
    world.write_policy(WRONG_SHAPES[shape], with_state=False)
    with pytest.raises(PolicyError) as info:
        policy_module.load(str(world.policy_path))
    assert info.value.errors
    for error in info.value.errors:
        head, line, _rest = error.split(":", 2)
        assert head == str(world.policy_path) and line.isdigit(), error
    result, conv = world.run("alice", [WRONG])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]
    no_traceback_in(world)


def test_empty_policy_is_refused_not_all_defaults(world):
    """An emptied file is not "every default" (2FA off): it lacks the required version."""
    world.enroll("alice")
    world.policy_path.write_bytes(b"")
    with pytest.raises(PolicyError) as info:
        policy_module.load(str(world.policy_path))
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(f'{world.policy_path}:1: version: missing; add "version: 1"')
    result, conv = world.run("alice", [WRONG])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]


@pytest.mark.parametrize("content", ["oversized", "invalid-utf8", "binary", "nul"])
def test_policy_oversized_or_binary(world, content):
    world.enroll("alice")
    path = world.policy_path
    data = {
        "oversized": b"# " + b"x" * (policy_module.MAX_POLICY_BYTES + 10) + b"\n",
        "invalid-utf8": b"on_error: deny\n# caf\xe9\n",
        "binary": bytes(range(256)),
        "nul": b"version: 1\0\n",
    }[content]
    path.write_bytes(data)
    os.chmod(path, 0o644)
    result, conv = world.run("alice", [WRONG])
    assert result == FAIL and conv.errors == [login.MSG_ERROR]
    assert f"{path}" in world.log_text()
    no_traceback_in(world)


# --- ~/.google_authenticator import: read with the USER's privileges, no-follow ------------


@pytest.fixture
def home():
    """A home folder in /tmp (world-traversable) owned by uid 65534, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="twofa-hard-home-"))
    os.chmod(folder, 0o755)
    os.chown(folder, NOBODY, NOBODY)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def root_dir():
    """A root-only folder (0700) in /tmp, for files the user must not read."""
    folder = Path(tempfile.mkdtemp(prefix="twofa-hard-root-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


GA_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
GA_TEXT = f'{GA_SECRET}\n" RATE_LIMIT 3 30\n" WINDOW_SIZE 17\n" DISALLOW_REUSE\n" TOTP_AUTH\n12345678\n87654321\n'


def _as_user(path, uid=NOBODY):
    with no_block(10):
        return googleauth.read_as_user(str(path), uid, uid, [uid])


def _user_file(path: Path, text: str = GA_TEXT, uid: int = NOBODY, mode: int = 0o400) -> Path:
    path.write_text(text)
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    return path


def test_google_authenticator_control_a_user_file_is_read(home):
    text = googleauth.read_as_user(str(_user_file(home / ".google_authenticator")), NOBODY, NOBODY, [NOBODY])
    parsed = googleauth.parse(text)
    assert parsed.scratch_codes == ["12345678", "87654321"] and len(parsed.key) == 20
    assert os.geteuid() == 0 and os.getegid() == 0  # the parent never changed its ids


def test_google_authenticator_symlink_to_a_shadow_like_file_is_refused(home, root_dir):
    shadow = Sentinel(root_dir / "shadow", GA_TEXT.encode(), mode=0o600)  # would import if read as root
    os.symlink(shadow.path, home / ".google_authenticator")
    with pytest.raises(googleauth.GoogleAuthenticatorError) as info:
        _as_user(home / ".google_authenticator")
    assert "symbolic link" in str(info.value)
    shadow.assert_untouched()


def test_google_authenticator_symlink_to_a_readable_file_is_still_refused(home, root_dir):
    """Only no-follow stops this one: the target is the user's own and readable."""
    target = _user_file(root_dir / "elsewhere", mode=0o444)
    os.symlink(target, home / ".google_authenticator")
    with pytest.raises(googleauth.GoogleAuthenticatorError, match="symbolic link"):
        _as_user(home / ".google_authenticator")


def test_google_authenticator_hard_link_to_a_root_file_is_refused(home, root_dir):
    shadow = Sentinel(home.parent / f"{home.name}-shadow", GA_TEXT.encode(), mode=0o644)  # readable by anyone
    try:
        os.link(shadow.path, home / ".google_authenticator")
        with pytest.raises(googleauth.GoogleAuthenticatorError, match="not owned by the user"):
            _as_user(home / ".google_authenticator")
        shadow.assert_untouched()
    finally:
        shadow.path.unlink()


def test_google_authenticator_root_only_file_in_home_is_refused(home):
    """A file the user cannot read (root 0600) cannot be imported by them: opened with their ids."""
    path = home / ".google_authenticator"
    path.write_text(GA_TEXT)
    os.chmod(path, 0o600)
    with pytest.raises(googleauth.GoogleAuthenticatorError, match="Permission denied|not owned"):
        _as_user(path)


def test_google_authenticator_path_through_a_linked_folder_to_root_files(home, root_dir):
    private = root_dir / "private"
    private.mkdir(mode=0o700)
    Sentinel(private / ".google_authenticator", GA_TEXT.encode(), mode=0o644)
    os.symlink(private, home / "linked")
    with pytest.raises(googleauth.GoogleAuthenticatorError, match="Permission denied"):
        _as_user(home / "linked" / ".google_authenticator")


@pytest.mark.parametrize("kind", ["fifo", "directory", "dangling"])
def test_google_authenticator_special_files_are_refused_without_blocking(home, kind):
    path = home / ".google_authenticator"
    plant(path, kind, home / "ghost")
    os.lchown(path, NOBODY, NOBODY)
    with pytest.raises(googleauth.GoogleAuthenticatorError):
        _as_user(path)
    assert not (home / "ghost").exists()


def test_google_authenticator_oversized_file_is_refused(home):
    path = _user_file(home / ".google_authenticator", GA_TEXT + "#" * 10_000)
    with pytest.raises(googleauth.GoogleAuthenticatorError, match="larger than"):
        _as_user(path)


def test_google_authenticator_file_truncated_at_every_byte(home):
    for size in range(len(GA_TEXT) + 1):
        text = GA_TEXT[:size]
        try:
            parsed = googleauth.parse(text)
        except googleauth.GoogleAuthenticatorError:
            continue
        assert len(parsed.key) >= 10 and 1 <= parsed.period <= 60, size


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "\0" * 64,
        "\xff\xfe binary",
        "A" * 17 + "\n",
        "A" * 19 + "\n",
        "A" * 22 + "\n",
        GA_SECRET + '\n" STEP_SIZE 0\n',
        GA_SECRET + '\n" STEP_SIZE 999999999999\n',
        GA_SECRET + '\n" STEP_SIZE \u00b2\n',
        GA_SECRET + '\n" STEP_SIZE -30\n',
        GA_SECRET + '\n" HOTP_COUNTER 1\n',
        GA_SECRET + "\n1234567\n",
        GA_SECRET + "\n\u0661" * 8 + "\n",
        "otpauth://totp/x?secret=" + GA_SECRET + "\n",
        "[secret]\nkey = value\n",
    ],
    ids=[
        "empty",
        "newline",
        "nul",
        "binary",
        "b32-17",
        "b32-19",
        "b32-22",
        "step-0",
        "step-huge",
        "step-superscript",
        "step-negative",
        "hotp",
        "7-digit-scratch",
        "arabic-digits",
        "uri",
        "ini",
    ],
)
def test_google_authenticator_bad_content_is_a_clear_error(text):
    try:
        parsed = googleauth.parse(text)
    except googleauth.GoogleAuthenticatorError as exc:
        assert str(exc)
        return
    assert len(parsed.key) >= 10 and 1 <= parsed.period <= 60 and parsed.digits == 6


# --- the important ones through the real pam_python.so -------------------------------------


def test_pam_record_symlinked_to_an_attackers_record_is_refused(scratch, tmp_path):
    from pam_harness import KEY as STACK
    from pam_harness import MSG_ERROR, current_step, new_secret, oath

    alice = scratch.enroll("alice")
    evil_secret = new_secret()
    scratch.sensitive.add(evil_secret)
    bob = scratch.enroll("bob", evil_secret)  # a valid record the attacker knows the secret of
    record, bob_record = scratch.record_path("alice"), scratch.record_path("bob")
    evil = tmp_path / "evil.rec"
    shutil.copy2(bob_record, evil)
    # rewrite the user name inside, so the record is a valid record OF ALICE with the attacker's key
    evil.write_bytes(evil.read_bytes().replace(b"user bob\n", b"user alice\n"))
    os.chmod(evil, 0o600)
    shadow = Sentinel(evil, evil.read_bytes())
    record.unlink()
    os.symlink(evil, record)
    evil_code = oath(evil_secret, max(current_step(), bob.enroll_step + 1))
    result = scratch.login(STACK, "alice", evil_code)
    assert result.denied and MSG_ERROR in result.output, result
    assert result.log_with("user=alice", str(record)), result
    assert record.is_symlink()
    shadow.assert_untouched()
    assert alice.secret != evil_secret


@pytest.mark.parametrize("where", ["lock", "tmp", "cache"])
def test_pam_planted_symlinks_never_written_through(scratch, tmp_path, where):
    from pam_harness import KEY as STACK

    alice = scratch.enroll("alice")
    shadow = Sentinel(tmp_path / "shadow")
    users = scratch.state_dir / "users"
    path = {
        "lock": users / "alice.lock",
        "tmp": users / ".alice.rec.tmp",
        "cache": scratch.policy_path.parent / ".policy.yaml.cache",
    }[where]
    if where == "cache":
        scratch.write_policy(max_failures=4)  # a new policy file: the module must re-parse and write its cache
    if path.exists() or path.is_symlink():
        path.unlink()
    os.symlink(shadow.path, path)
    result = scratch.login(STACK, "alice", alice.code())
    if where == "lock":
        assert result.denied, result
        assert result.log_with("user=alice", str(path)), result
    else:
        assert result.ok, result
    shadow.assert_untouched()


@pytest.mark.parametrize(
    "what",
    ["policy-mode-0666", "policy-owner", "policy-folder-0777", "state-owner", "state-mode-0755", "users-symlink"],
)
def test_pam_unsafe_owner_mode_or_link_fails_closed_naming_the_file(scratch, tmp_path, what):
    from pam_harness import KEY as STACK
    from pam_harness import MSG_ERROR

    alice = scratch.enroll("alice")
    code = alice.code()
    users = scratch.state_dir / "users"
    if what == "policy-mode-0666":
        path = scratch.policy_path
        os.chmod(path, 0o666)
    elif what == "policy-owner":
        path = scratch.policy_path
        os.chown(path, NOBODY, NOBODY)
    elif what == "policy-folder-0777":
        path = scratch.policy_path.parent
        os.chmod(path, 0o777)
    elif what == "state-owner":
        path = scratch.state_dir
        os.chown(path, NOBODY, NOBODY)
    elif what == "state-mode-0755":
        path = scratch.state_dir
        os.chmod(path, 0o755)
    else:
        path = users
        os.rename(users, tmp_path / "users.real")
        os.symlink(tmp_path / "users.real", users)
    result = scratch.login(STACK, "alice", code)
    assert result.denied and MSG_ERROR in result.output, result
    assert result.log_with("user=alice", f"{path}"), result
    # repaired: the same code still works (it was never consumed)
    if what.startswith("policy-folder"):
        os.chmod(path, 0o700)
    elif what.startswith("policy"):
        os.chmod(path, 0o644)
        os.chown(path, 0, 0)
    elif what == "users-symlink":
        path.unlink()
        os.rename(tmp_path / "users.real", users)
    else:
        os.chown(path, 0, 0)
        os.chmod(path, 0o700)
    assert scratch.login(STACK, "alice", code).ok


@pytest.mark.parametrize("kind", ["symlink-to-shadow", "symlink-to-own-file", "fifo"])
def test_pam_enroll_import_google_authenticator_refuses_links(scratch, kind):
    """twofa-enroll --import-google-authenticator as root for alice (uid 2001 under nss_wrapper)."""
    from pam_harness import USERS, current_step, oath

    uid, gid = USERS["alice"]
    folder = Path(tempfile.mkdtemp(prefix="twofa-hard-ga-"))
    target = folder.parent / f"{folder.name}-target"
    try:
        os.chmod(folder, 0o755)
        os.chown(folder, uid, gid)
        secret = GA_SECRET
        scratch.sensitive.update({secret, secret.lower(), "12345678", "87654321"})
        target.write_text(GA_TEXT)
        if kind == "symlink-to-own-file":
            os.chown(target, uid, gid)
            os.chmod(target, 0o444)
        else:
            os.chmod(target, 0o600)
        path = folder / ".google_authenticator"
        if kind == "fifo":
            os.mkfifo(path, 0o600)
            os.chown(path, uid, gid)
        else:
            os.symlink(target, path)
        code = oath(secret, current_step())
        scratch.sensitive.add(code)
        result = scratch._checked(
            scratch.env.run(
                [
                    scratch.env.enroll,
                    "--user",
                    "alice",
                    "--import-google-authenticator",
                    str(path),
                    "--code",
                    code,
                    "--policy",
                    scratch.policy_path,
                ],
                scratch.env.nss_env(),
                timeout=30,
            )
        )
        assert result.rc != 0, result
        assert "cannot import" in result.output, result
        assert "symbolic link" in result.output or "not a regular file" in result.output, result
        assert not scratch.record_path("alice").exists()
        assert target.read_text() == GA_TEXT
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if target.exists():
            target.unlink()


def test_pam_corrupted_record_the_advice_given_works(scratch):
    """The message for a corrupted record tells the admin what to do: doing exactly that must work."""
    import re

    from pam_harness import KEY as STACK
    from pam_harness import MSG_ERROR

    alice = scratch.enroll("alice")
    path = scratch.record_path("alice")
    path.write_bytes(path.read_bytes()[:40])
    result = scratch.login(STACK, "alice", alice.code())
    assert result.denied and MSG_ERROR in result.output, result
    advice = [line for line in result.syslog if "corrupted record" in line]
    assert advice, result
    if "twofa-admin disable" in advice[0]:
        done = scratch.cli("disable", "alice", "--yes")
        assert done.rc == 0, f"the log says to run twofa-admin disable, which fails:\n{done}"
    else:
        move = re.search(r"\(mv (\S+) (\S+)\)", advice[0])
        assert move, advice[0]
        os.rename(move.group(1), move.group(2))
    again = scratch.enroll("alice")
    assert scratch.login(STACK, "alice", again.code()).ok
