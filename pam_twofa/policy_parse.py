"""Strict validation of the YAML policy (off the login path unless the file changed).

Every problem is reported as ``FILE:LINE: key.path: message`` so that
``twofa-admin check`` and syslog point the admin at the exact line.
"""

from __future__ import annotations

import os
import re

import yaml

from pam_twofa.network import parse_network
from pam_twofa.policy import FIELDS, Policy, PolicyError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@-]{0,63}\$?\Z")  # \Z: "$" also matches before a trailing newline
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")

_STR, _INT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "bool", "null"))


def _enum(*choices):
    def check(value):
        return None if value in choices else "expected one of " + ", ".join(map(str, choices))

    return check


def _range(low, high):
    def check(value):
        return None if low <= value <= high else f"expected a number from {low} to {high}"

    return check


def _template(*allowed, forbid=""):
    def check(value):
        if not value or not value.isprintable():
            return "expected a non-empty single-line text"
        for bad in forbid:
            if bad in value:
                return f"must not contain {bad!r}"
        for name in _PLACEHOLDER_RE.findall(value):
            if name not in allowed:
                return "unknown placeholder {%s}; allowed: %s" % (name, ", ".join("{%s}" % a for a in allowed))
        if "{" in _PLACEHOLDER_RE.sub("", value) or "}" in _PLACEHOLDER_RE.sub("", value):
            return "unmatched '{' or '}': braces are only allowed around a placeholder"
        return None

    return check


def _names(kind):
    def check(value):
        for item in value:
            if not NAME_RE.match(item):
                return f"{item!r} is not a valid {kind} name"
        return None

    return check


def _networks(value):
    for item in value:
        try:
            parse_network(item)
        except ValueError as exc:
            return f"{item!r} is not a valid network: {exc}"
    return None


def _abs_path(value):
    if not value.startswith("/") or "\0" in value or not value.isprintable():
        return "expected an absolute path"
    if os.path.normpath(value) != value.rstrip("/") or ".." in value.split("/"):
        return "expected a normalized absolute path (no '..', no '//')"
    return None


def _socket_path(value):
    # sun_path holds 108 bytes with the terminating NUL
    return _abs_path(value) or (None if len(value.encode()) <= 107 else "expected a path of at most 107 bytes")


def _dsn(value):
    # libpq parses it (the agent and twofa-admin check); here: one line, and not empty
    if not value.strip() or not value.isprintable():
        return "expected a libpq connection string on one line (host=... dbname=... user=...)"
    return None


def _hostname(value):
    if not value or not all(c.isalnum() or c in ".-:_" for c in value) or not value.isascii():
        return "expected a host name or address"
    return None


CHECKS = {
    "version": _enum(1),
    "enforce.mode": _enum("off", "groups", "all"),
    "enforce.groups": _names("group"),
    "enforce.unenrolled": _enum("email", "deny"),
    "exempt.users": _names("user"),
    "exempt.groups": _names("group"),
    "exempt.networks": _networks,
    "totp.issuer": _template("hostname", forbid=":"),
    "totp.digits": _range(6, 8),
    "totp.period": _range(10, 300),
    "totp.window": _range(0, 10),
    "totp.algorithm": _enum("SHA1", "SHA256", "SHA512"),
    "rate_limit.max_failures": _range(1, 1000),
    "rate_limit.per_seconds": _range(1, 7 * 86400),
    "email.address": _template("user", "hostname"),
    "email.from": _template("hostname"),
    "email.smtp.host": _hostname,
    "email.smtp.port": _range(1, 65535),
    "email.smtp.timeout": _range(1, 300),
    "email.smtp.password_file": _abs_path,
    "email.code_digits": _range(6, 10),
    "email.code_ttl": _range(30, 86400),
    "email.max_sends": _range(1, 1000),
    "email.per_seconds": _range(1, 7 * 86400),
    "storage.state_dir": _abs_path,
    "storage.backend": _enum("files", "postgresql"),
    "storage.agent_socket": _socket_path,
    "storage.postgresql.dsn": _dsn,
    "storage.postgresql.password_file": _abs_path,
    "storage.postgresql.key_file": _abs_path,
    "storage.postgresql.connect_timeout": _range(1, 60),
    "storage.postgresql.statement_timeout": _range(1, 60),
    "on_error": _enum("deny", "allow"),
}
_ENUMS = {"version", "enforce.mode", "enforce.unenrolled", "totp.algorithm", "on_error", "storage.backend"}
_KIND = {key: kind for _attr, key, kind, _default in FIELDS}
_ATTR = {key: attr for attr, key, _kind, _default in FIELDS}
_EXPECT = {
    "str": "expected a text",
    "int": "expected a whole number",
    "bool": "expected true or false",
    "optstr": "expected a text or null",
    "list": "expected a list of {what}",
}


def _tree():
    """The nested mapping of allowed keys, from the flat field table."""
    tree: dict = {}
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
        self.values: dict = {}
        self.lines: dict = {}  # attribute -> line of its value, for errors about two keys

    def error(self, node, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.errors.append(f"{self.path}:{line}: {key}: {message}" if key else f"{self.path}:{line}: {message}")

    def mapping(self, node, schema: dict, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            what = f"a mapping of {', '.join(schema)}"
            self.error(node, prefix, f"expected {what}")
            return
        seen = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.error(key_node, prefix, "keys must be plain names")
                continue
            name = key_node.value
            full = f"{prefix}.{name}" if prefix else name
            if name in seen:
                self.error(key_node, full, "repeated key")
                continue
            seen.add(name)
            if name not in schema:
                self.error(key_node, full, "unknown key; allowed here: " + ", ".join(schema))
                continue
            sub = schema[name]
            if isinstance(sub, dict):
                self.mapping(value_node, sub, full)
            else:
                self.leaf(value_node, sub)

    def leaf(self, node, key: str) -> None:
        kind = _KIND[key]
        value = self.scalar(node, key, kind)
        if value is _BAD:
            return
        check = CHECKS.get(key)
        if check is not None and value is not None:
            message = check(value)
            if message:
                self.error(node, key, message)
                return
        self.values[_ATTR[key]] = value
        self.lines[_ATTR[key]] = node.start_mark.line + 1

    def scalar(self, node, key: str, kind: str):
        if kind == "list":
            what = "networks (CIDR)" if key.endswith("networks") else key.rsplit(".", 1)[1].rstrip("s") + " names"
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
    if nodes and nodes[0] is not None and not (isinstance(nodes[0], yaml.ScalarNode) and nodes[0].tag == _NULL):
        validator.mapping(nodes[0], _tree(), "")
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
    if validator.errors:
        raise PolicyError(validator.errors)
    return Policy(path, **values)


def default_text() -> str:
    """The policy an install writes when none exists: everything at its default, 2FA off."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "data", "policy.yaml"), encoding="utf-8") as handle:
        return handle.read()
