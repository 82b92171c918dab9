"""Reading PAM service files (``/etc/pam.d``): which modules each service ends up loading, and from where.

For the commands only (``twofa-admin check``, the self-service enrollment
helper), never on the login path. Lines are parsed as Linux-PAM does:
``type control module args``, ``#`` comments, a backslash at the end of a
line continues it, ``[...]`` groups a control or an argument that holds
spaces, ``@include FILE`` includes every line of FILE, and the controls
``include`` and ``substack`` include the lines of the named service that
have the same type. Includes are followed recursively, each file at most
once per chain (a cycle is cut, as PAM's own depth limit would).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from pam_twofa.core.primitives import ELOOP
from pam_twofa.system.fileio import owner_mode_problem

PAM_DIR = "/etc/pam.d"  # tests point it at a scratch folder (in-process only: no option or variable reads it)
TYPES = ("auth", "account", "password", "session")
MAX_DEPTH = 16
MAX_FILE_BYTES = 1024 * 1024
_SKIPPED_SUFFIXES = ("~", ".dpkg-old", ".dpkg-dist", ".dpkg-new", ".dpkg-tmp", ".ucf-old", ".ucf-dist", ".ucf-new")


class PamdError(Exception):
    """A service file cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Include:
    """One include step: ``file:line`` includes ``target``."""

    file: str
    line: int
    target: str


@dataclass(frozen=True)
class Entry:
    """A module line as a service sees it: where it is written, and the includes that brought it in."""

    file: str
    line: int
    type: str
    control: str
    module: str
    args: tuple[str, ...]
    chain: tuple[Include, ...] = ()  # Include steps, outermost first

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def module_name(self) -> str:
        return os.path.basename(self.module)

    def path_text(self) -> str:
        """``/etc/pam.d/su includes common-auth[, which includes x]: /etc/pam.d/common-auth:20``."""
        if not self.chain:
            return self.where
        steps = [f"{self.chain[0].file} includes {self.chain[0].target}"]
        steps += [f"which includes {step.target}" for step in self.chain[1:]]
        return ", ".join(steps) + f": {self.where}"


def split_fields(text: str) -> list[str]:
    """The fields of one logical line; ``[...]`` is one field (``\\]`` inside it is a literal ``]``)."""
    fields: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "[":
            j, value = i + 1, []
            while j < n and text[j] != "]":
                if text[j] == "\\" and j + 1 < n and text[j + 1] == "]":
                    j += 1
                value.append(text[j])
                j += 1
            if fields and len(fields) >= 3:
                fields.append("".join(value))  # an argument: the brackets go, as PAM does
            else:
                fields.append("[" + "".join(value) + "]")  # a control: keep it recognisable
            i = j + 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        fields.append(text[i:j])
        i = j
    return fields


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each non-empty logical line: comments removed, continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0] if "#" in raw else raw.rstrip()
        if not pending:
            start = number
        if line.endswith("\\") and "#" not in raw:  # as PAM: a comment ends the logical line
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            out.append((start, pending))
        pending = ""
    if pending.strip():
        out.append((start, pending))
    return out


def _read(path: str, checked: bool) -> str:
    """The text of a service file; ``checked``: no symlink, owned by root, not writable by others (nor its folder)."""
    try:
        if checked:
            folder = os.path.dirname(path)
            _check_owned(os.stat(folder), folder, "folder")
        # Unchecked (the scan for pam_python) follows symlinks as PAM does; checked does not.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if checked else 0))
    except FileNotFoundError:
        raise PamdError(f"{path}: no such file") from None
    except OSError as exc:
        if exc.errno == ELOOP:
            raise PamdError(f"{path}: is a symbolic link") from None
        raise PamdError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PamdError(f"{path}: not a regular file")
        if checked:
            _check_owned(st, path, "file")
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise PamdError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return data.decode("utf-8", "replace")


