"""The file ``pam_python.so`` loads: ``auth required pam_python.so /PATH/pam_module.py [policy=PATH]``.

pam_python executes this file in a fresh embedded interpreter for every PAM
handle (every SSH connection), so it imports only what a login uses. Every
exception is caught here: an escaping one would become PAM_SERVICE_ERR with
the traceback lost, and must never reach the user.

The package is imported from the folder this file is in (``argv[0]``, the
absolute path in the PAM line), not from wherever ``sys.path`` points: inside
sshd the embedded interpreter can compute ``sys.prefix`` as ``/`` (sshd's
auth child has no PATH, Python finds ``/bin/python3`` through merged /usr),
and then ``/usr/local/lib/python3.11/dist-packages`` is not on ``sys.path``.
"""


import sys


def _login(argv):
    path = argv[0] if argv else ""
    if path.startswith("/") and path.endswith("/pam_twofa/pam_module.py"):
        site_dir = path[: -len("/pam_twofa/pam_module.py")]
        if sys.path[:1] != [site_dir]:
            sys.path.insert(0, site_dir)
    from pam_twofa import login

    return login


class _Conversation:
    """pam_python's conversation as ``login`` expects it."""

    def __init__(self, pamh) -> None:
        self.pamh = pamh

    def _say(self, style, text: str):
        return self.pamh.conversation(self.pamh.Message(style, text))

    def prompt(self, text: str, info: str | None = None):
        """Ask with echo off; ``info`` goes in the same conversation (sshd shows it with the prompt)."""
        pamh = self.pamh
        try:
            if info:
                responses = pamh.conversation(
                    [pamh.Message(pamh.PAM_TEXT_INFO, info), pamh.Message(pamh.PAM_PROMPT_ECHO_OFF, text)]
                )
                response = responses[-1] if responses else None
            else:
                response = self._say(pamh.PAM_PROMPT_ECHO_OFF, text)
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


def _item(pamh, name: str):
    try:
        value = getattr(pamh, name)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def pam_sm_authenticate(pamh, flags, argv):
    try:
        login = _login(argv)
        try:
            user = pamh.get_user(None)
        except pamh.exception:
            user = None
        options = login.Options(argv[1:])
        flow = login.Login(_Conversation(pamh), user, _item(pamh, "rhost"), _item(pamh, "service"), options)
        result = flow.run()
    except Exception as exc:  # fail closed: see the module docstring
        try:
            from pam_twofa import log

            log.emit(log.ERR, f"pam_twofa(auth): internal error {type(exc).__name__}; login refused")
        except Exception:
            pass
        return pamh.PAM_AUTH_ERR
    if result == login.PASS:
        return pamh.PAM_SUCCESS
    if result == login.IGNORE:
        return pamh.PAM_IGNORE
    return pamh.PAM_AUTH_ERR


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
