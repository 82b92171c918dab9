"""The fleet key file and AES-256-GCM sealing (pure crypto, no database)."""

import os

import pytest

from pam_twofa.fleet import key as fleetkey
from pam_twofa.fleet.key import FleetKeyError, Keyring, SealError, open_sealed, seal


def test_seal_opens_with_the_same_key_and_user():
    ring = Keyring.generate()
    sealed = seal(ring, "alice", "the record text\n")
    assert open_sealed(ring, "alice", sealed) == "the record text\n"
    assert "the record text" not in sealed


def test_a_row_copied_onto_another_user_does_not_open():
    ring = Keyring.generate()
    with pytest.raises(SealError, match="another user"):
        open_sealed(ring, "bob", seal(ring, "alice", "x"))


def test_a_tampered_ciphertext_does_not_open():
    ring = Keyring.generate()
    kid, nonce, data = seal(ring, "alice", "some text").split(" ")
    flipped = data[:-2] + ("00" if data[-2:] != "00" else "01")
    with pytest.raises(SealError):
        open_sealed(ring, "alice", f"{kid} {nonce} {flipped}")


def test_a_sealing_relabelled_with_another_key_id_does_not_open():
    # The key id is bound as associated data: the same key under another id fails.
    ring = Keyring.generate()
    kid, nonce, data = seal(ring, "alice", "t").split(" ")
    other = Keyring([("00000000", ring.keys[0][1])])
    with pytest.raises(SealError):
        open_sealed(other, "alice", f"00000000 {nonce} {data}")


def test_the_wrong_key_says_so():
    with pytest.raises(SealError, match="wrong fleet key"):
        open_sealed(Keyring.generate(), "alice", seal(Keyring.generate(), "alice", "t"))


def test_a_keyring_seals_under_every_key_and_either_opens():
    old, new = Keyring.generate(), Keyring.generate()
    both = Keyring(new.keys + old.keys)
    sealed = seal(both, "alice", "t")
    assert fleetkey.sealed_ids(sealed) == both.ids
    assert open_sealed(old, "alice", sealed) == "t"
    assert open_sealed(new, "alice", sealed) == "t"


@pytest.mark.root
def test_key_file_round_trip_and_strict_parse(tmp_path):
    path = str(tmp_path / "fleet.key")
    ring = Keyring.generate()
    fleetkey.write_new(path, ring)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert fleetkey.load(path).keys == ring.keys
    with pytest.raises(FleetKeyError, match="never overwritten"):
        fleetkey.write_new(path, Keyring.generate())
    for bad in ("", "pam-twofa-fleet-key 1\n", "pam-twofa-fleet-key 1\nkey zz " + "0" * 64 + "\n",
                "pam-twofa-fleet-key 1\nkey 01234567 " + "0" * 62 + "\n"):  # fmt: skip
        with pytest.raises(FleetKeyError):
            Keyring.loads(bad)


@pytest.mark.root
def test_key_file_must_be_root_0600_and_not_a_link(tmp_path):
    path = tmp_path / "fleet.key"
    fleetkey.write_new(str(path), Keyring.generate())
    os.chmod(path, 0o640)
    with pytest.raises(FleetKeyError) as info:
        fleetkey.load(str(path))
    assert str(info.value) == (
        f"{path}: the fleet key file is mode 0640, readable by others: chown root:root {path}; chmod 0600 {path}"
    )
    os.chmod(path, 0o600)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(FleetKeyError, match="symbolic link"):
        fleetkey.load(str(link))
    with pytest.raises(FleetKeyError, match="already exists"):
        fleetkey.write_new(str(link), Keyring.generate())
    assert fleetkey.load(str(path))  # the link's target was not written through it


@pytest.mark.root
def test_key_file_owned_by_a_user_or_not_a_key_is_refused(tmp_path):
    # The key file is read by pam_twofa.system.secretfile, like the password files (tests/test_secretfile.py).
    path = tmp_path / "fleet.key"
    ring = Keyring.generate()
    fleetkey.write_new(str(path), ring)
    os.chown(path, 65534, 65534)
    with pytest.raises(FleetKeyError, match=r"must be owned by root \(uid 0\), not uid 65534: chown root:root"):
        fleetkey.load(str(path))
    os.chown(path, 0, 0)
    path.write_bytes(ring.dumps().encode() + b"#" * (64 * 1024))
    with pytest.raises(FleetKeyError, match=r"more than 65536: is it the right file\?") as info:
        fleetkey.load(str(path))
    assert ring.keys[0][1].hex() not in str(info.value)
    path.write_bytes(b"pam-twofa-fleet-key 1\n\xff\n")
    with pytest.raises(FleetKeyError, match="not UTF-8 text"):
        fleetkey.load(str(path))
    with pytest.raises(FleetKeyError, match="is missing: make it with twofa-admin db keygen PATH"):
        fleetkey.load(str(tmp_path / "nowhere.key"))


def test_the_version_is_bound_to_every_sealing():
    ring = Keyring(Keyring.generate().keys + Keyring.generate().keys)  # a rotation: two sealings
    sealed = seal(ring, "alice", "t", 7)
    for kid, key in ring.keys:
        one = Keyring([(kid, key)])
        assert open_sealed(one, "alice", sealed, 7) == "t"
        for version in (6, 8, None):
            with pytest.raises(SealError):
                open_sealed(one, "alice", sealed, version)
    with pytest.raises(SealError):  # a sealing without a version (schema 1) is not one of version 1
        open_sealed(ring, "alice", seal(ring, "alice", "t"), 1)