def _check_owned(st: os.stat_result, path: str, what: str) -> None:
    # libpam reads any root-owned file; one a user could write would be their PAM stack
    problem = owner_mode_problem(st, path, f"the PAM {what}", uid=0, forbidden=0o022)
    if problem:
        raise PamdError(problem)


def _target(pam_dir: str, name: str) -> str:
    return name if name.startswith("/") else os.path.join(pam_dir, name)


def entries(
    service: str, pam_dir: str | None = None, checked: bool = False, problems: list[str] | None = None
) -> list[Entry]:
    """Every module line ``service`` ends up with, includes followed, in stack order.

    An include that cannot be read (missing, unsafe with ``checked``) or a
    cycle is noted in ``problems`` (when given) and skipped; the service file
    itself must be readable (PamdError).
    """
    folder = pam_dir or PAM_DIR
    found: list[Entry] = []
    notes = problems if problems is not None else []

    def walk(path: str, only_type: str | None, chain: tuple[Include, ...], seen: tuple[str, ...]) -> None:
        try:
            text = _read(path, checked)
        except PamdError as exc:
            if not chain:
                raise
            notes.append(f"{chain[-1].file}:{chain[-1].line}: include skipped: {exc}")
            return
        for number, line in logical_lines(text):
            fields = split_fields(line)
            if fields[0] == "@include":
                if len(fields) >= 2:
                    include(path, number, fields[1], only_type, chain, seen)
                continue
            if len(fields) < 3:
                continue
            kind = fields[0].lstrip("-").lower()
            if kind not in TYPES or (only_type is not None and kind != only_type):
                continue
            control = fields[1]
            if control.lower() in ("include", "substack"):
                include(path, number, fields[2], kind, chain, seen)
                continue
            found.append(Entry(path, number, kind, control, fields[2], tuple(fields[3:]), chain))

    def include(
        path: str, number: int, name: str, only_type: str | None, chain: tuple[Include, ...], seen: tuple[str, ...]
    ) -> None:
        step = Include(path, number, name)
        target = _target(folder, name)
        if target in seen or len(chain) >= MAX_DEPTH:
            notes.append(f"{path}:{number}: include of {name} skipped: it includes itself (a cycle)")
            return
        walk(target, only_type, (*chain, step), (*seen, target))

    start = _target(folder, service)
    walk(start, None, (), (start,))
    return found


def service_names(pam_dir: str | None = None) -> list[str]:
    """The service files of the folder (not backups, hidden files or folders), sorted."""
    folder = pam_dir or PAM_DIR
    names = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or entry.name.endswith(_SKIPPED_SUFFIXES):
            continue
        if entry.is_file(follow_symlinks=True):
            names.append(entry.name)
    return sorted(names)


def pam_python_outside_sshd(pam_dir: str | None = None, problems: list[str] | None = None) -> list[tuple[str, Entry]]:
    """(service, Entry) for every service other than sshd that ends up loading pam_python.so."""
    out: list[tuple[str, Entry]] = []
    for name in service_names(pam_dir):
        if name == "sshd":
            continue
        try:
            lines = entries(name, pam_dir, problems=problems)
        except PamdError as exc:
            if problems is not None:
                problems.append(str(exc))
            continue
        out.extend((name, entry) for entry in lines if entry.module_name == "pam_python.so")
    return out


def is_twofa(entry: Entry) -> bool:
    """A pam_python line that loads our module (``.../pam_twofa/pam_module.py``)."""
    return (
        entry.module_name == "pam_python.so" and bool(entry.args) and entry.args[0].endswith("/pam_twofa/pam_module.py")
    )


def twofa_entries(service: str = "sshd", pam_dir: str | None = None, checked: bool = False) -> list[Entry]:
    """The pam_twofa lines of ``service``'s stack (includes followed)."""
    return [entry for entry in entries(service, pam_dir, checked=checked) if is_twofa(entry)]
