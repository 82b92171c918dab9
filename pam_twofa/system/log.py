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


def clean(value, limit: int = 128) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = "".join(c if c.isprintable() and c != " " else "?" for c in text[:limit])
    return text


def line(service, user, rhost, result: str, detail: str = "") -> str:
    text = f"pam_twofa({clean(service, 32)}:auth): user={clean(user)} rhost={clean(rhost)} result={result}"
    if detail:
        text += f" ({''.join(c if c.isprintable() else '?' for c in detail)})"
    return text


def set_ident(name: str) -> None:
    """For the commands only (never on the PAM path, where the ident is sshd's)."""
    syslog.openlog(name, syslog.LOG_PID, syslog.LOG_AUTHPRIV)


def emit(priority: int, message: str) -> None:
    syslog.syslog(syslog.LOG_AUTHPRIV | priority, message)


def event(priority: int, service, user, rhost, result: str, detail: str = "") -> None:
    emit(priority, line(service, user, rhost, result, detail))
