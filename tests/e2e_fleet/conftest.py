"""Fixtures of the fleet end to end tests (fleet_harness.py explains the set-up)."""

from fleet_harness import fleet_hosts  # noqa: F401  (fixture)
