"""End to end layer (the third test layer): real sshd with pam-twofa in Docker.

pytest-docker starts docker/docker-compose.yml (docker-compose 1.29): two SSH
hosts built by docker/Dockerfile, installed as the README tells an admin, once
on Debian 12 (bookworm) and once on Debian 13 (trixie): the ``distro`` fixture
parametrizes the session, so every test runs on both, one release after the
other on the same ports (``PAM_TWOFA_E2E_DISTROS=trixie`` runs one only):

- ``sshd-password`` on 127.0.0.1:2201: password + code (keyboard-interactive);
- ``sshd-key`` on 127.0.0.1:2202: SSH key + code (publickey, then
  keyboard-interactive).

Host networking only: the containers share the host's loopback, so the tests
(and the SMTP server of ``smtp_server``) are reached at 127.0.0.1.

Users made in the containers for the session:

========  ==================  ===============================================
alice     password host       password ``pw-alice``; enrolled per test with
                              ``enroll`` (known secret ``ALICE_SECRET``)
bob       both hosts          exempt (``exempt.users``), though enrolled and
                              in ``twofa``; password ``pw-bob``, the test key
                              in the key host
dave      key host            the test key; enrolled per test
erin      password host       ``pw-erin``; not enrolled, not enforced
frank     password host       ``pw-frank``; in group ``twofa`` (enforced,
                              ``unenrolled: deny``), not enrolled
========  ==================  ===============================================

TOTP codes are computed here with pyotp, independently of the product's
``totp`` module.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from e2e_harness import (
    BOB_SECRET,
    COMPOSE_FILE,
    DISTROS,
    KEY_PORT,
    LOCK_FILE,
    LOCK_WAIT,
    PASSWORD_PORT,
    PASSWORDS,
    POLICY_BACKUP,
    POLICY_PATH,
    REPO,
    SCRATCH_POLICY,
    SYSLOG_FILE,
    SYSLOG_LISTENER,
    Host,
    activate,
    base_image,
    compose,
    port_open,
    project,
    running_smtp_server,
    ssh_banner,
    totp_at,
    wait_for_fresh_step,
)

# --------------------------------------------------------------------------
# pytest-docker


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return "docker-compose"  # Debian 12 has compose v1 (1.29) only


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


def _distros() -> list[str]:
    chosen = os.environ.get("PAM_TWOFA_E2E_DISTROS", " ".join(DISTROS)).split()
    unknown = [d for d in chosen if d not in DISTROS]
    if unknown or not chosen:
        raise pytest.UsageError(f"PAM_TWOFA_E2E_DISTROS={chosen!r}: choose among {' '.join(DISTROS)}")
    return chosen


@pytest.fixture(scope="session", params=_distros())
def distro(request) -> str:
    """The Debian release of the running containers: every e2e test runs once per release."""
    activate(request.param)
    return request.param


@pytest.fixture(scope="session")
def docker_compose_project_name(distro) -> str:
    # Fixed per release, so that containers left by an interrupted run are recognised and replaced.
    return project(distro)


@pytest.fixture(scope="session")
def e2e_lock(pytestconfig):
    """One e2e session at a time on this machine (fixed ports, fixed project): wait for another to end."""
    with open(LOCK_FILE, "w") as handle:
        deadline = time.monotonic() + LOCK_WAIT
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another e2e run still holds {LOCK_FILE} after {LOCK_WAIT} s")
                if not told:
                    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
                    if reporter is not None:
                        reporter.write_line(f"e2e: waiting for another e2e run to finish ({LOCK_FILE})")
                    told = True
                time.sleep(1)
        yield  # released (closed) after docker_services is torn down


@pytest.fixture(scope="session")
def docker_setup(e2e_lock, distro):
    # The release's base image: scripts/test.sh has made it already (pulled or
    # debootstrapped); run directly, it is made here. Idempotent.
    subprocess.run(["bash", str(REPO / "docker" / "base-image.sh"), base_image(distro)], check=True)
    activate(distro)
    # Holding the lock, containers of this project are left by an interrupted
    # run: remove them. Then the ports must be free (host networking), or the
    # banner check below would talk to someone else's server.
    compose("down", "-v", check=False)
    busy = [port for port in (PASSWORD_PORT, KEY_PORT) if port_open(port)]
    if busy:
        pytest.fail(f"127.0.0.1 port(s) {busy} already in use: the e2e sshd containers need them")
    return ["up --build -d"]


@pytest.fixture(scope="session")
def docker_cleanup():
    return ["down -v"]


@pytest.fixture(scope="session")
def hosts(docker_services) -> dict[str, Host]:
    """The two running SSH hosts, by stack (``password``, ``key``)."""
    found = {}
    for service, stack, port in (("sshd-password", "password", PASSWORD_PORT), ("sshd-key", "key", KEY_PORT)):
        container = compose("ps", "-q", service).stdout.strip()
        assert container, f"no container for {service}"
        host = Host(service, stack, port, container)

        def responsive(host=host):
            if ssh_banner(host.port):
                return True
            if host.state()[0] != "true":  # sshd exited (bad config, port taken): say why now
                pytest.fail(f"{host.service} is not running:\n{host.logs()}")
            return False

        docker_services.wait_until_responsive(check=responsive, timeout=60, pause=0.5)
        assert host.state() == ["true", "host"], f"{service}: {host.state()}"
        found[stack] = host
    for host in found.values():
        host.run(["rm", "-f", SYSLOG_FILE])
        subprocess.run(["docker", "exec", "-d", host.container, "python3", "-c", SYSLOG_LISTENER], check=True)
    deadline = time.monotonic() + 10
    for host in found.values():
        while host.run(["test", "-S", "/dev/log"], check=False).returncode != 0:
            assert time.monotonic() < deadline, f"{host.service}: the syslog listener did not start"
            time.sleep(0.1)
    return found


@pytest.fixture(scope="session")
def password_host(hosts) -> Host:
    return hosts["password"]


@pytest.fixture(scope="session")
def key_host(hosts) -> Host:
    return hosts["key"]


@pytest.fixture(scope="session")
def user_key(tmp_path_factory) -> tuple[paramiko.PKey, Path]:
    """An SSH key made for this run: (paramiko key, private key file for the OpenSSH client)."""
    key = paramiko.RSAKey.generate(2048)
    path = tmp_path_factory.mktemp("ssh") / "id_rsa"
    key.write_private_key_file(str(path))
    path.chmod(0o600)
    return key, path


def _add_user(host: Host, user: str, groups: str = "") -> None:
    host.run(
        f"id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {user};"
        + (f" usermod -a -G {groups} {user};" if groups else "")
        + f" echo {user}:{PASSWORDS[user]} | chpasswd;"
        f" rm -f /var/lib/pam-twofa/users/{user}.rec"
    )


def _authorize(host: Host, user: str, key: paramiko.PKey) -> None:
    line = f"{key.get_name()} {key.get_base64()} e2e\n"
    host.run(
        f"install -d -m 0700 -o {user} -g {user} ~{user}/.ssh && cat > ~{user}/.ssh/authorized_keys"
        f" && chown {user}:{user} ~{user}/.ssh/authorized_keys && chmod 0600 ~{user}/.ssh/authorized_keys",
        input=line,
    )


@pytest.fixture(scope="session")
def scenario(hosts, user_key):
    """Users and the scratch policy in both containers; the original policy is restored after."""
    password_host, key_host = hosts["password"], hosts["key"]
    password_host.run("getent group twofa >/dev/null || groupadd twofa")
    key_host.run("getent group twofa >/dev/null || groupadd twofa")
    for user in ("alice", "erin"):
        _add_user(password_host, user)
    _add_user(password_host, "frank", groups="twofa")
    _add_user(password_host, "bob", groups="twofa")
    _add_user(key_host, "dave")
    _add_user(key_host, "bob", groups="twofa")
    for user in ("bob", "dave"):
        _authorize(key_host, user, user_key[0])
    for host in hosts.values():
        host.run(f"test -e {POLICY_BACKUP} || cp -p {POLICY_PATH} {POLICY_BACKUP}")
        host.write_policy(SCRATCH_POLICY)
        check = host.run(["twofa-admin", "check"])
        assert "OK" in check.stdout
        # bob is enrolled and in the enforced group: only his exemption spares him the code.
        enroll_user(host, "bob", BOB_SECRET)
    yield hosts
    for host in hosts.values():
        host.run(f"mv -f {POLICY_BACKUP} {POLICY_PATH}")


def enroll_user(host: Host, user: str, secret: str) -> None:
    """(Re-)enroll ``user`` with a known secret, clearing all its login state.

    twofa-enroll marks its verification code's step as used, so it gets the
    previous step's code and the login that follows uses the current one.
    """
    wait_for_fresh_step()
    code = totp_at(secret, -1)
    done = host.run(["twofa-enroll", "--user", user, "--secret", secret, "--code", code, "--force"])
    assert f"now on for {user}" in done.stdout, done.stdout


@pytest.fixture
def enroll(scenario):
    """``enroll(host, user, secret)``, for a test that needs a fresh enrollment."""
    return enroll_user


@pytest.fixture(scope="session")
def smtp_server():
    """A real SMTP server (aiosmtpd) in this process on 127.0.0.1; containers reach it there too."""
    with running_smtp_server() as server:
        yield server


# --------------------------------------------------------------------------
# On failure: the containers' sshd output and captured syslog, for the report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def _diagnostics(request):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed or "hosts" not in request.fixturenames:
        return
    hosts = request.getfixturevalue("hosts")
    for host in hosts.values():
        tail = "\n".join(host.syslog().splitlines()[-30:])
        print(f"\n--- {host.service}: docker logs (sshd -e) ---\n{host.logs()}")
        print(f"--- {host.service}: syslog ---\n{tail}")


# --------------------------------------------------------------------------
# Enrollment and more scenarios (test_enroll.py, test_e2e_more.py)


@pytest.fixture
def make_user(scenario):
    """``make_user(host, groups="") -> (name, password)``: a new account, removed after the test.

    Each test gets users nobody else touched: no record, no state, a home of
    their own. The password is ``pw-NAME``.
    """
    made = []

    def make(host: Host, groups: str = "") -> tuple[str, str]:
        name = "e2e" + os.urandom(4).hex()
        password = f"pw-{name}"
        host.run(
            f"useradd -m -s /bin/bash {name}"
            + (f" -G {groups}" if groups else "")
            + f" && echo {name}:{password} | chpasswd"
        )
        made.append((host, name))
        return name, password

    yield make
    for host, name in made:
        host.run(
            f"pkill -KILL -u {name}; userdel -r -f {name} 2>/dev/null;"
            f" rm -rf /tmp/{name}-* /var/lib/pam-twofa/users/{name}.rec /var/lib/pam-twofa/users/{name}.lock",
            check=False,
        )


@pytest.fixture(scope="session")
def google_authenticator_cli(password_host) -> Host:
    """The google-authenticator CLI (Debian's libpam-google-authenticator) in the password host.

    Test-only: installed here with apt, not in the image, so the image stays
    what the README installs. The PAM module it ships is not configured.
    """
    password_host.run(
        "command -v google-authenticator >/dev/null || { apt-get update -qq"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends"
        " libpam-google-authenticator >/dev/null; }",
        timeout=300,
    )
    return password_host
