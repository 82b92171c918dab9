"""Syslog (facility authpriv) for every decision and outcome (docs/login.md).

Lines look like ``pam_twofa(sshd:auth): user=alice rhost=10.0.0.7 result=bad code``.
Callers pass only names, addresses, results and rules, never a code, secret
or password; values are cleaned of control characters so a crafted user
name cannot forge log lines. ``openlog`` is never called on the PAM path:
it would change the ident of the sshd process that loaded us.
"""

import syslog

INFO = syslog.LOG_INFO
NOTICE = syslog.LOG_NOTICE
WARNING = syslog.LOG_WARNING
ERR = syslog.LOG_ERR


# The one cleaner of untrusted text for a log line or a terminal (pam_module.py keeps an
# inline copy of the same rule: it logs when this package could not be imported).
# Every non-printable character (newline, tab, escape, other controls) becomes "?";
# text longer than ``limit`` is cut and ends with "...", still within ``limit``.
def _printable(text: str, limit: int, keep_spaces: bool) -> str:
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return "".join(c if c.isprintable() and (keep_spaces or c != " ") else "?" for c in text)


def clean(value: object, limit: int = 128) -> str:
    """One field of a line (``user=``, ``rhost=``...): ``-`` when empty, no space, at most ``limit`` characters."""
    return _printable("-" if value is None or value == "" else str(value), limit, keep_spaces=False)


def clean_text(value: object, limit: int = 1000) -> str:
    """Free text (a detail, an error message, an argument quoted back): spaces kept, at most ``limit`` characters."""
    return _printable(str(value), limit, keep_spaces=True)


def line(service: str | None, user: str | None, rhost: str | None, result: str, detail: str = "") -> str:
    text = f"pam_twofa({clean(service, 32)}:auth): user={clean(user)} rhost={clean(rhost)} result={result}"
    if detail:
        text += f" ({clean_text(detail)})"
    return text


def set_ident(name: str) -> None:
    """For the commands only (never on the PAM path, where the ident is sshd's)."""
    syslog.openlog(name, syslog.LOG_PID, syslog.LOG_AUTHPRIV)


def emit(priority: int, message: str) -> None:
    syslog.syslog(syslog.LOG_AUTHPRIV | priority, message)


def event(
    priority: int, service: str | None, user: str | None, rhost: str | None, result: str, detail: str = ""
) -> None:
    emit(priority, line(service, user, rhost, result, detail))
