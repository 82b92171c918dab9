"""The layers of pam_twofa (docs/README.md, "The code"): which folder may import which.

A static read of every import in the package, including the ones inside
functions (the login path imports lazily, and a lazy import is still an
import when its branch runs). tests/test_login_imports.py checks at run time
what one real login loads; this file checks every branch of the source.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pam_twofa"

# What each layer may import of the package. ``store`` alone means the
# interface (pam_twofa/store/__init__.py: Store, StoreError, the name rules),
# not a backend.
ALLOWED = {
    "core": {"core"},
    "policy": {"core", "policy", "system", "store"},
    "store": {"core", "store", "store.*", "system"},
    "system": {"core", "system", "store"},
    "login": {"core", "policy", "store", "store.*", "system", "login"},
    "fleet": {"core", "policy", "store", "store.*", "system", "fleet"},
    "cli": None,  # the commands may import anything
    "pam_module": {"login"},
}
# Third-party modules each layer may import (the stdlib is free, except in core, which
# also takes no third-party module at all).
THIRD_PARTY = {
    "core": set(),
    "policy": {"yaml"},
    "store": set(),
    "system": {"qrcode", "PIL"},
    "login": set(),
    "fleet": {"psycopg", "cryptography"},
    "cli": {"yaml", "qrcode", "psycopg", "cryptography", "pam"},
    "pam_module": set(),
}
# C modules of newer Pythons that the interpreter's own code falls back between
# (core/primitives.py: _sha2 is 3.12's name for 3.11's _sha256).
NEWER_STDLIB = {"_sha2"}
# Never reached from pam_module.py, through any branch.
LOGIN_NEVER = ("pam_twofa.fleet", "pam_twofa.cli", "psycopg", "cryptography")
# yaml is reached only through the policy parser, which a login runs when the
# compiled policy cache is missing or stale (docs/policy.md, "The policy cache").
YAML_ONLY_VIA = "pam_twofa.policy.parse"
# qrcode is reached only through system.qr, which only an enrollment at login imports
# (enforce.unenrolled: enroll); tests/test_login_imports.py checks a TOTP login never loads it.
QRCODE_ONLY_VIA = "pam_twofa.system.qr"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = ["pam_twofa", *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"  # pam_twofa/__init__.py: the version only
    return parts[1]


def imports_of(path: Path, me: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every import in the file; ``from X import y`` counts as X.y when
    X is a package of pam_twofa (y may be a module of it) and as X otherwise."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    me = me or module_name(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.append((node.lineno, source))
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                if _is_module(candidate):
                    found.append((node.lineno, candidate))
    return found


def _is_module(name: str) -> bool:
    if not name.startswith("pam_twofa."):
        return False
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _target(imported: str) -> str:
    """``core``, ``store`` (the interface), ``store.*`` (a backend), ..."""
    parts = imported.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] == "store" and len(parts) > 2:
        return "store.*"
    return parts[1]


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    """What the file at ``path`` (``root`` standing for the pam_twofa folder) imports against the layers."""
    me = module_name(path, root)
    layer = layer_of(me)
    allowed = ALLOWED.get(layer)
    problems = []
    stdlib = sys.stdlib_module_names | NEWER_STDLIB
    for line, imported in imports_of(path, me):
        top = imported.split(".")[0]
        where = f"{me.replace('.', '/')}.py:{line}"
        if top == "pam_twofa":
            target = _target(imported)
            if allowed is not None and target not in allowed and target != "package":
                problems.append(f"{where}: {layer} imports {imported}")
        elif top not in stdlib and top not in THIRD_PARTY.get(layer, set()) and layer != "cli":
            problems.append(f"{where}: {layer} imports the third-party module {top}")
    return problems


def test_every_module_belongs_to_a_known_layer():
    layers = {layer_of(module_name(p)) for p in sources()}
    assert layers <= set(ALLOWED) | {"package"}, f"modules outside any layer: {sorted(layers - set(ALLOWED))}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    assert violations(path) == []


def test_a_core_module_importing_log_is_caught(tmp_path):
    """The check itself can fail: core reaching into system is reported with file and line."""
    (tmp_path / "core").mkdir()
    probe = tmp_path / "core" / "totp.py"
    probe.write_text("def f():\n    from pam_twofa.system import log\n\n    return log\n", encoding="utf-8")
    assert "pam_twofa/core/totp.py:2: core imports pam_twofa.system.log" in violations(probe, tmp_path)
    probe.write_text("import yaml\n", encoding="utf-8")
    assert violations(probe, tmp_path) == ["pam_twofa/core/totp.py:1: core imports the third-party module yaml"]


def _graph() -> dict[str, set[str]]:
    return {module_name(p): {name for _line, name in imports_of(p)} for p in sources()}


def _reachable(graph: dict[str, set[str]], start: str, skip: str | None = None) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen or module == skip:
            continue
        seen.add(module)
        todo += sorted(graph.get(module, set()))
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # importing a.b.c runs a.b first
    return seen


def test_the_login_path_never_reaches_the_fleet_the_commands_or_qrcode():
    reached = _reachable(_graph(), "pam_twofa.pam_module")
    assert "pam_twofa.login.flow" in reached and "pam_twofa.store.agent" in reached  # the walk really ran
    bad = sorted(m for m in reached if m.startswith(LOGIN_NEVER))
    assert bad == [], f"reachable from pam_module.py: {bad}"


def test_the_login_path_reaches_yaml_only_through_the_policy_parser():
    graph = _graph()
    assert "yaml" in _reachable(graph, "pam_twofa.pam_module")  # a stale policy cache is parsed again
    assert "yaml" not in _reachable(graph, "pam_twofa.pam_module", skip=YAML_ONLY_VIA)


def test_the_login_path_reaches_qrcode_only_through_the_qr_module():
    graph = _graph()
    assert "qrcode" in _reachable(graph, "pam_twofa.pam_module")  # an enrollment at login draws one
    assert "qrcode" not in _reachable(graph, "pam_twofa.pam_module", skip=QRCODE_ONLY_VIA)
