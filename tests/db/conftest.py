"""The database tests: a real PostgreSQL 15 per session (tests/pgserver.py), a fresh database per test."""

from pgfixtures import fleet, pg_server  # noqa: F401  (fixtures)
