"""Fixtures of the fleet end to end tests (fleet_harness.py explains the set-up)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_harness import fleet_hosts  # noqa: E402, F401  (fixture)
