"""End to end, database backend: three sshd containers and one PostgreSQL container (host networking,
127.0.0.1 ports), each sshd host with its own pam-twofa-agent, set up as the README's "Many hosts" says.

The images are built from this checkout (docker/Dockerfile, as the other end to end tests do); the
PostgreSQL container is the same image with Debian's postgresql-15 added. Ports: sshd 2231-2233,
PostgreSQL 55439; containers are named pam-twofa-fleet-*. Each agent runs with ``--name`` A, B or C
(the containers share the machine's hostname), with offline logins on (``storage.offline``, refresh 2 s).
"""

from __future__ import annotations

import calendar
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from e2e_harness import (
    PASSWORDS,
    SYSLOG_FILE,
    SYSLOG_LISTENER,
    Host,
    ssh_banner,
    totp_at,
    wait_for_fresh_step,
)

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("PAM_TWOFA_BASE_IMAGE", "pam-twofa-base:bookworm")
SSHD_IMAGE = "pam-twofa-fleet-sshd:e2e"
PG_IMAGE = "pam-twofa-fleet-pg:e2e"
PG_PORT = 55439
DEAD_PORT = 55438  # nothing listens here: the first host of a failover dsn
PORTS = {"A": 2231, "B": 2232, "C": 2233}
PG_CONTAINER = "pam-twofa-fleet-pg"
ROLE_PASSWORD = "role-" + uuid.uuid4().hex
SUPER_PASSWORD = "super-" + uuid.uuid4().hex
AGENT_PID = "/run/pam-twofa-agent.pid"
CONFIRMED = re.compile(r"confirmed by the database: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")

POLICY = """\
# written by tests/e2e_fleet for the fleet scenario
version: 1
enforce:
  mode: groups
  groups: [twofa]
  unenrolled: deny
exempt:
  users: [bob]
totp:
  window: 1
rate_limit:
  max_failures: 3
  per_seconds: 900
email:
  max_sends: 2
storage:
  backend: postgresql
  offline:
    max_age: 86400
    refresh: 2
  postgresql:
    dsn: "{dsn}"
    password_file: /etc/pam-twofa/db.pw
    key_file: /etc/pam-twofa/fleet.key
    connect_timeout: 2
    statement_timeout: 2
on_error: deny
"""
# storage.offline: the default max_age (a day: offline logins on), a short refresh so that a copy is
# confirmed by a sync within seconds of a change; OFFLINE_OFF in its place turns offline logins off.
OFFLINE_ON = "  offline:\n    max_age: 86400\n    refresh: 2\n"
OFFLINE_OFF = "  offline:\n    max_age: 0\n    refresh: 2\n"
assert OFFLINE_ON in POLICY
DSN = f"host=127.0.0.1 port={PG_PORT} dbname=twofa user=twofa sslmode=disable target_session_attrs=read-write"

PG_START = f"""
set -e
install -d -o postgres -m 0700 /var/lib/pg-e2e
if [ ! -d /var/lib/pg-e2e/data ]; then
    echo '{SUPER_PASSWORD}' > /var/lib/pg-e2e/pw && chown postgres /var/lib/pg-e2e/pw
    runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D /var/lib/pg-e2e/data -U postgres \\
        --auth-local=trust --auth-host=scram-sha-256 --pwfile=/var/lib/pg-e2e/pw >/dev/null
    printf "listen_addresses = '127.0.0.1'\\nport = {PG_PORT}\\nunix_socket_directories = '/tmp'\\nfsync = off\\n" \\
        >> /var/lib/pg-e2e/data/postgresql.conf
fi
exec runuser -u postgres -- /usr/lib/postgresql/15/bin/postgres -D /var/lib/pg-e2e/data
"""


def docker(*args, check=True, input=None, timeout=900):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, input=input, timeout=timeout)


