"""The file ``pam_python.so`` loads: ``auth required pam_python.so /PATH/pam_module.py [policy=PATH]``.

pam_python compiles and executes this file in a fresh embedded interpreter
for every PAM handle (every SSH connection), so it stays small: the work is
in ``pam_adapter`` (imported, bytecode cached). Every exception is caught:
an escaping one would become PAM_SERVICE_ERR with the traceback lost.

The package is imported from the folder this file is in (``argv[0]``, the
absolute path in the PAM line), not from wherever ``sys.path`` points: inside
sshd the embedded interpreter can compute ``sys.prefix`` as ``/`` (sshd's
auth child has no PATH, Python finds ``/bin/python3`` through merged /usr),
and then ``/usr/local/lib/python3.11/dist-packages`` is not on ``sys.path``
(the Debian package installs into ``/usr/lib/python3/dist-packages``, which
this keeps first too).
"""

import sys


def pam_sm_authenticate(pamh, flags, argv):
    try:
        path = argv[0] if argv else ""
        if path.startswith("/") and path.endswith("/pam_twofa/pam_module.py"):
            site_dir = path[: -len("/pam_twofa/pam_module.py")]
            if sys.path[:1] != [site_dir]:
                sys.path.insert(0, site_dir)
        from pam_twofa.pam_adapter import authenticate
    except Exception:
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
