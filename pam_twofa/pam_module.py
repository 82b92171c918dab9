"""The file ``pam_python.so`` loads: ``auth required pam_python.so /PATH/pam_module.py [policy=PATH]``.

pam_python compiles this file from source, without a bytecode cache, in every
interpreter it starts: two per SSH login (sshd's authentication child, and
its monitor for setcred). So it holds only the entry points; the work, and
the refusal to run in a stack pam_python is not safe in, are in
``login.adapter``, whose bytecode is cached (docs/login.md). Every exception is
caught: an escaping one would become PAM_SERVICE_ERR with the traceback lost.

The package is imported from the folder this file is in (``argv[0]``, the
absolute path in the PAM line), not from wherever ``sys.path`` points: inside
sshd the embedded interpreter can compute ``sys.prefix`` as ``/``, and then
``/usr/local/lib/python3.11/dist-packages`` is not on ``sys.path``.
"""

TYPE_CHECKING = False  # True for mypy only: the annotations below are strings, nothing is imported
if TYPE_CHECKING:
    from pam_twofa.login.adapter import PamHandle


def pam_sm_authenticate(pamh: "PamHandle", flags: int, argv: "list[str]") -> int:
    try:
        import sys

        path = argv[0] if argv else ""
        if path.startswith("/") and path.endswith("/pam_twofa/pam_module.py"):
            site_dir = path[: -len("/pam_twofa/pam_module.py")]
            if sys.path[:1] != [site_dir]:
                sys.path.insert(0, site_dir)
        from pam_twofa.login.adapter import authenticate
    except Exception as exc:
        try:
            import syslog

            # The rule of pam_twofa.system.log (clean, clean_text) written again: the package failed to
            # import, so its cleaner cannot be used here. Non-printable characters become "?", a cut
            # text ends with "..."; the service name also loses spaces and "/" (as login/adapter.py's).
            def printable(text: str, limit: int, bad: str = "") -> str:
                text = text[: limit - 3] + "..." if len(text) > limit else text
                return "".join(c if c.isprintable() and c not in bad else "?" for c in text)

            service = printable(str(pamh.service or "-"), 32, " /")
            detail = printable(f"{type(exc).__name__}: {exc}", 200)
            syslog.syslog(
                syslog.LOG_AUTHPRIV | syslog.LOG_ERR,
                f"pam_twofa({service}:auth): cannot load the pam_twofa package ({detail}):"
                " reinstall it, or fix the module path in the PAM line; login refused",
            )
        except Exception:
            pass
        return pamh.PAM_AUTH_ERR
    return authenticate(pamh, argv)


def pam_sm_setcred(pamh: "PamHandle", flags: int, argv: "list[str]") -> int:
    return pamh.PAM_IGNORE


def pam_sm_acct_mgmt(pamh: "PamHandle", flags: int, argv: "list[str]") -> int:
    return pamh.PAM_IGNORE


def pam_sm_open_session(pamh: "PamHandle", flags: int, argv: "list[str]") -> int:
    return pamh.PAM_IGNORE


def pam_sm_close_session(pamh: "PamHandle", flags: int, argv: "list[str]") -> int:
    return pamh.PAM_IGNORE


def pam_sm_chauthtok(pamh: "PamHandle", flags: int, argv: "list[str]") -> int:
    return pamh.PAM_IGNORE
