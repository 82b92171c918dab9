"""Reading PAM service files as libpam does: which modules each service loads, and from where.

For the commands only (``twofa-admin check``, the self-service enrollment
helper), never on the login path. ``check`` must see every service that
starts pam_python, so this reader copies Debian 12's libpam (Linux-PAM 1.5.2
with Debian's patches) rule for rule, not the pam.d manual page. References
are to ``libpam/pam_handlers.c`` of 1.5.2, upstream line numbers, unless
Debian's patch ``031_pam_include`` says otherwise:

* Service NAME is ``/etc/pam.d/NAME``, else ``/usr/lib/pam.d/NAME``: the
  first that opens hides the other (``_pam_open_config_file``, 278-336). A
  service name is lower case (``pam_start.c`` 67-71 lowers the name asked
  for), so a file with an upper-case letter is reached only by an include.
* Lines (``_pam_assemble_line``, 565-642): a 1024-byte buffer filled by
  ``fgets``, so a physical line longer than 1023 bytes is cut and its rest
  read as a line of its own; a NUL ends what libpam sees of a physical line;
  leading space, tab and newline are skipped, and a line that then starts
  with ``#`` or is empty is skipped (even inside a continuation); the first
  ``#`` ends the logical line; a backslash continues the line only when
  nothing but space, tab and newline follow it (a CR, a no-break space or
  ``\\x1f`` after it leave it a backslash). A file that ends inside a
  continuation, or a logical line over the buffer, stops libpam there.
* Fields (``_pam_StrTok``, pam_misc.c 47-114): separated by space, tab and
  newline only; a field starting with ``[`` runs to the first ``]`` (``\\]``
  is a ``]``), loses its brackets, and the next field starts right after the
  ``]``: brackets work on every field, ``[auth]`` is the type ``auth``.
* Type (107-135): ``auth``, ``account``, ``password``, ``session`` in any
  case, after an optional ``-``; Debian adds ``@include FILE`` (all types, or
  the included type). Any other type makes a line that never loads a module
  (``_pam_add_handler`` 797-816 loads only module lines), but as ``include``
  or ``substack`` it still includes its file, with the type asked for or
  ``auth`` (110-112, 131-133).
* Control (151-194): ``include`` and ``substack`` (any case) include the
  lines of FILE that have the same type; any other word is a control and
  the next field is the module, loaded from ``/lib/x86_64-linux-gnu/security``
  then ``/lib/security`` when the path is relative (Debian's multiarch patch).
* Includes (Debian's 031_pam_include): an absolute FILE is opened as it is, a
  relative one as ``/etc/pam.d/FILE`` only (no ``/usr/lib/pam.d``). A
  substack nests one level deeper, 16 at most (``_pam_load_conf_file`` 353);
  plain includes do not count. A cycle is followed once here (libpam would
  recurse until it runs out of file descriptors).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from pam_twofa.core.primitives import ELOOP
from pam_twofa.system.fileio import owner_mode_problem

SYSTEM_PAM_DIR = "/etc/pam.d"  # libpam's PAM_CONFIG_D
PAM_DIR = SYSTEM_PAM_DIR  # tests point it at a scratch folder (in-process only: no option or variable reads it)
VENDOR_DIR = "/usr/lib/pam.d"  # libpam's PAM_CONFIG_DIST_D: read when /etc/pam.d has no file of the name
MODULE_DIRS = ("/lib/x86_64-linux-gnu/security", "/lib/security")  # a relative module path, in libpam's order
PAM_PYTHON = "pam_python.so"
TYPES = ("auth", "account", "password", "session")
BUF_SIZE = 1024  # libpam's line buffer (pam_handlers.c BUF_SIZE)
MAX_SUBSTACK = 16  # PAM_SUBSTACK_MAX_LEVEL
MAX_CHAIN = 200  # includes in one chain, here only: libpam's own limit is its file descriptors
MAX_FILE_BYTES = 1024 * 1024
_DELIMITERS = b" \n\t"
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


def fields(line: bytes) -> list[bytes]:
    """The fields libpam's ``_pam_StrTok`` finds in one logical line (see the module docstring)."""
    out: list[bytes] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in _DELIMITERS:
            i += 1
        if i >= n:
            break
        if line[i] == 0x5B:  # "["
            end, value = i + 1, bytearray()
            while end < n and line[end] != 0x5D:  # "]"
                if line[end] == 0x5C and end + 1 < n and line[end + 1] == 0x5D:  # "\]"
                    end += 1
                value.append(line[end])
                end += 1
            out.append(bytes(value))
        else:
            end = i
            while end < n and line[end] not in _DELIMITERS:
                end += 1
            out.append(line[i:end])
        i = end + 1  # past the "]" or the delimiter: the next field may start right after a "]"
    return out