def build_images() -> None:
    docker("build", "-q", "--network", "host", "-f", str(REPO / "docker" / "Dockerfile"),
           "--build-arg", f"BASE={BASE_IMAGE}", "--build-arg", "STACK=password", "--build-arg", "PORT=2231",
           "-t", SSHD_IMAGE, str(REPO))  # fmt: skip
    dockerfile = (
        f"FROM {SSHD_IMAGE}\nRUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "--no-install-recommends postgresql-15 >/dev/null && rm -rf /var/lib/apt/lists/*\n"
    )
    docker("build", "-q", "--network", "host", "-t", PG_IMAGE, "-", input=dockerfile)


class Database:
    def __init__(self) -> None:
        self.container = PG_CONTAINER

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        return docker("exec", self.container, "psql", "-h", "/tmp", "-p", str(PG_PORT), "-U", "postgres",
                      "-d", dbname, "-v", "ON_ERROR_STOP=1", "-Atc", sql).stdout  # fmt: skip

    def ready(self) -> bool:
        done = docker("exec", self.container, "pg_isready", "-h", "127.0.0.1", "-p", str(PG_PORT), check=False)
        return done.returncode == 0

    def wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            assert time.monotonic() < deadline, docker("logs", self.container, check=False).stderr
            time.sleep(0.2)

    def stop(self) -> None:
        # a fast shutdown, as an outage (PID 1 is runuser, which does not pass signals on)
        docker("exec", self.container, "runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl",
               "-D", "/var/lib/pg-e2e/data", "-m", "fast", "-w", "stop", check=False)  # fmt: skip
        docker("wait", self.container, timeout=60)

    def start(self) -> None:
        docker("start", self.container)
        self.wait()


class FleetHost(Host):
    """A host of the fleet; ``service`` is its name (A, B, C), which its agent gives as ``--name`` (the
    containers share the machine's hostname: host networking)."""

    def start_agent(self) -> None:
        subprocess.run(["docker", "exec", "-d", self.container, "sh", "-c",
                        f"echo $$ > {AGENT_PID}; exec pam-twofa-agent --policy /etc/pam-twofa/policy.yaml "
                        f"--name {self.service} >>/var/log/agent.log 2>&1"], check=True)  # fmt: skip
        deadline = time.monotonic() + 20
        while self.run(["test", "-S", "/run/pam-twofa/agent.sock"], check=False).returncode != 0:
            assert time.monotonic() < deadline, self.run("cat /var/log/agent.log", check=False).stdout
            time.sleep(0.1)
        time.sleep(0.3)

    def kill_agent(self) -> None:
        self.run(f"kill -9 $(cat {AGENT_PID}) && rm -f {AGENT_PID}")
        time.sleep(0.3)

    def agent_log(self, tail: int = 40) -> str:
        return self.run(f"tail -n {tail} /var/log/agent.log", check=False).stdout

    def db_status(self) -> subprocess.CompletedProcess:
        """``twofa-admin db status``: the agent's state (exit 0 online, 1 offline)."""
        return self.run(["twofa-admin", "db", "status"], check=False)

    def wait_status(self, what: str, condition, timeout: float = 60) -> subprocess.CompletedProcess:
        """``db status`` asked until ``condition(done)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.db_status()
            if condition(done):
                return done
            assert time.monotonic() < deadline, (
                f"host {self.service}: {what} within {timeout} s:\n{done.stdout}{done.stderr}\n"
                f"--- agent ---\n{self.agent_log()}"
            )
            time.sleep(0.3)

    def wait_confirmed_after(self, moment: float, timeout: float = 30) -> subprocess.CompletedProcess:
        """Wait until a whole sync that began after ``moment`` (time.time()) confirmed the agent's copy:
        it then holds every row written before ``moment``."""

        def fresh(done) -> bool:
            found = CONFIRMED.search(done.stdout)
            if found is None:  # never confirmed yet
                return False
            return calendar.timegm(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")) >= moment

        return self.wait_status("a copy confirmed by a sync after the last change", fresh, timeout)


def _remove_containers() -> None:
    for name in [PG_CONTAINER, *(f"pam-twofa-fleet-{h}" for h in PORTS)]:
        docker("rm", "-f", name, check=False)


@pytest.fixture(scope="session")
def fleet_hosts():
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("Docker is needed for the end to end layer (scripts/docker-engine.sh)", pytrace=False)
    build_images()
    _remove_containers()
    db = Database()
    docker("run", "-d", "--network", "host", "--name", PG_CONTAINER, PG_IMAGE, "bash", "-c", PG_START)
    db.wait()
    db.psql(f"CREATE ROLE twofa LOGIN PASSWORD '{ROLE_PASSWORD}'")
    db.psql("CREATE DATABASE twofa")
    hosts = {}
    for name, port in PORTS.items():
        container = f"pam-twofa-fleet-{name}"
        docker("run", "-d", "--network", "host", "--name", container, SSHD_IMAGE, "/usr/sbin/sshd", "-D", "-e",
               "-p", str(port))  # fmt: skip
        host = FleetHost(name, "password", port, container)
        deadline = time.monotonic() + 60
        while not ssh_banner(port):
            assert time.monotonic() < deadline, host.logs()
            time.sleep(0.3)
        subprocess.run(["docker", "exec", "-d", container, "python3", "-c", SYSLOG_LISTENER], check=True)
        host.run("getent group twofa >/dev/null || groupadd twofa")
        # dave is in no enforced group: he logs in with his password alone until he enrolls himself
        for user, groups in (("alice", "twofa"), ("bob", "twofa"), ("erin", "twofa"), ("dave", "")):
            joins = f"-G {groups}" if groups else ""
            host.run(f"id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {joins} {user};"
                     f" echo {user}:{PASSWORDS[user]} | chpasswd")  # fmt: skip
        hosts[name] = host
    a = hosts["A"]
    # README "Many hosts": the key made once and copied, the password file, the policy, db init, the agents.
    a.run(["twofa-admin", "db", "keygen", "/etc/pam-twofa/fleet.key"])
    key = a.run(["cat", "/etc/pam-twofa/fleet.key"]).stdout
    for host in hosts.values():
        if host is not a:
            host.write_file("/etc/pam-twofa/fleet.key", key, mode="0600")
        host.write_file("/etc/pam-twofa/db.pw", ROLE_PASSWORD + "\n", mode="0600")
        host.write_policy(POLICY.format(dsn=DSN))
    init = subprocess.run(["docker", "exec", "-e", f"PGPASSWORD={SUPER_PASSWORD}", a.container, "twofa-admin", "db",
                           "init", "--dsn", f"host=127.0.0.1 port={PG_PORT} dbname=twofa user=postgres"],
                          capture_output=True, text=True)  # fmt: skip
    assert init.returncode == 0, init.stderr
    for line in init.stdout.splitlines():
        if line.startswith("GRANT"):
            db.psql(line, "twofa")
    for host in hosts.values():
        check = host.run(["twofa-admin", "check"])
        assert "backend: postgresql" in check.stdout, check
        host.start_agent()
        dbcheck = host.run(["twofa-admin", "db", "check"])
        assert "opens the canary" in dbcheck.stdout, dbcheck
    try:
        yield hosts, db
    finally:
        _remove_containers()


def syslog_since(host: Host, mark: int) -> str:
    return host.run(["cat", SYSLOG_FILE], check=False).stdout[mark:]


def enroll_user(host: Host, user: str, secret: str) -> None:
    """(Re-)enroll with a known secret and the previous step's code (as tests/e2e does), clearing the state."""
    wait_for_fresh_step()
    code = totp_at(secret, -1)
    done = host.run(["twofa-enroll", "--user", user, "--secret", secret, "--code", code, "--force"])
    assert f"now on for {user}" in done.stdout, done.stdout
