"""What the security review of issue 24 checked and found to hold, kept as tests so that it keeps
holding (docs/threat-model.md, "Security review, 2026-12"):

- every SQL statement of the database backend is a constant, values passed as parameters;
- no nonce repeats over 100,000 sealings under one key;
- about 120,000 distinct user names get distinct file names, each read back as itself.

The agent protocol against malformed, oversized, truncated, slow and non-root clients is in
tests/test_protocol.py and tests/db/test_agent.py; the key file checks in tests/test_secretfile.py
and tests/test_fleetkey.py.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

from pam_twofa.fleet import key as fleetkey
from pam_twofa.store import storable_name
from pam_twofa.store.files import decode_name, encode_name

PACKAGE = Path(__file__).resolve().parents[2] / "pam_twofa"


def _statements(tree: ast.AST):
    """(line, first argument) of every ``.execute(...)`` / ``.executemany(...)`` call."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("execute", "executemany") and node.args:
                yield node.lineno, node.args[0]


def _built_from_values(node: ast.AST, constants: set[str]) -> str | None:
    """Why the statement text may hold a value (None: made of literals and module constants only)."""
    for part in ast.walk(node):
        if isinstance(part, ast.FormattedValue):
            if not (isinstance(part.value, ast.Name) and part.value.id in constants):
                return "an f-string with a value in it"
        if isinstance(part, ast.BinOp) and isinstance(part.op, ast.Mod):
            return "% formatting"
        if isinstance(part, ast.Call) and isinstance(part.func, ast.Attribute) and part.func.attr == "format":
            return "str.format"
    return None


def test_every_sql_statement_is_a_constant_with_parameters():
    checked = 0
    problems = []
    for path in sorted((PACKAGE / "fleet").glob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name) and target.id.isupper()
        }
        for line, statement in _statements(tree):
            checked += 1
            why = _built_from_values(statement, constants)
            if why:
                problems.append(f"{path.name}:{line}: {why}")
    assert checked >= 30  # the backend's statements, the agent's cache: the scan sees them
    assert problems == []


def test_the_scan_would_see_a_value_in_a_statement():
    bad = ast.parse("cur.execute(f'SELECT * FROM t WHERE name = {user}')")
    assert [_built_from_values(arg, set()) for _line, arg in _statements(bad)] == ["an f-string with a value in it"]
    good = ast.parse("cur.execute(f'LISTEN {CHANNEL}')")
    assert [_built_from_values(arg, {"CHANNEL"}) for _line, arg in _statements(good)] == [None]


def test_no_nonce_repeats_over_100000_sealings():
    ring = fleetkey.Keyring.generate()
    nonces = set()
    for i in range(100_000):
        (line,) = fleetkey.seal(ring, "alice", "x", i).split("\n")
        nonces.add(line.split(" ")[1])
    assert len(nonces) == 100_000


def test_120000_names_get_distinct_file_names_read_back_as_themselves():
    rng = random.Random(24)
    names = {chr(c) for c in range(1, 0x10000) if storable_name(chr(c))}  # every one-character name
    alphabet = "%aA_.-/\\@ é0" + "".join(chr(c) for c in range(0x20, 0x7F))
    while len(names) < 120_000:
        names.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))))
    names = {n for n in names if storable_name(n)}
    stems: dict[str, str] = {}
    for name in names:
        stem = encode_name(name)
        assert stems.setdefault(stem, name) == name, f"{name!r} and {stems[stem]!r} share {stem!r}"
        assert decode_name(stem) in (name, None) and encode_name(decode_name(stem) or name) == stem
    assert len(stems) >= 115_000
