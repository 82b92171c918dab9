"""The fleet key and sealing records with it (the agent and the CLIs only, never the login path).

A key file is a keyring, text, root-owned 0600::

    pam-twofa-fleet-key 1
    key 3f9a1c2e 64-HEX-DIGITS      <- the first key: every row is sealed under it
    key 8b77d0a4 64-HEX-DIGITS      <- further keys: rows are sealed under these too

Each row of the database holds one sealed copy of the record text per key of
the keyring of whoever wrote it (one line ``KEY_ID NONCE CIPHERTEXT``, hex),
and can be opened with any of them. That is what lets a key be rotated while
logins go on (docs/many-hosts.md): during a rotation the hosts hold either the
old keyring or the new one (new key first, old key kept), and rows carry both
sealings, so every host can read every row.

Sealing is AES-256-GCM (``cryptography``) with a fresh 96-bit nonce, and the
associated data binds the user name, the key id and the row's version (schema
2, docs/store.md): a row copied onto another user, a sealing relabelled with
another key id, or a row whose version column was edited, fails to open. A
sealing without a version (``version=None``) is schema 1's, kept for the
canary and for ``db init``'s migration.
"""

from __future__ import annotations

import os

from pam_twofa.system import secretfile
from pam_twofa.system.fileio import fsync_dir, write_all, write_atomic

MAGIC = "pam-twofa-fleet-key 1"
KEY_BYTES = 32
NONCE_BYTES = 12
ID_HEX = 8
MAX_KEYS = 8
MAX_SEALED = 256 * 1024


class FleetKeyError(Exception):
    """The key file is missing, unsafe or malformed; the message says which and what to do."""


class SealError(Exception):
    """A sealed value does not open with any key of the keyring (tampered, another user's, wrong key)."""


class Keyring:
    """Keys in order: ``keys[0]`` is the one every new sealing uses first."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise FleetKeyError("a keyring needs at least one key")
        self.keys = list(keys)

    @property
    def ids(self) -> list[str]:
        return [kid for kid, _key in self.keys]

    def dumps(self) -> str:
        return MAGIC + "\n" + "".join(f"key {kid} {key.hex()}\n" for kid, key in self.keys)

    @classmethod
    def generate(cls) -> Keyring:
        return cls([(os.urandom(ID_HEX // 2).hex(), os.urandom(KEY_BYTES))])

    @classmethod
    def loads(cls, text: str, path: str = "key file") -> Keyring:
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        if not lines or lines[0] != MAGIC:
            raise FleetKeyError(f"{path}: not a pam-twofa fleet key (make one with: twofa-admin db keygen PATH)")
        keys: list[tuple[str, bytes]] = []
        for number, line in enumerate(lines[1:], start=2):
            parts = line.split(" ")
            if (
                len(parts) != 3
                or parts[0] != "key"
                or len(parts[1]) != ID_HEX
                or len(parts[2]) != 2 * KEY_BYTES
                or parts[1].strip("0123456789abcdef")
                or parts[2].strip("0123456789abcdef")
            ):
                raise FleetKeyError(f"{path}:{number}: malformed key line (expected: key ID 64-HEX-DIGITS)")
            if parts[1] in (kid for kid, _key in keys):
                raise FleetKeyError(f"{path}:{number}: key id {parts[1]} appears twice")
            keys.append((parts[1], bytes.fromhex(parts[2])))
        if not keys or len(keys) > MAX_KEYS:
            raise FleetKeyError(f"{path}: expected 1 to {MAX_KEYS} keys")
        return cls(keys)


def load(path: str) -> Keyring:
    """The keyring of the key file ``path`` (a root-only secret file: pam_twofa.system.secretfile)."""
    try:
        text = secretfile.read(
            path,
            "the fleet key file",
            missing="make it with twofa-admin db keygen PATH, or copy the fleet's key from another host",
        )
    except secretfile.SecretFileError as exc:
        raise FleetKeyError(str(exc)) from None
    return Keyring.loads(text, path)


def write_new(path: str, keyring: Keyring) -> None:
    """Write a key file that must not exist yet (O_EXCL, no link followed), 0600, synced."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise FleetKeyError(f"{path}: already exists; a key file is never overwritten (choose another path)") from None
    except OSError as exc:
        raise FleetKeyError(f"{path}: cannot create ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, keyring.dumps().encode("ascii"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    fsync_dir(folder)


def replace(path: str, keyring: Keyring) -> None:
    """Replace an existing key file atomically (a new O_EXCL file beside it, synced, renamed over it)."""
    write_atomic(path, keyring.dumps().encode("ascii"), mode=0o600, locked=False)


# What a sealing is bound to besides the user, the key id and the version: a database row, or an
# entry of an agent's offline journal (which must never pass for a row, nor a row for an entry).
ROW = b"pam-twofa-record 2"
JOURNAL = b"pam-twofa-journal 1"


def _aad(user: str, kid: str, version: int | None, kind: bytes = ROW) -> bytes:
    name = user.encode("utf-8", "surrogatepass")
    if version is None:
        return b"pam-twofa-record 1\0" + name + b"\0" + kid.encode("ascii")
    return kind + b"\0" + name + b"\0" + kid.encode("ascii") + b"\0" + str(version).encode("ascii")


def seal(keyring: Keyring, user: str, text: str, version: int | None = None, kind: bytes = ROW) -> str:
    """``text`` sealed under every key of the keyring: one ``ID NONCE CIPHERTEXT`` line per key,
    every one bound to the same ``version`` (and ``kind``: ``ROW`` or ``JOURNAL``)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    plain = text.encode("utf-8")
    lines = []
    for kid, key in keyring.keys:
        nonce = os.urandom(NONCE_BYTES)
        lines.append(f"{kid} {nonce.hex()} {AESGCM(key).encrypt(nonce, plain, _aad(user, kid, version, kind)).hex()}")
    return "\n".join(lines)


def sealed_ids(sealed: str) -> list[str]:
    return [line.split(" ", 1)[0] for line in sealed.split("\n") if line]


def open_sealed(keyring: Keyring, user: str, sealed: str, version: int | None = None, kind: bytes = ROW) -> str:
    """The text, opened with the first key of the keyring the row was sealed under, for ``user`` at
    ``version``; SealError otherwise."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(sealed) > MAX_SEALED:
        raise SealError("sealed record too large")
    by_id = {}
    for line in sealed.split("\n"):
        parts = line.split(" ")
        if len(parts) != 3:
            raise SealError("malformed sealed record")
        by_id[parts[0]] = parts
    for kid, key in keyring.keys:
        if kid not in by_id:
            continue
        _kid, nonce_hex, data_hex = by_id[kid]
        try:
            nonce, data = bytes.fromhex(nonce_hex), bytes.fromhex(data_hex)
        except ValueError:
            raise SealError("malformed sealed record") from None
        if len(nonce) != NONCE_BYTES:
            raise SealError("malformed sealed record")
        try:
            plain = AESGCM(key).decrypt(nonce, data, _aad(user, kid, version, kind))
        except InvalidTag:
            raise SealError(
                f"does not open with key {kid} (tampered, its version edited, or copied from another user's row)"
            ) from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise SealError("sealed record is not text") from None
    raise SealError(
        f"sealed under key(s) {', '.join(sorted(by_id)) or 'none'}, and the key file holds "
        f"{', '.join(keyring.ids)}: this host has the wrong fleet key (copy the current one from another host)"
    )
