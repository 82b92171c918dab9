"""Every mutant of mutation_check.py still applies to today's code.

Running the mutants takes minutes (``python tests/hardening/mutation_check.py``),
so the suite does not run them; but a mutant whose code to break has moved
away would report MISSED only when someone runs it. This keeps them honest:
each break must find its code exactly once.
"""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("mutation_check", REPO / "tests" / "hardening" / "mutation_check.py")
assert _spec is not None and _spec.loader is not None
mutation_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation_check)


@pytest.mark.parametrize("name", sorted(mutation_check.MUTANTS))
def test_the_mutant_finds_its_code_once(name):
    _kind, edits, tests = mutation_check.MUTANTS[name]
    for rel, old, new in edits:
        assert old != new
        assert (REPO / rel).read_text(encoding="utf-8").count(old) == 1, f"{name}: {rel} no longer holds {old!r}"
    for test in tests:
        assert (REPO / test.split("::")[0]).exists(), f"{name}: {test} does not exist"
