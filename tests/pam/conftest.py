"""Harness of the PAM layer (the second test layer): the real ``pam_python.so`` loading
the INSTALLED module, driven by ``pamtester`` under ``pam_wrapper``.

Nothing on the host is changed:

* PAM service files live in a scratch folder (``pam_wrapper``:
  ``PAM_WRAPPER_SERVICE_DIR``), with absolute module paths;
* users and groups come from scratch files (``nss_wrapper``:
  ``NSS_WRAPPER_PASSWD`` / ``NSS_WRAPPER_GROUP``); passwords from a
  ``pam_matrix`` passdb (``user:password:service`` lines);
* the policy and the state folder are per test (``policy=`` / ``--policy``);
* TOTP codes come from an independent implementation, ``oathtool``.

Syslog capture. The module calls libc ``syslog()``, which sends datagrams to
``/dev/log``; this host has none. Every command under test runs in a private
mount namespace (``unshare --mount``) where ``/dev`` is replaced by a scratch
folder (``mount --bind``) holding:

* ``log``: a unix datagram socket bound by this pytest process (a thread
  reads it all the time, so a sender never blocks on the small datagram
  queue, ``net.unix.max_dgram_qlen``);
* for every other entry of the real ``/dev``, a symlink into ``olddev``,
  where the namespace first re-mounts the real ``/dev`` (``mount --rbind``),
  so ``/dev/null``, ``/dev/urandom``, ``/dev/tty``... keep working.

The mounts exist only in the namespace, which dies with the command: the
host's ``/dev`` never changes. After a command exits, the harness sends a
marker datagram of its own and waits for it, so every line the command sent
(queued before the marker) has been collected: each call returns exactly the
syslog lines it produced.

Every call also asserts, for every test, that no ``Traceback`` reached the
output or syslog, and that no secret, password or code typed so far in the
test appears in syslog (docs/login.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pam_harness import USERS, Scratch
from pgfixtures import pg_server  # noqa: F401  (a real PostgreSQL for the database backend's tests)


@pytest.fixture(scope="session")
def pam_env():
    """Session: prerequisites checked, nss_wrapper users, the /dev replacement and the syslog listener."""
    from syslog_audit import audited_env

    with audited_env("PAM") as env:
        yield env


@pytest.fixture
def scratch(pam_env, tmp_path) -> Scratch:
    """One test's world: policy, state folder, PAM service files, pamtester/enroll/admin helpers."""
    return Scratch(pam_env, tmp_path)


@pytest.fixture
def policy(scratch):
    """The policy writer: ``policy(mode="all", exempt_users=["carol"], ...)`` or ``policy.text("...")``."""

    class Writer:
        path = scratch.policy_path

        def __call__(self, **settings):
            return scratch.write_policy(**settings)

        def text(self, text: str):
            return scratch.write_policy_text(text)

    return Writer()


@pytest.fixture
def users():
    """{name: (uid, primary gid)} of the nss_wrapper passwd file."""
    return USERS


@pytest.fixture
def service_dir(scratch) -> Path:
    """PAM_WRAPPER_SERVICE_DIR: the password stack, the key stack and ``other`` (pam_deny)."""
    return scratch.service_dir


@pytest.fixture
def pamtester(scratch):
    """``pamtester(service, user, answers, rhost=None) -> Result(rc, output, syslog)``."""
    return scratch.pamtester
