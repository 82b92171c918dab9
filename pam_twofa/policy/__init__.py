"""The policy: its schema, and loading it fast on the login path.

YAML is parsed only when the policy file changed (docs/policy.md): the
validated policy is kept in a compiled cache beside the file
(``.policy.yaml.cache``, root-only), keyed by the file's identity (device,
inode, size, mtime, ctime). A login reads the cache with ``str`` methods
only; a stale or missing cache means one full parse (``policy.parse``),
which writes a new cache.
"""

import os
import stat

from pam_twofa.core.primitives import ELOOP
from pam_twofa.system.fileio import is_private, owner_mode_problem

DEFAULT_PATH = "/etc/pam-twofa/policy.yaml"
MAX_POLICY_BYTES = 1024 * 1024
CACHE_MAGIC = "pam-twofa-policy-cache 5"

# The one schema: a row per key, (attribute, key path in the YAML, kind, default, check).
# The YAML tree, the defaults, the validation and the cache all derive from it.
#
# Kinds: str, int, bool, optstr (text or null), list (of texts).
# Every text and list item must be printable (no newline, tab or other control
# character), whatever its check. The check is data that policy.parse
# interprets, so that this module (on the login path) needs neither re nor yaml:
#   ("range", LOW, HIGH)            a whole number from LOW to HIGH
#   ("enum", CHOICE, ...)           one of the choices
#   ("names", WHAT)                 user or group names (WHAT: "user" or "group")
#   ("networks",)                   CIDRs or addresses
#   ("template", PLACEHOLDER, ...)  non-empty text; braces only around these placeholders
#   ("label", PLACEHOLDER, ...)     a template without ':' (an otpauth:// label)
#   ("host",)                       a host name or address
#   ("path",)                       a normalized absolute path
#   ("text",)                       any printable text
#   ("socket",)                     a normalized absolute path that fits a Unix socket address
#   ("dsn",)                        a non-empty libpq connection string (parsed by twofa-admin check)
SCHEMA: "tuple[tuple[str, str, str, Any, tuple[Any, ...]], ...]" = (
    ("version", "version", "int", 1, ("enum", 1)),
    ("mode", "enforce.mode", "str", "off", ("enum", "off", "groups", "all")),
    ("enforce_groups", "enforce.groups", "list", (), ("names", "group")),
    ("unenrolled", "enforce.unenrolled", "str", "email", ("enum", "email", "deny", "enroll")),
    ("exempt_users", "exempt.users", "list", (), ("names", "user")),
    ("exempt_groups", "exempt.groups", "list", (), ("names", "group")),
    ("exempt_networks", "exempt.networks", "list", (), ("networks",)),
    ("totp_issuer", "totp.issuer", "str", "{hostname}", ("label", "hostname")),
    ("totp_digits", "totp.digits", "int", 6, ("range", 6, 8)),
    ("totp_period", "totp.period", "int", 30, ("range", 10, 300)),
    ("totp_window", "totp.window", "int", 1, ("range", 0, 10)),
    ("totp_algorithm", "totp.algorithm", "str", "SHA1", ("enum", "SHA1", "SHA256", "SHA512")),
    ("max_failures", "rate_limit.max_failures", "int", 5, ("range", 1, 1000)),
    ("failure_window", "rate_limit.per_seconds", "int", 900, ("range", 1, 7 * 86400)),
    ("trust_seconds", "trust.seconds", "int", 0, ("range", 0, 30 * 86400)),
    # The mail after a login with a code from a client address not among the last notify.remember
    # (docs/policy.md, "Notifications"): off by default.
    ("notify_new_address", "notify.new_address", "bool", False, ("enum", False, True)),
    ("notify_remember", "notify.remember", "int", 10, ("range", 1, 32)),
    ("email_address", "email.address", "str", "{user}@localhost", ("template", "user", "hostname")),
    ("email_from", "email.from", "str", "pam-twofa@{hostname}", ("template", "hostname")),
    ("smtp_host", "email.smtp.host", "str", "localhost", ("host",)),
    ("smtp_port", "email.smtp.port", "int", 25, ("range", 1, 65535)),
    ("smtp_starttls", "email.smtp.starttls", "bool", False, ("enum", False, True)),
    ("smtp_ssl", "email.smtp.ssl", "bool", False, ("enum", False, True)),
    ("smtp_username", "email.smtp.username", "optstr", None, ("text",)),
    ("smtp_password_file", "email.smtp.password_file", "optstr", None, ("path",)),
    ("smtp_timeout", "email.smtp.timeout", "int", 10, ("range", 1, 300)),
    ("smtp_ca_file", "email.smtp.ca_file", "optstr", None, ("path",)),
    ("code_digits", "email.code_digits", "int", 8, ("range", 6, 10)),
    ("code_ttl", "email.code_ttl", "int", 600, ("range", 30, 86400)),
    ("max_sends", "email.max_sends", "int", 3, ("range", 1, 1000)),
    ("send_window", "email.per_seconds", "int", 3600, ("range", 1, 7 * 86400)),
    ("state_dir", "storage.state_dir", "str", "/var/lib/pam-twofa", ("path",)),
    # The database backend (docs/many-hosts.md, docs/store.md): the login path reads backend,
    # agent_socket and the two timeouts; the agent and the commands read the rest.
    ("backend", "storage.backend", "str", "files", ("enum", "files", "postgresql")),
    ("agent_socket", "storage.agent_socket", "str", "/run/pam-twofa/agent.sock", ("socket",)),
    ("pg_dsn", "storage.postgresql.dsn", "optstr", None, ("dsn",)),
    ("pg_password_file", "storage.postgresql.password_file", "optstr", None, ("path",)),
    ("pg_key_file", "storage.postgresql.key_file", "str", "/etc/pam-twofa/fleet.key", ("path",)),
    ("pg_connect_timeout", "storage.postgresql.connect_timeout", "int", 3, ("range", 1, 60)),
    ("pg_statement_timeout", "storage.postgresql.statement_timeout", "int", 3, ("range", 1, 60)),
    # The agent's offline copy (docs/many-hosts.md, "When the database is down"): seconds it may
    # serve logins after the database last confirmed it (0: never), and between its syncs.
    ("offline_max_age", "storage.offline.max_age", "int", 86400, ("range", 0, 30 * 86400)),
    ("offline_refresh", "storage.offline.refresh", "int", 60, ("range", 1, 86400)),
    ("on_error", "on_error", "str", "deny", ("enum", "deny", "allow")),
)
# The same rows without the check: (attribute, key path, kind, default).
FIELDS: "tuple[tuple[str, str, str, Any], ...]" = tuple(row[:4] for row in SCHEMA)


