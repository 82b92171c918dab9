"""The file ``pam_python.so`` loads: ``auth required pam_python.so /PATH/pam_module.py [policy=PATH]``.

pam_python executes this file in a fresh embedded interpreter for every PAM
handle (every SSH connection), so it imports only what a login uses. Every
exception is caught here: an escaping one would become PAM_SERVICE_ERR with
the traceback lost, and must never reach the user.
"""

from pam_twofa import login


class _Conversation:
    """pam_python's conversation as ``login`` expects it."""

    def __init__(self, pamh) -> None:
        self.pamh = pamh

    def _say(self, style, text: str):
        return self.pamh.conversation(self.pamh.Message(style, text))

    def prompt(self, text: str):
        try:
            response = self._say(self.pamh.PAM_PROMPT_ECHO_OFF, text)
        except self.pamh.exception:
            return None
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
