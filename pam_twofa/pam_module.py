"""The file ``pam_python.so`` loads: ``auth required pam_python.so /PATH/pam_module.py [policy=PATH]``.

pam_python compiles and executes this file in a fresh embedded interpreter
for every PAM handle (every SSH connection), so it stays small: the work is
in ``pam_adapter`` (imported, bytecode cached). Every exception is caught:
an escaping one would become PAM_SERVICE_ERR with the traceback lost.

The package is imported from the folder this file is in (``argv[0]``, the
absolute path in the PAM line), not from wherever ``sys.path`` points: inside
sshd the embedded interpreter can compute ``sys.prefix`` as ``/`` (sshd's
auth child has no PATH, Python finds ``/bin/python3`` through merged /usr),
and then ``/usr/local/lib/python3.11/dist-packages`` is not on ``sys.path``.

pam_python is safe in sshd's stack only: its interpreter takes its Python,
and so its standard library, from the calling process's PATH, so in a setuid
program's stack (su, chsh, anything including common-auth) a user's copied
tree runs as root before this file is read (README, Security). That cannot be
undone here; the module refuses to lend itself to such a stack, fails closed
and tells the admin. Only sys, os and syslog: nothing else is imported first.
"""

import os
import sys
import syslog

# The prefixes of the system's Python: /usr, or / inside sshd (no PATH there,
# /bin/python3 through merged /usr). Both are root's; a copied tree is not.
SYSTEM_PREFIXES = ("/usr", "/")


def _service(pamh):
    name = getattr(pamh, "service", None)
    if not isinstance(name, str) or not name:
        return "-"
    return "".join(c if c.isprintable() and c not in " /" else "?" for c in name[:32])


def _unsafe():
    if os.getuid() != os.geteuid() or os.getgid() != os.getegid():
        return "loaded by a setuid or setgid program"
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix):
        if prefix not in SYSTEM_PREFIXES:
            return f"its Python runs from {prefix!r}, not from the system's {SYSTEM_PREFIXES[0]}"
    return None


def pam_sm_authenticate(pamh, flags, argv):
    try:
        why = _unsafe()
        if why:
            service = _service(pamh)
            syslog.syslog(
                syslog.LOG_AUTHPRIV | syslog.LOG_CRIT,
                f"pam_twofa({service}:auth): refusing to run: {why}. pam_python is only safe in sshd's stack"
                " (the caller's PATH picks the Python that runs as root): remove the pam_python line from"
                f" /etc/pam.d/{service} (or the file it includes) now, see README Security; login refused",
            )
            return pamh.PAM_AUTH_ERR
        path = argv[0] if argv else ""
        if path.startswith("/") and path.endswith("/pam_twofa/pam_module.py"):
            site_dir = path[: -len("/pam_twofa/pam_module.py")]
            if sys.path[:1] != [site_dir]:
                sys.path.insert(0, site_dir)
        from pam_twofa.pam_adapter import authenticate
    except Exception as exc:
        try:
            detail = "".join(c if c.isprintable() else "?" for c in f"{type(exc).__name__}: {exc}"[:200])
            syslog.syslog(
                syslog.LOG_AUTHPRIV | syslog.LOG_ERR,
                f"pam_twofa({_service(pamh)}:auth): cannot load the pam_twofa package ({detail}):"
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
