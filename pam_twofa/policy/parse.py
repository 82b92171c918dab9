"""Strict validation of the YAML policy (off the login path unless the file changed).

Every problem is reported as ``FILE:LINE: key.path: message`` so that
``twofa-admin check`` and syslog point the admin at the exact line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from pam_twofa.core.network import parse_network
from pam_twofa.policy import SCHEMA, Policy, PolicyError

_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")

_STR, _INT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "bool", "null"))


def _enum(value: object, *choices: object) -> str | None:
    return None if value in choices else "expected one of " + ", ".join(map(str, choices))


def _range(value: int, low: int, high: int) -> str | None:
    return None if low <= value <= high else f"expected a number from {low} to {high}"


def _template(value: str, *allowed: str) -> str | None:
    if not value:
        return "expected a non-empty single-line text"
    for name in _PLACEHOLDER_RE.findall(value):
        if name not in allowed:
            return "unknown placeholder {%s}; allowed: %s" % (name, ", ".join("{%s}" % a for a in allowed))
    if "{" in _PLACEHOLDER_RE.sub("", value) or "}" in _PLACEHOLDER_RE.sub("", value):
        return "unmatched '{' or '}': braces are only allowed around a placeholder"
    return None


def _label(value: str, *allowed: str) -> str | None:
    # ':' separates the issuer from the account in an otpauth:// label
    return "must not contain ':'" if ":" in value else _template(value, *allowed)


def _names(value: Iterable[str], kind: str) -> str | None:
    # Any name the system's databases can return: winbind's CORP\\alice, SSSD's
    # alice@corp.example, "domain admins", josé. Control characters are refused for
    # every string already; surrounding spaces or ":" (the passwd/group separator)
    # can only be typos.
    from pam_twofa.store import MAX_NAME_BYTES

    for item in value:
        if not item or item != item.strip() or ":" in item or len(item.encode("utf-8")) > MAX_NAME_BYTES:
            return f"{item!r} is not a valid {kind} name (no surrounding spaces, no ':')"
    return None


def _networks(value: Iterable[str]) -> str | None:
    for item in value:
        try:
            parse_network(item)
        except ValueError as exc:
            return f"{item!r} is not a valid network: {exc}"
    return None


def _path(value: str) -> str | None:
    if not value.startswith("/"):
        return "expected an absolute path"
    if os.path.normpath(value) != value.rstrip("/") or ".." in value.split("/"):
        return "expected a normalized absolute path (no '..', no '//')"
    return None


def _host(value: str) -> str | None:
    if not value or not all(c.isalnum() or c in ".-:_" for c in value) or not value.isascii():
        return "expected a host name or address"
    return None


def _text(value: str) -> str | None:
    return None  # printable, as every text is (see _unprintable)


def _socket(value: str) -> str | None:
    # sun_path holds 108 bytes with the terminating NUL
    return _path(value) or (None if len(value.encode()) <= 107 else "expected a path of at most 107 bytes")


def _dsn(value: str) -> str | None:
    # libpq parses it (the agent, and twofa-admin check with its own messages); here: not empty
    if not value.strip():
        return "expected a libpq connection string (host=... dbname=... user=...)"
    return None


# The interpreters of the checks declared in policy.SCHEMA: name -> check(value, *arguments).
CHECKS: dict[str, Callable[..., str | None]] = {
    "enum": _enum,
    "range": _range,
    "template": _template,
    "label": _label,
    "names": _names,
    "networks": _networks,
    "path": _path,
    "host": _host,
    "text": _text,
    "socket": _socket,
    "dsn": _dsn,
}
_KIND = {key: kind for _attr, key, kind, _default, _check in SCHEMA}
_ATTR = {key: attr for attr, key, _kind, _default, _check in SCHEMA}
_CHECK = {key: check for _attr, key, _kind, _default, check in SCHEMA}
_ENUMS = {key for key, check in _CHECK.items() if check[0] == "enum" and _KIND[key] in ("str", "int")}
_EXPECT = {
    "str": "expected a text",
    "int": "expected a whole number",
    "bool": "expected true or false",
    "optstr": "expected a text or null",
    "list": "expected a list of {what}",
}
MISSING_VERSION = (
    'version: missing; add "version: 1" as the first line '
    "(an empty or truncated policy is refused so that an accident cannot switch 2FA off)"
)


def _unprintable(value: str) -> str:
    """The message for a text with a newline, tab, NUL or other non-printable character.

    Refused in every text and list item: such a value would break the
    one-line-per-key cache (policy.dumps_cache), and no setting needs one.
    """
    index = next(i for i, c in enumerate(value) if not c.isprintable())
    return (
        f"non-printable character U+{ord(value[index]):04X} at position {index + 1}: "
        "write the value on one line without control characters"
    )


def _tree() -> dict[str, Any]:
    """The nested mapping of allowed keys, from the schema (policy.SCHEMA)."""
    tree: dict[str, Any] = {}
    for key in _KIND:
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = key
    return tree


class _Validator:
    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []
        self.values: dict[str, Any] = {}
        self.lines: dict[str, int] = {}  # attribute -> line of its value, for errors about two keys
        self.seen: set[str] = set()  # every key path present, valid or not

    def error(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.errors.append(f"{self.path}:{line}: {key}: {message}" if key else f"{self.path}:{line}: {message}")

    def mapping(self, node: yaml.Node, schema: dict[str, Any], prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            what = f"a mapping of {', '.join(schema)}"
            self.error(node, prefix, f"expected {what}")
            return
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.error(key_node, prefix, "keys must be plain names")
                continue
            name = key_node.value
            # A key that is blank or has odd characters is quoted, so the message stays readable.
            shown = (
                name if name and name.strip() == name and all(c.isalnum() or c in "_-" for c in name) else repr(name)
            )
            full = f"{prefix}.{shown}" if prefix else shown
            if name in seen:
                self.error(key_node, full, "repeated key")
                continue
            seen.add(name)
            self.seen.add(full)
            if name not in schema:
                self.error(key_node, full, "unknown key; allowed here: " + ", ".join(schema))
                continue
            sub = schema[name]
            if isinstance(sub, dict):
                self.mapping(value_node, sub, full)
            else:
                self.leaf(value_node, sub)

    def leaf(self, node: yaml.Node, key: str) -> None:
        kind = _KIND[key]
        value = self.scalar(node, key, kind)
        if value is _BAD:
            return
        if isinstance(value, str) and not value.isprintable():
            self.error(node, key, _unprintable(value))
            return
        if value is not None:
            name, *arguments = _CHECK[key]
            message = CHECKS[name](value, *arguments)  # each check takes its row's arguments
            if message:
                self.error(node, key, message)
                return
        self.values[_ATTR[key]] = value
        self.lines[_ATTR[key]] = node.start_mark.line + 1

    def scalar(self, node: yaml.Node, key: str, kind: str) -> Any:
        if kind == "list":
            check = _CHECK[key]
            what = "networks (CIDR)" if check[0] == "networks" else f"{check[1]} names"
            expect = _EXPECT["list"].format(what=what)
            if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
                return ()
            if not isinstance(node, yaml.SequenceNode):
                self.error(node, key, expect)
                return _BAD
            items = []
            for index, item in enumerate(node.value):
                if not isinstance(item, yaml.ScalarNode) or item.tag != _STR:
                    self.error(item, f"{key}[{index}]", expect)
                    return _BAD
                if not item.value.isprintable():
                    self.error(item, f"{key}[{index}]", _unprintable(item.value))
                    return _BAD
                items.append(item.value)
            return tuple(items)
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, key, _EXPECT[kind])
            return _BAD
        if key in _ENUMS and node.style is None:
            # YAML 1.1 reads a bare `off` as false: take the text as written.
            # (isascii: "²".isdigit() is true, but int("²") raises ValueError)
            return int(node.value) if key == "version" and node.value.isascii() and node.value.isdigit() else node.value
        if kind in ("str", "optstr") and node.tag == _STR:
            return node.value
        if kind == "optstr" and node.tag == _NULL:
            return None
        if kind == "int" and node.tag == _INT and node.value.isascii():
            try:
                return int(node.value, 0)
            except ValueError:
                pass
        if kind == "bool" and node.tag == _BOOL and node.value.lower() in _BOOL_WORDS:
            return node.value.lower() in ("true", "yes", "on", "y")
        self.error(node, key, _EXPECT[kind])
        return _BAD


_BAD = object()
_BOOL_WORDS = ("true", "yes", "on", "y", "false", "no", "off", "n")  # YAML 1.1; `!!bool maybe` is an error


def parse(text: str, path: str) -> Policy:
    """Validate the policy text; PolicyError listing every problem."""
    validator = _Validator(path)
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        if mark is None and isinstance(getattr(exc, "position", None), int):  # ReaderError: a control character
            line = text.count("\n", 0, exc.position) + 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError([f"{path}:{line}: YAML syntax error: {problem}"]) from None
    except RecursionError:  # "[[[[..." thousands deep: PyYAML's composer recurses
        raise PolicyError([f"{path}:1: YAML syntax error: nested too deeply"]) from None
    if len(nodes) > 1:
        raise PolicyError([f"{path}:{nodes[1].start_mark.line + 1}: only one YAML document is allowed"])
    root = nodes[0] if nodes else None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL):
        # Empty, only comments, or a bare null: never "all defaults" (that is 2FA off).
        raise PolicyError([f"{path}:1: {MISSING_VERSION}"])
    validator.mapping(root, _tree(), "")
    if isinstance(root, yaml.MappingNode) and "version" not in validator.seen:
        validator.errors.insert(0, f"{path}:1: {MISSING_VERSION}")
    values = validator.values
    if values.get("smtp_ssl") and values.get("smtp_starttls"):
        validator.errors.append(
            f"{path}:{validator.lines['smtp_ssl']}: email.smtp: ssl and starttls exclude each other; choose one"
        )
    if values.get("smtp_password_file") and not values.get("smtp_username"):
        validator.errors.append(
            f"{path}:{validator.lines['smtp_password_file']}: email.smtp.password_file: needs email.smtp.username"
        )
    if values.get("backend") == "postgresql" and not values.get("pg_dsn"):
        validator.errors.append(
            f"{path}:{validator.lines['backend']}: storage.postgresql.dsn: required with storage.backend: postgresql"
        )
    max_age, refresh = values.get("offline_max_age", 86400), values.get("offline_refresh", 60)
    if isinstance(max_age, int) and isinstance(refresh, int) and 0 < max_age <= refresh:
        line = validator.lines.get("offline_refresh") or validator.lines.get("offline_max_age")
        validator.errors.append(
            f"{path}:{line}: storage.offline.refresh: {refresh} s is not below max_age ({max_age} s): each sync "
            "confirms the copy, so it would expire before the next; lower refresh (or set max_age: 0 for no copy)"
        )
    if validator.errors:
        raise PolicyError(validator.errors)
    return Policy(path, **values)


def default_text() -> str:
    """The policy an install writes when none exists: everything at its default, 2FA off."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(package, "data", "policy.yaml"), encoding="utf-8") as handle:
        return handle.read()
