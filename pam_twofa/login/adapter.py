"""pam_python's handle, adapted to ``login`` (imported, so its bytecode is cached).

``pam_module.py`` is the file pam_python executes, compiled from source in
every interpreter it starts; it holds only the entry points and calls
``authenticate`` here, which first refuses a stack pam_python is not safe in.

pam_python is safe in sshd's stack only: its interpreter takes its Python,
and so its standard library, from the calling process's PATH, so in a setuid
program's stack (su, chsh, anything including common-auth) a user's copied
tree runs as root before any of this is read (docs/threat-model.md). That cannot
be undone here; the module refuses to lend itself to such a stack, fails
closed and tells the admin.
"""

import os
import sys
import syslog

from pam_twofa.login import flow as login
from pam_twofa.system import log

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    # pam_python's handle: a C object with no type information (items, constants, conversation).
    PamHandle = Any

# The prefixes of the system's Python: /usr, or / inside sshd (no PATH there,
# /bin/python3 through merged /usr). Both are root's; a copied tree is not.
SYSTEM_PREFIXES = ("/usr", "/")


class _Conversation:
    """pam_python's conversation as ``login`` expects it."""

    def __init__(self, pamh: "PamHandle") -> None:
        self.pamh = pamh

    def _say(self, style: int, text: str) -> "Any":
        return self.pamh.conversation(self.pamh.Message(style, text))

    def prompt(self, text: str, info: str | None = None, echo: bool = False) -> str | None:
        """Ask, with echo off unless ``echo``; ``info`` goes in the same conversation (sshd puts it
        in the prompt's own text, so every client shows it with the prompt)."""
        pamh = self.pamh
        style = pamh.PAM_PROMPT_ECHO_ON if echo else pamh.PAM_PROMPT_ECHO_OFF
        try:
            if info:
                responses = pamh.conversation([pamh.Message(pamh.PAM_TEXT_INFO, info), pamh.Message(style, text)])
                response = responses[-1] if responses else None
            else:
                response = self._say(style, text)
        except pamh.exception:
            return None
        except UnicodeDecodeError:
            # pam_python decodes the answer as UTF-8; bytes that are not are a wrong code.
            return "\ufffd"
        return response.resp if response is not None else None

    def info(self, text: str) -> None:
        try:
            self._say(self.pamh.PAM_TEXT_INFO, text)
        except self.pamh.exception:
            pass

    def error(self, text: str) -> None:
        try:
            self._say(self.pamh.PAM_ERROR_MSG, text)
        except self.pamh.exception:
            pass


def _item(pamh: "PamHandle", name: str) -> str | None:
    try:
        value = getattr(pamh, name)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _service(pamh: "PamHandle") -> str:
    name = getattr(pamh, "service", None)
    if not isinstance(name, str) or not name:
        return "-"
    return log.clean(name, 32).replace("/", "?")  # it is also written into a path: /etc/pam.d/SERVICE


def unsafe() -> str | None:
    """Why this process is one pam_python must not run in (None: sshd, or another non-setuid program
    on the system's Python)."""
    if os.getuid() != os.geteuid() or os.getgid() != os.getegid():
        return "loaded by a setuid or setgid program"
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix):
        if prefix not in SYSTEM_PREFIXES:
            return f"its Python runs from {prefix!r}, not from the system's {SYSTEM_PREFIXES[0]}"
    return None


def authenticate(pamh: "PamHandle", argv: "Sequence[str]") -> int:
    """The PAM result of one authentication; every exception ends in PAM_AUTH_ERR."""
    try:
        why = unsafe()
        if why:
            service = _service(pamh)
            syslog.syslog(
                syslog.LOG_AUTHPRIV | syslog.LOG_CRIT,
                f"pam_twofa({service}:auth): refusing to run: {why}. pam_python is only safe in sshd's stack"
                " (the caller's PATH picks the Python that runs as root): remove the pam_python line from"
                f" /etc/pam.d/{service} (or the file it includes) now, see docs/threat-model.md; login refused",
            )
            return pamh.PAM_AUTH_ERR
    except Exception:
        return pamh.PAM_AUTH_ERR
    return run(pamh, argv)


def run(pamh: "PamHandle", argv: "Sequence[str]") -> int:
    """The login flow for a handle the guard let through."""
    try:
        try:
            user = pamh.get_user(None)
        except pamh.exception:
            user = None
        options = login.Options(argv[1:])
        flow = login.Login(_Conversation(pamh), user, _item(pamh, "rhost"), _item(pamh, "service"), options)
        result = flow.run()
    except Exception as exc:  # fail closed: an escaping exception would be PAM_SERVICE_ERR
        try:
            from pam_twofa.system import log

            log.emit(log.ERR, f"pam_twofa(auth): internal error {type(exc).__name__}; login refused")
        except Exception:
            pass
        return pamh.PAM_AUTH_ERR
    if result == login.PASS:
        return pamh.PAM_SUCCESS
    if result == login.IGNORE:
        return pamh.PAM_IGNORE
    return pamh.PAM_AUTH_ERR
