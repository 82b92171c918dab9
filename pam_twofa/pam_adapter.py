"""pam_python's handle, adapted to ``login`` (imported, so its bytecode is cached).

``pam_module.py`` is the file pam_python executes, compiled from source at
every login; it stays a few lines and calls ``authenticate`` here.
"""

from pam_twofa import login


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


def authenticate(pamh, argv) -> int:
    """The PAM result of one authentication; every exception ends in PAM_AUTH_ERR."""
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