def logical_lines(data: bytes) -> tuple[list[tuple[int, bytes]], str | None]:
    """The lines libpam's ``_pam_assemble_line`` returns: ([(first line number, bytes)], why it stopped early).

    The second item is None when libpam reads to the end of the file, else a
    reason: libpam stops reading the file there and the service fails.
    """
    out: list[tuple[int, bytes]] = []
    pos, size, number = 0, len(data), 1
    while True:
        buf, start = b"", 0  # buf: the assembled line so far (libpam's buffer up to p)
        while True:
            room = BUF_SIZE - len(buf)  # never below 1: a continued part ends one byte past its backslash
            if room == 1:  # fgets(p, 1) reads nothing and succeeds: libpam loops for ever
                return out, f"line {start}: a continued line that fills libpam's buffer (libpam hangs on it)"
            if pos >= size:
                if buf:
                    return out, f"line {start}: the file ends inside a continued line"
                return out, None
            newline = data.find(b"\n", pos, pos + room - 1)
            stop = newline + 1 if newline >= 0 else min(size, pos + room - 1)
            chunk_line, chunk = number, data[pos:stop]
            pos = stop
            number += chunk.endswith(b"\n")
            text = chunk.split(b"\0", 1)[0]
            first = len(text) - len(text.lstrip(_DELIMITERS))
            if first == len(text) or text[first] == 0x23:  # blank, or a comment line: skipped, even mid-line
                continue
            start = start or chunk_line
            comment = text.find(b"#", first)
            if comment >= 0:
                out.append((start, buf + text[:comment]))
                break
            last = len(text.rstrip(_DELIMITERS)) - 1
            if text[last] == 0x5C:  # a backslash with nothing but space, tab, newline after it
                buf += text[:last] + b" "
                continue
            out.append((start, buf + text))
            break


def _read(path: str, checked: bool) -> bytes:
    """The bytes of a service file; ``checked``: no symlink, owned by root, not writable by others (nor its folder)."""
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
        if stat.S_ISDIR(st.st_mode):
            return b""  # libpam's fopen opens a folder, and reading it gives nothing
        if not stat.S_ISREG(st.st_mode):
            raise PamdError(f"{path}: not a regular file")
        if checked:
            _check_owned(st, path, "file")
        chunks, total = [], 0
        while total <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > MAX_FILE_BYTES:
        raise PamdError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return b"".join(chunks)


def _check_owned(st: os.stat_result, path: str, what: str) -> None:
    # libpam reads any root-owned file; one a user could write would be their PAM stack
    problem = owner_mode_problem(st, path, f"the PAM {what}", uid=0, forbidden=0o022)
    if problem:
        raise PamdError(problem)


def _folders(pam_dir: str | None, vendor_dir: str | None) -> tuple[str, str | None]:
    """(the pam.d folder, the vendor folder or None): /usr/lib/pam.d is read beside the real /etc/pam.d only.

    A scratch folder (a test's PAM_DIR, ``check --pam-dir``) stands alone unless a vendor folder is given.
    """
    folder = pam_dir or PAM_DIR
    if vendor_dir is None and folder == SYSTEM_PAM_DIR:
        vendor_dir = VENDOR_DIR
    return folder, vendor_dir or None


def service_path(service: str, pam_dir: str | None = None, vendor_dir: str | None = None) -> str:
    """The file libpam reads for ``service``: in the pam.d folder, else in the vendor folder (else the former)."""
    folder, vendor = _folders(pam_dir, vendor_dir)
    path = os.path.join(folder, service)
    if vendor is not None and not os.path.exists(path):  # as fopen: whatever opens hides the vendor file
        candidate = os.path.join(vendor, service)
        if os.path.exists(candidate):
            return candidate
    return path


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def entries(
    service: str,
    pam_dir: str | None = None,
    checked: bool = False,
    problems: list[str] | None = None,
    vendor_dir: str | None = None,
) -> list[Entry]:
    """Every module line ``service`` ends up with, includes followed, in stack order.

    An include that cannot be read (missing, unsafe with ``checked``), a
    cycle, or a place where libpam stops reading a file is noted in
    ``problems`` (when given); the lines before it count, as in libpam. The
    service file itself must be readable (PamdError).
    """
    folder, _vendor = _folders(pam_dir, vendor_dir)
    found: list[Entry] = []
    notes = problems if problems is not None else []

    def walk(path: str, only_type: str | None, level: int, chain: tuple[Include, ...], seen: tuple[str, ...]) -> None:
        try:
            data = _read(path, checked)
        except PamdError as exc:
            if not chain:
                raise
            notes.append(f"{chain[-1].file}:{chain[-1].line}: include skipped: {exc}")
            return
        lines, stopped = logical_lines(data)
        for number, line in lines:
            line_of(path, number, fields(line), only_type, level, chain, seen)
        if stopped:
            notes.append(f"{path}: libpam stops reading it at {stopped}, and the services using it fail")

    def line_of(
        path: str,
        number: int,
        words: list[bytes],
        only_type: str | None,
        level: int,
        chain: tuple[Include, ...],
        seen: tuple[str, ...],
    ) -> None:
        word = words[0] if words else b""
        word = (word[1:] if word.startswith(b"-") else word).lower()
        kind = word.decode("ascii", "replace")
        if word == b"@include":  # Debian: "@include FILE", the type asked for (all types at the top)
            if len(words) >= 2:
                include(path, number, words[1], only_type, level, chain, seen)
            else:
                notes.append(f"{path}:{number}: an include without a file (libpam crashes on it)")
            return
        loads = kind in TYPES
        if not loads:
            kind = only_type or "auth"  # a bad type: never a module, but an include still includes
        if only_type is not None and kind != only_type:
            return
        if len(words) < 2:
            return
        control = words[1].lower()
        if control in (b"include", b"substack"):
            if len(words) >= 3:
                include(path, number, words[2], kind, level + (control == b"substack"), chain, seen)
            else:
                notes.append(f"{path}:{number}: an include without a file (libpam crashes on it)")
            return
        if loads and len(words) >= 3:
            args = tuple(_text(arg) for arg in words[3:])
            found.append(Entry(path, number, kind, _text(words[1]), _text(words[2]), args, chain))

    def include(
        path: str,
        number: int,
        name: bytes,
        only_type: str | None,
        level: int,
        chain: tuple[Include, ...],
        seen: tuple[str, ...],
    ) -> None:
        text = _text(name)
        target = text if text.startswith("/") else os.path.join(folder, text)  # Debian: /etc/pam.d only
        if level >= MAX_SUBSTACK:
            notes.append(f"{path}:{number}: include of {text} skipped: more than {MAX_SUBSTACK - 1} nested substacks")
            return
        if target in seen or len(chain) >= MAX_CHAIN:
            notes.append(f"{path}:{number}: include of {text} skipped: it includes itself (a cycle)")
            return
        walk(target, only_type, level, (*chain, Include(path, number, text)), (*seen, target))

    start = service_path(service, pam_dir, vendor_dir)
    walk(start, None, 0, (), (start,))
    return found


