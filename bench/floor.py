"""The floor every figure is measured against: a pam_python module that only prompts."""

BARE_MODULE = """
def pam_sm_authenticate(pamh, flags, argv):
    r = pamh.conversation(pamh.Message(pamh.PAM_PROMPT_ECHO_OFF, "Verification code: "))
    return pamh.PAM_SUCCESS if r.resp else pamh.PAM_AUTH_ERR
def pam_sm_setcred(pamh, flags, argv):
    return pamh.PAM_IGNORE
"""
