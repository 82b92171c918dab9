"""The login through the PAM module: ``adapter`` (pam_python's handle) and ``flow`` (read, decide, ask, verify, write, log).

``pam_twofa/pam_module.py`` is the file pam_python loads; it calls
``login.adapter.authenticate``. Nothing here imports ``fleet``, ``cli``,
yaml or qrcode (tests/test_layers.py, tests/test_login_imports.py).
"""