# The Python type of each kind: the class declarations of ``Policy`` follow SCHEMA with these
# (tests/test_types.py checks that they match, name by name and in order).
KIND_TYPES = {
    "str": str,
    "int": int,
    "bool": bool,
    "optstr": str | None,
    "list": tuple[str, ...],
}

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from collections.abc import Iterable
    from os import stat_result
    from typing import Any

    from pam_twofa.core.auth import Limits
    from pam_twofa.core.network import Network


class PolicyError(Exception):
    """The policy cannot be used. ``errors`` holds one ``file:line: key: message`` per problem."""

    def __init__(self, errors: "Iterable[str]") -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class Policy:
    __slots__ = ("path", "_networks") + tuple(f[0] for f in FIELDS)
    # The fields for mypy, one per row of SCHEMA in its order, typed by its kind (KIND_TYPES).
    # Declarations without a value: the slots above hold the values.
    path: str
    _networks: "list[Network] | None"
    version: int
    mode: str
    enforce_groups: tuple[str, ...]
    unenrolled: str
    exempt_users: tuple[str, ...]
    exempt_groups: tuple[str, ...]
    exempt_networks: tuple[str, ...]
    totp_issuer: str
    totp_digits: int
    totp_period: int
    totp_window: int
    totp_algorithm: str
    max_failures: int
    failure_window: int
    trust_seconds: int
    notify_new_address: bool
    notify_remember: int
    email_address: str
    email_from: str
    smtp_host: str
    smtp_port: int
    smtp_starttls: bool
    smtp_ssl: bool
    smtp_username: str | None
    smtp_password_file: str | None
    smtp_timeout: int
    smtp_ca_file: str | None
    code_digits: int
    code_ttl: int
    max_sends: int
    send_window: int
    state_dir: str
    backend: str
    agent_socket: str
    pg_dsn: str | None
    pg_password_file: str | None
    pg_key_file: str
    pg_connect_timeout: int
    pg_statement_timeout: int
    offline_max_age: int
    offline_refresh: int
    on_error: str

    def __init__(self, path: str = DEFAULT_PATH, **values: object) -> None:
        self.path = path
        self._networks = None
        for attr, _key, _kind, default in FIELDS:
            value = values.pop(attr, default)
            setattr(self, attr, tuple(value) if isinstance(value, (list, tuple)) else value)
        if values:
            raise TypeError(f"unknown policy fields: {sorted(values)}")

    def networks(self) -> "list[Network]":
        """The exempt networks, parsed on first use (validated when the policy was loaded)."""
        if self._networks is None:
            from pam_twofa.core.network import parse_network

            self._networks = [parse_network(text) for text in self.exempt_networks]
        return self._networks

    def mail_address(self, user: str, hostname: str, recorded: str = "") -> str:
        """Where ``user``'s mails go: the address ``twofa-admin email`` recorded, else the
        ``email.address`` template ("" when it cannot be filled; callers check the address)."""
        if recorded:
            return recorded
        try:
            return self.email_address.format(user=user, hostname=hostname)
        except (KeyError, IndexError, ValueError):
            return ""

    def limits(self) -> "Limits":
        from pam_twofa.core.auth import Limits

        return Limits(self.max_failures, self.failure_window, self.totp_window)

    def as_dict(self) -> dict:
        return {attr: getattr(self, attr) for attr, _k, _kind, _d in FIELDS}


