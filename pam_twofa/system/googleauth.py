"""Importing a google-authenticator-libpam file (``~/.google_authenticator``).

The file lives in a folder the user controls, so root never opens it: a
child process takes the user's ids and opens it without following symlinks,
and hands the bytes back through a pipe.

Format (google-authenticator-libpam): the first line is the base32 secret,
then option lines starting with ``"``, then 8-digit scratch codes.
"""

from __future__ import annotations

import base64
import os
import stat

from pam_twofa.core.primitives import ELOOP

MAX_BYTES = 4096


class GoogleAuthenticatorError(Exception):
    """The file cannot be imported; the message says why and what to do."""


class GoogleAuthenticatorFile:
    __slots__ = ("key", "scratch_codes", "digits", "period")

    def __init__(self, key: bytes, scratch_codes: list[str], digits: int = 6, period: int = 30) -> None:
        self.key = key
        self.scratch_codes = scratch_codes
        self.digits = digits
        self.period = period


def parse(text: str) -> GoogleAuthenticatorFile:
    lines = [line.strip() for line in text.splitlines()]
    if not lines or not lines[0]:
        raise GoogleAuthenticatorError("the file is empty")
    secret = lines[0].replace(" ", "").upper()
    if any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in secret) or len(secret) < 16:
        raise GoogleAuthenticatorError("the first line is not a base32 secret of at least 16 characters")
    try:
        key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    except ValueError:  # binascii.Error: a length no base32 encoder produces (17, 19, 22... characters)
        raise GoogleAuthenticatorError("the first line is not a complete base32 secret (truncated?)") from None
    scratch: list[str] = []
    period = 30
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith('"'):
            words = line[1:].split()
            if words and words[0] == "HOTP_COUNTER":
                raise GoogleAuthenticatorError(
                    "the file is for counter-based codes (HOTP); only time-based (TOTP) can be imported"
                )
            if words[:1] == ["STEP_SIZE"]:
                # as google-authenticator-libpam: 1 to 60 seconds, else the file is refused
                if len(words) != 2 or not (
                    words[1].isascii() and words[1].isdigit() and len(words[1]) <= 3 and 1 <= int(words[1]) <= 60
                ):
                    raise GoogleAuthenticatorError("invalid STEP_SIZE option (expected 1 to 60 seconds)")
                period = int(words[1])
            continue
        if len(line) == 8 and line.isascii() and line.isdigit():
            scratch.append(line)
        else:
            raise GoogleAuthenticatorError(
                "unexpected line after the secret (expected options or 8-digit scratch codes)"
            )
    return GoogleAuthenticatorFile(key, scratch, period=period)


def read_as_user(path: str, uid: int, gid: int, groups: list[int]) -> str:
    """The text of ``path``, opened by a child running as uid/gid, never through a symlink."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to the user, open no-follow, copy at most MAX_BYTES
        status = 1
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.write(write_end, b"E:not a regular file")
            elif st.st_uid != uid:
                os.write(write_end, b"E:not owned by the user")
            else:
                os.write(write_end, b"K:" + os.read(fd, MAX_BYTES + 1))
            status = 0
        except OSError as exc:
            reason = "a symbolic link (refused)" if exc.errno == ELOOP else (exc.strerror or "unreadable")
            try:
                os.write(write_end, b"E:" + reason.encode())
            except OSError:
                pass
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    data = b"".join(chunks)
    if data.startswith(b"E:"):
        raise GoogleAuthenticatorError(f"{path}: {data[2:].decode(errors='replace')}")
    if not data.startswith(b"K:") or len(data) > MAX_BYTES + 2:
        raise GoogleAuthenticatorError(f"{path}: could not be read (or larger than {MAX_BYTES} bytes)")
    return data[2:].decode("utf-8", "replace")
