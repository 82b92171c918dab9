"""The one reader of root-only secret files (pam_twofa.system.secretfile, docs/store.md "Secret files").

The fleet key file, the SMTP password file and the database password file
are read by it, so every rule is checked here through all three callers:
the same refusals, each in its caller's error type, the message naming the
file and the fix and never the content.
"""

from __future__ import annotations

import os
import threading

import pytest

from pam_twofa.fleet import database
from pam_twofa.fleet import key as fleetkey
from pam_twofa.store import StoreError
from pam_twofa.system import mail, secretfile
from pam_twofa.system.secretfile import SecretFileError

NOBODY = 65534
PASSWORD = "S3cret-Pw.for-tests"
KEYRING = fleetkey.Keyring.generate()
KEY_HEX = KEYRING.keys[0][1].hex()


def write(path, data: bytes, mode: int = 0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    return path


# (name, content of a good file, the secret in it, reader, its error type)
READERS = [
    ("fleet key", KEYRING.dumps().encode(), KEY_HEX, fleetkey.load, fleetkey.FleetKeyError),
    ("SMTP password", (PASSWORD + "\n").encode(), PASSWORD, mail.read_password, mail.MailError),
    ("database password", (PASSWORD + "\n").encode(), PASSWORD, database.read_password, StoreError),
]
IDS = [r[0] for r in READERS]


def refused(reader, error, path) -> str:
    with pytest.raises(error) as info:
        reader(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    return message


@pytest.mark.root
@pytest.mark.parametrize("name,data,secret,reader,error", READERS, ids=IDS)
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_root_only_file_is_read(tmp_path, name, data, secret, reader, error, mode):
    path = write(tmp_path / "secret", data, mode)
    got = reader(str(path))
    assert (got.keys == KEYRING.keys) if name == "fleet key" else (got == PASSWORD)


@pytest.mark.root
@pytest.mark.parametrize("name,data,secret,reader,error", READERS, ids=IDS)
def test_a_file_owned_by_another_user_is_refused(tmp_path, name, data, secret, reader, error):
    path = write(tmp_path / "secret", data)
    os.chown(path, NOBODY, NOBODY)
    message = refused(reader, error, path)
    assert f"must be owned by root (uid 0), not uid {NOBODY}" in message
    assert message.endswith(f"chown root:root {path}; chmod 0600 {path}"), message
    assert secret not in message


@pytest.mark.root
@pytest.mark.parametrize("name,data,secret,reader,error", READERS, ids=IDS)
@pytest.mark.parametrize("mode", [0o640, 0o620, 0o610, 0o604, 0o602, 0o601, 0o660, 0o644, 0o440])
def test_any_access_for_group_or_others_is_refused(tmp_path, name, data, secret, reader, error, mode):
    # Group-read too: the documented rule is root 0600, for all three files (docs/store.md).
    path = write(tmp_path / "secret", data, mode)
    message = refused(reader, error, path)
    assert f"is mode {mode:04o}" in message and f"chmod 0600 {path}" in message, message
    assert secret not in message


@pytest.mark.parametrize("name,data,secret,reader,error", READERS, ids=IDS)
@pytest.mark.parametrize("dangling", [False, True])
def test_a_symbolic_link_is_refused_even_to_a_good_file(tmp_path, name, data, secret, reader, error, dangling):
    target = tmp_path / "real"
    if not dangling:
        write(target, data)
    link = tmp_path / "secret"
    link.symlink_to(target)
    message = refused(reader, error, link)
    assert "is a symbolic link" in message and "put the file itself" in message, message
    assert secret not in message


@pytest.mark.parametrize("name,data,secret,reader,error", READERS, ids=IDS)
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_not_a_regular_file_is_refused_without_blocking(tmp_path, name, data, secret, reader, error, kind):
    path = tmp_path / "secret"
    if kind == "directory":
        path.mkdir(mode=0o700)
    else:
        os.mkfifo(path, 0o600)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(refused(reader, error, path)), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the reader blocked on a FIFO"
    assert result and "is not a regular file" in result[0], result


@pytest.mark.parametrize("name,data,secret,reader,error", READERS, ids=IDS)
def test_a_missing_file_says_what_to_do(tmp_path, name, data, secret, reader, error):
    path = tmp_path / "secret"
    message = refused(reader, error, path)
    assert "is missing: " in message, message
    if name == "fleet key":
        assert "twofa-admin db keygen" in message
    else:
        assert "write the password on its first line" in message and "chmod 0600" in message


@pytest.mark.root
@pytest.mark.parametrize("name,data,secret,reader,error", READERS, ids=IDS)
def test_an_oversized_file_is_refused_not_cut_short(tmp_path, name, data, secret, reader, error):
    # The old SMTP reader read 4,096 bytes and used them: a password file with the
    # password on a line after 4,096 bytes of something else logged in with garbage.
    limit = secretfile.MAX_BYTES if name == "fleet key" else secretfile.MAX_PASSWORD_BYTES
    path = write(tmp_path / "secret", data + b"#" * (limit + 1 - len(data)))
    message = refused(reader, error, path)
    assert f"is {limit + 1} bytes, more than {limit}" in message, message
    assert secret not in message


@pytest.mark.root
@pytest.mark.parametrize("name,data,secret,reader,error", READERS, ids=IDS)
def test_invalid_utf8_is_refused_not_replaced(tmp_path, name, data, secret, reader, error):
    bad = data.replace(b"\n", b"\xff\n", 1)  # the first line ends with a byte that is not UTF-8
    path = write(tmp_path / "secret", bad)
    message = refused(reader, error, path)
    assert "is not UTF-8 text" in message and "save it as UTF-8" in message, message
    assert secret not in message


# --- what a password file holds: its first line ----------------------------------------


PASSWORD_READERS = [(mail.read_password, mail.MailError), (database.read_password, StoreError)]
PASSWORD_IDS = ["smtp", "database"]


@pytest.mark.parametrize("reader,error", PASSWORD_READERS, ids=PASSWORD_IDS)
@pytest.mark.parametrize(
    "data,password",
    [
        (b"pw-1\n", "pw-1"),
        (b"pw-1", "pw-1"),
        (b"pw-1\r\n", "pw-1"),
        (b"pw-1\n\n\n", "pw-1"),
        (b"pw-1\nsecond line\n", "pw-1"),  # the old SMTP reader sent "pw-1\nsecond line"
        (b"pw-1\r\nsecond\r\n", "pw-1"),
        (b" spaced pw \n", " spaced pw "),  # spaces are part of a password
        ("p\u00e4ss\n".encode(), "p\u00e4ss"),
    ],
)
@pytest.mark.root
def test_a_password_is_the_first_line_for_both_files(tmp_path, reader, error, data, password):
    path = write(tmp_path / "pw", data)
    assert reader(str(path)) == password


@pytest.mark.root
@pytest.mark.parametrize("reader,error", PASSWORD_READERS, ids=PASSWORD_IDS)
@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n", b"\nthe password on line two\n"])
def test_an_empty_first_line_is_refused_not_sent_as_an_empty_password(tmp_path, reader, error, data):
    path = write(tmp_path / "pw", data)
    message = refused(reader, error, path)
    assert "has no password on its first line" in message, message
    assert "the password on line two" not in message


@pytest.mark.root
@pytest.mark.parametrize("reader,error", PASSWORD_READERS, ids=PASSWORD_IDS)
def test_a_password_file_of_exactly_the_limit_is_read(tmp_path, reader, error):
    data = b"pw-1\n" + b"#" * (secretfile.MAX_PASSWORD_BYTES - 5)
    assert len(data) == secretfile.MAX_PASSWORD_BYTES
    assert reader(str(write(tmp_path / "pw", data))) == "pw-1"


def test_the_database_reader_passes_no_password_file_through():
    assert database.read_password(None) is None


# --- the module itself ------------------------------------------------------------------


@pytest.mark.root
def test_read_returns_the_whole_text_and_takes_a_limit(tmp_path):
    path = write(tmp_path / "s", "line 1\nline 2\n\u00e9".encode())
    assert secretfile.read(str(path), "the test file") == "line 1\nline 2\n\u00e9"
    with pytest.raises(SecretFileError, match=r"the test file is 16 bytes, more than 15"):
        secretfile.read(str(path), "the test file", limit=15)
    assert secretfile.read(str(path), "the test file", limit=16).endswith("\u00e9")


@pytest.mark.root
def test_a_file_that_grows_past_the_limit_after_the_check_is_refused(tmp_path, monkeypatch):
    # fstat said small enough, then a writer appended: what is read past the limit counts.
    path = write(tmp_path / "s", b"x" * 10)
    real_fstat = os.fstat

    def fstat(fd):
        st = real_fstat(fd)
        with open(path, "ab") as handle:
            handle.write(b"y" * 100)
        return st

    monkeypatch.setattr(secretfile.os, "fstat", fstat)
    with pytest.raises(SecretFileError, match=r"is more than 50 bytes"):
        secretfile.read(str(path), "the test file", limit=50)


def test_an_unreadable_path_names_the_reason(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SecretFileError, match=r"the test file cannot be opened \(Not a directory\)"):
        secretfile.read(str(tmp_path / "file" / "below"), "the test file")


# --- twofa-admin check reads them with the same reader ---------------------------------


@pytest.mark.root
def test_check_refuses_what_the_agent_would_refuse(tmp_path):
    from pam_twofa.cli.backends import storage_problems
    from pam_twofa.policy import Policy

    key = write(tmp_path / "fleet.key", b"pam-twofa-fleet-key 1\nkey short\n")  # safe file, not a key
    pw = write(tmp_path / "db.pw", (PASSWORD + "\n").encode() + b"#" * 5000)
    text = f"storage:\n  backend: postgresql\n  postgresql:\n    dsn: dbname=twofa\n    password_file: {pw}\n    key_file: {key}\n"
    policy = Policy(
        str(tmp_path / "policy.yaml"), backend="postgresql", pg_dsn="dbname=twofa", pg_password_file=str(pw),
        pg_key_file=str(key),
    )  # fmt: skip
    errors, warnings = storage_problems(policy, text)
    assert errors == [
        f"{policy.path}:6: storage.postgresql.key_file: {key}:2: malformed key line (expected: key ID 64-HEX-DIGITS)",
        f"{policy.path}:5: storage.postgresql.password_file: {pw}: the database password file is 5020 bytes, "
        "more than 4096: is it the right file?",
    ]
    assert warnings == []
    key.unlink()
    write(key, KEYRING.dumps().encode())
    pw.unlink()
    write(pw, (PASSWORD + "\n").encode())
    assert storage_problems(policy, text) == ([], [])
