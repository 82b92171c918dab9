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
