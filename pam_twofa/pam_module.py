"""The file ``pam_python.so`` loads: ``auth required pam_python.so /PATH/pam_module.py [policy=PATH]``.

pam_python compiles this file from source, without a bytecode cache, in every
interpreter it starts: two per SSH login (sshd's authentication child, and
its monitor for setcred). So it holds only the entry points; the work, and
the refusal to run in a stack pam_python is not safe in, are in
``pam_adapter``, whose bytecode is cached (docs/login.md). Every exception is
caught: an escaping one would become PAM_SERVICE_ERR with the traceback lost.

The package is imported from the folder this file is in (``argv[0]``, the
absolute path in the PAM line), not from wherever ``sys.path`` points: inside
sshd the embedded interpreter can compute ``sys.prefix`` as ``/``, and then
``/usr/local/lib/python3.11/dist-packages`` is not on ``sys.path``.
"""


def pam_sm_authenticate(pamh, flags, argv):
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

            service = "".join(c if c.isprintable() and c not in " /" else "?" for c in str(pamh.service or "-")[:32])
            detail = "".join(c if c.isprintable() else "?" for c in f"{type(exc).__name__}: {exc}"[:200])
            syslog.syslog(
                syslog.LOG_AUTHPRIV | syslog.LOG_ERR,
                f"pam_twofa({service}:auth): cannot load the pam_twofa package ({detail}):"
                " reinstall it, or fix the module path in the PAM line; login refused",
            )
        except Exception:
            pass
        return pamh.PAM_AUTH_ERR
    return authenticate(pamh, argv)


def pam_sm_setcred(pamh, flags, argv):
    return pamh.PAM_IGNORE


def pam_sm_acct_mgmt(pamh, flags, argv):
    return pamh.PAM_IGNORE


def pam_sm_open_session(pamh, flags, argv):
    return pamh.PAM_IGNORE


def pam_sm_close_session(pamh, flags, argv):
    return pamh.PAM_IGNORE


def pam_sm_chauthtok(pamh, flags, argv):
    return pamh.PAM_IGNORE
