"""Root-only secret files: the fleet key, the SMTP password, the database password (docs/store.md).

One reader, one rule for all three. The file is opened without following a
link (``O_NOFOLLOW``; ``O_NONBLOCK`` so a FIFO planted there cannot hang us),
and then, on what was opened (``fstat``, so nothing can be swapped between
check and read), it must be a regular file owned by root with no access at
all for group or others (0600 or 0400: group-read is never accepted, the
documented rule is root 0600), no larger than the caller's limit (refused,
never cut short) and UTF-8 text (refused otherwise, never patched up).

Every failure is a ``SecretFileError`` whose message names the file, says
what is wrong and what to do; it never holds a byte of the content.

A password file holds the password on its first line. The line ending
(``\\n`` or ``\\r\\n``) is not part of it, the lines after it are not read
as part of it (an editor's blank line at the end, or a note), and an empty
first line is refused rather than sent as an empty password.
"""

import os
import stat

from pam_twofa.core.primitives import ELOOP
from pam_twofa.system.fileio import owner_mode_problem

MAX_BYTES = 64 * 1024
MAX_PASSWORD_BYTES = 4096


class SecretFileError(Exception):
    """A secret file is missing, unsafe, too large or not text; the message says which and what to do."""


def _fix(path: str) -> str:
    return f"chown root:root {path}; chmod 0600 {path}"


def read(path: str, what: str, limit: int = MAX_BYTES, missing: str = "") -> str:
    """The text of the secret file ``path`` (``what``, e.g. "the fleet key file", names it in messages).

    ``missing`` is what to do when there is no such file (default: create it, root-owned 0600).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SecretFileError(f"{path}: {what} is missing: {missing or f'create it, then {_fix(path)}'}") from None
    except OSError as exc:
        if exc.errno == ELOOP:
            raise SecretFileError(
                f"{path}: {what} is a symbolic link, and a secret is never read through one: "
                f"put the file itself at {path} (or point the policy at it)"
            ) from None
        raise SecretFileError(f"{path}: {what} cannot be opened ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{path}: {what} is not a regular file: put the file itself there")
        problem = owner_mode_problem(st, path, what, uid=0, forbidden=0o077, fix=_fix(path))
        if problem:
            raise SecretFileError(problem)
        if st.st_size > limit:
            raise SecretFileError(f"{path}: {what} is {st.st_size} bytes, more than {limit}: is it the right file?")
        chunks, size = [], 0
        while size <= limit:  # one byte past the limit tells a file that grew since fstat
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise SecretFileError(f"{path}: {what} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if size > limit:
        raise SecretFileError(f"{path}: {what} is more than {limit} bytes: is it the right file?")
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretFileError(f"{path}: {what} is not UTF-8 text (byte {exc.start + 1}): save it as UTF-8") from None


def read_password(path: str, what: str) -> str:
    """The password of the password file ``path``: its first line, without the line ending."""
    text = read(
        path,
        what,
        MAX_PASSWORD_BYTES,
        missing=f"write the password on its first line, then {_fix(path)}",
    )
    password = text.split("\n", 1)[0]
    if password.endswith("\r"):
        password = password[:-1]
    if not password:
        raise SecretFileError(f"{path}: {what} has no password on its first line: write it there")
    return password