def service_names(pam_dir: str | None = None, vendor_dir: str | None = None) -> list[str]:
    """The services of both folders, sorted: lower-case names whose file (by libpam's precedence) is a file.

    Backups and hidden files are left out (no program asks for them); they
    still count when a service includes them.
    """
    folder, vendor = _folders(pam_dir, vendor_dir)
    names: set[str] = set()
    for where in (folder, vendor):
        if where is None:
            continue
        try:
            listing = os.listdir(where)
        except FileNotFoundError:
            continue
        names.update(listing)
    out = []
    for name in names:
        if name.startswith(".") or name.endswith(_SKIPPED_SUFFIXES) or any("A" <= c <= "Z" for c in name):
            continue
        if os.path.isfile(service_path(name, pam_dir, vendor_dir)):
            out.append(name)
    return sorted(out)


def _known_pam_python() -> set[tuple[int, int]]:
    known = set()
    for folder in MODULE_DIRS:
        try:
            st = os.stat(os.path.join(folder, PAM_PYTHON))
        except OSError:
            continue
        known.add((st.st_dev, st.st_ino))
    return known


def loads_pam_python(entry: Entry, known: set[tuple[int, int]] | None = None) -> bool:
    """Whether the module of ``entry`` is pam_python.so: by its name, or by the file libpam would open.

    The second catches a link to pam_python.so under another name.
    """
    if entry.module_name == PAM_PYTHON:
        return True
    paths = [entry.module] if entry.module.startswith("/") else [os.path.join(d, entry.module) for d in MODULE_DIRS]
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        ids = _known_pam_python() if known is None else known
        return (st.st_dev, st.st_ino) in ids or os.path.basename(os.path.realpath(path)) == PAM_PYTHON
    return False


def pam_python_outside_sshd(
    pam_dir: str | None = None, problems: list[str] | None = None, vendor_dir: str | None = None
) -> list[tuple[str, Entry]]:
    """(service, Entry) for every service other than sshd that ends up loading pam_python.so."""
    out: list[tuple[str, Entry]] = []
    known = _known_pam_python()
    for name in service_names(pam_dir, vendor_dir):
        if name == "sshd":
            continue
        try:
            lines = entries(name, pam_dir, problems=problems, vendor_dir=vendor_dir)
        except PamdError as exc:
            if problems is not None:
                problems.append(str(exc))
            continue
        out.extend((name, entry) for entry in lines if loads_pam_python(entry, known))
    return out


def is_twofa(entry: Entry) -> bool:
    """A pam_python line that loads our module (``.../pam_twofa/pam_module.py``)."""
    return (
        entry.module_name == "pam_python.so" and bool(entry.args) and entry.args[0].endswith("/pam_twofa/pam_module.py")
    )


def twofa_entries(
    service: str = "sshd", pam_dir: str | None = None, checked: bool = False, vendor_dir: str | None = None
) -> list[Entry]:
    """The pam_twofa lines of ``service``'s stack (includes followed)."""
    return [entry for entry in entries(service, pam_dir, checked=checked, vendor_dir=vendor_dir) if is_twofa(entry)]
