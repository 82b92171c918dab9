"""pytest fixtures of the database tests (import them in a conftest.py): a server per session, a database per test."""

import pytest
from pgserver import Fleet, PgServer, available


@pytest.fixture(scope="session")
def pg_server():
    why = available()
    if why:
        pytest.fail(why, pytrace=False)
    server = PgServer().init().start()
    try:
        server.setup_role()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def fleet(pg_server, tmp_path):
    made = Fleet(pg_server, tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def shared_fleet(pg_server, tmp_path_factory):
    """One fleet (database, key, policy) and its running agent for a whole test module, for suites
    whose tests empty ``twofa_records`` themselves (tests/db/test_store_contract.py): a database
    and an agent per test would cost about a second each."""
    made = Fleet(pg_server, tmp_path_factory.mktemp("fleet"))
    try:
        made.start_agent()
        yield made
    finally:
        made.close()
