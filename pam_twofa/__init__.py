"""pam-twofa: two-factor authentication (TOTP, RFC 6238) for SSH logins via pam_python.

Nothing is imported here on purpose: the PAM module runs in a fresh embedded
interpreter at every SSH login, and every import is paid at every login.
"""

__version__ = "0.2.0"