def cache_path(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, "." + name + ".cache")


def _check_owned(st: "stat_result", path: str, what: str, forbidden_bits: int) -> None:
    problem = owner_mode_problem(st, path, what, os.geteuid(), forbidden_bits)
    if problem:
        raise PolicyError([problem])


def open_checked(path: str) -> "tuple[int, stat_result]":
    """Open the policy without following symlinks, refusing unsafe owners and modes.

    Returns (fd, stat). The folder must not be writable by anyone but root either,
    or someone could swap the file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        _check_owned(os.stat(folder), folder, "the policy folder", 0o022)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PolicyError(
            [
                f"{path}: no such policy file: run the installer (scripts/install.sh writes the default) or pass policy=PATH"
            ]
        ) from None
    except OSError as exc:
        if exc.errno == ELOOP:  # the policy is a symlink
            raise PolicyError([f"{path}: is a symbolic link; point policy= at the real file"]) from None
        raise PolicyError([f"{path}: cannot open: {exc.strerror}"]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PolicyError([f"{path}: not a regular file: point policy= at the policy file itself"])
        _check_owned(st, path, "the policy file", 0o022)
        if st.st_size > MAX_POLICY_BYTES:
            raise PolicyError([f"{path}: larger than {MAX_POLICY_BYTES} bytes"])
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _identity(st: "stat_result") -> str:
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


# In the cache a list is its items, each after a tab: a tab is in no item (every
# text is printable), so any item (a name with a space, say) comes back as it was.
def _encode(kind: str, value: "Any") -> str:
    if kind == "list":
        return "".join("\t" + item for item in value)
    if kind == "bool":
        return "1" if value else "0"
    if kind == "optstr":
        return "-" if value is None else "+" + value
    return str(value)


def _decode(kind: str, text: str) -> "str | int | bool | None | tuple[str, ...]":
    if kind == "list":
        if text and text[0] != "\t":
            raise ValueError("not a cached list")
        return tuple(text.split("\t")[1:])
    if kind == "bool":
        return text == "1"
    if kind == "int":
        return int(text)
    if kind == "optstr":
        return None if text == "-" else text[1:]
    return text


def dumps_cache(policy: Policy, st: "stat_result") -> str:
    lines = [CACHE_MAGIC, "identity " + _identity(st), "path " + os.path.abspath(policy.path)]
    for attr, key, kind, _default in FIELDS:
        lines.append(f"{key} {_encode(kind, getattr(policy, attr))}")
    return "\n".join(lines) + "\nend\n"


def loads_cache(text: str, path: str, st: "stat_result") -> Policy | None:
    """The cached policy if it is complete and made from this very file, else None."""
    lines = text.split("\n")
    if len(lines) != len(FIELDS) + 5 or lines[0] != CACHE_MAGIC or lines[-2] != "end":
        return None
    if lines[1] != "identity " + _identity(st) or lines[2] != "path " + os.path.abspath(path):
        return None
    values: dict[str, object] = {}
    try:
        for (attr, key, kind, _default), line in zip(FIELDS, lines[3:]):
            name, _sep, text_value = line.partition(" ")
            if name != key:
                return None
            values[attr] = _decode(kind, text_value)
    except ValueError:
        return None
    return Policy(path, **values)


def _read_cache(path: str, st: "stat_result") -> Policy | None:
    try:
        fd = os.open(cache_path(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        cst = os.fstat(fd)
        if not stat.S_ISREG(cst.st_mode) or not is_private(cst, os.geteuid()):
            return None
        text = os.read(fd, MAX_POLICY_BYTES).decode("utf-8", "replace")
    finally:
        os.close(fd)
    return loads_cache(text, path, st)


def write_cache(policy: Policy, st: "stat_result") -> None:
    """Replace the cache atomically (best effort: a login works without it)."""
    from pam_twofa.system.fileio import write_atomic

    try:
        write_atomic(cache_path(policy.path), dumps_cache(policy, st).encode(), locked=False)
    except OSError:
        pass


def read_text(fd: int, path: str = "policy") -> str:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8"]) from None


def load(path: str = DEFAULT_PATH, use_cache: bool = True) -> Policy:
    """The validated policy at ``path``; PolicyError with every problem otherwise."""
    fd, st = open_checked(path)
    try:
        if use_cache:
            cached = _read_cache(path, st)
            if cached is not None:
                return cached
        text = read_text(fd, path)
    finally:
        os.close(fd)
    from pam_twofa.policy.parse import parse

    policy = parse(text, path)
    write_cache(policy, st)
    return policy
