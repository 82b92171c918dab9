"""The storage keys of the database backend: defaults, strict validation, the compiled cache."""

import pytest

from pam_twofa import policy
from pam_twofa.policy import PolicyError


def test_defaults_are_the_file_store():
    loaded = policy.Policy()
    assert loaded.backend == "files"
    assert loaded.agent_socket == "/run/pam-twofa/agent.sock"
    assert loaded.pg_dsn is None and loaded.pg_password_file is None
    assert loaded.pg_key_file == "/etc/pam-twofa/fleet.key"
    assert (loaded.pg_connect_timeout, loaded.pg_statement_timeout) == (3, 3)


def test_the_database_settings_load_and_survive_the_cache(make_policy):
    path = make_policy(
        "version: 1\nstorage:\n  state_dir: /var/lib/pam-twofa\n  backend: postgresql\n"
        "  agent_socket: /run/x/a.sock\n  postgresql:\n"
        '    dsn: "host=db1,db2 dbname=twofa user=twofa target_session_attrs=read-write"\n'
        "    password_file: /etc/pam-twofa/db.pw\n    key_file: /etc/k\n"
        "    connect_timeout: 5\n    statement_timeout: 7\n"
    )
    fresh = policy.load(path, use_cache=False)
    cached = policy.load(path)
    for loaded in (fresh, cached):
        assert loaded.backend == "postgresql"
        assert loaded.agent_socket == "/run/x/a.sock"
        assert loaded.pg_dsn == "host=db1,db2 dbname=twofa user=twofa target_session_attrs=read-write"
        assert loaded.pg_password_file == "/etc/pam-twofa/db.pw"
        assert (loaded.pg_key_file, loaded.pg_connect_timeout, loaded.pg_statement_timeout) == ("/etc/k", 5, 7)


@pytest.mark.parametrize(
    "storage, message",
    [
        ("  backend: mysql\n", "storage.backend: expected one of files, postgresql"),
        ("  backend: postgresql\n", "storage.postgresql.dsn: required with storage.backend: postgresql"),
        ("  agent_socket: run/a.sock\n", "storage.agent_socket: expected an absolute path"),
        ("  agent_socket: /" + "a" * 120 + "\n", "storage.agent_socket: expected a path of at most 107 bytes"),
        ("  postgresql:\n    key_file: fleet.key\n", "storage.postgresql.key_file: expected an absolute path"),
        ("  postgresql:\n    password_file: ../pw\n", "storage.postgresql.password_file: expected an absolute path"),
        ("  postgresql:\n    statement_timeout: 0\n", "storage.postgresql.statement_timeout: expected a number"),
        ("  postgresql:\n    connect_timeout: 61\n", "storage.postgresql.connect_timeout: expected a number"),
        ('  postgresql:\n    dsn: " "\n', "storage.postgresql.dsn: expected a libpq connection string"),
        ("  postgresql:\n    sslmode: off\n", "storage.postgresql.sslmode: unknown key"),
    ],
)
def test_bad_storage_settings_name_file_line_and_key(make_policy, storage, message):
    path = make_policy("version: 1\nstorage:\n  state_dir: /var/lib/pam-twofa\n" + storage)
    with pytest.raises(PolicyError) as info:
        policy.load(path, use_cache=False)
    assert any(message in line and line.startswith(path + ":") for line in info.value.errors), info.value.errors
