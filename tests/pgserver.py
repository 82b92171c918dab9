"""A real PostgreSQL 15 (Debian's packages) for the tests: initdb in a scratch folder, 127.0.0.1, its own port.

Authentication over TCP is scram-sha-256 with a password for every role, and
the server speaks TLS with a certificate made here (openssl): a CA, and a
server certificate for 127.0.0.1 and localhost, so that ``sslmode=verify-full``
is tested for real. The superuser ``postgres`` connects over the Unix socket in
the scratch folder without a password (what an admin does with ``sudo -u
postgres``); the hosts' role ``twofa`` gets only the GRANTs ``db init`` prints.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
HOSTS_ROLE = "twofa"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> str | None:
    """Why no server can be started here, or None."""
    if os.geteuid() != 0:
        return "the database tests run as root (initdb runs as the postgres user)"
    if not (BIN / "initdb").exists():
        return "postgresql-15 is not installed (scripts/test.sh installs it)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user (install postgresql-15)"
    return None


class PgServer:
    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="twofa-pg-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.port = port or free_port()
        self.data = self.root / "data"
        self.password = "pw-" + uuid.uuid4().hex
        self.ca = self.root / "ca.pem"
        self.pg_uid = pwd.getpwnam("postgres").pw_uid
        self.pg_gid = pwd.getpwnam("postgres").pw_gid

    # -- lifecycle ----------------------------------------------------------------

    def _as_postgres(self, *argv, check=True, input_text=None):
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, argv)],
            capture_output=True,
            text=True,
            check=check,
            input=input_text,
            cwd=str(self.root),
        )

    def _certificates(self) -> None:
        tls = self.root / "tls"
        tls.mkdir()

        def openssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=str(tls))

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                "-days", "2", "-subj", "/CN=pam-twofa test CA")  # fmt: skip
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                "-subj", "/CN=127.0.0.1")  # fmt: skip
        (tls / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
        for name in ("server.key", "server.pem"):
            os.chown(tls / name, self.pg_uid, self.pg_gid)
        os.chmod(tls / "server.key", 0o600)
        shutil.copy(tls / "ca.pem", self.ca)
        os.chmod(self.ca, 0o644)

    def init(self) -> PgServer:
        self._certificates()
        pwfile = self.root / "superuser.pw"
        pwfile.write_text(uuid.uuid4().hex + "\n")
        os.chown(pwfile, self.pg_uid, self.pg_gid)
        os.chmod(pwfile, 0o600)
        self.data.mkdir()
        os.chown(self.data, self.pg_uid, self.pg_gid)
        os.chown(self.root, self.pg_uid, self.pg_gid)
        self._as_postgres(
            BIN / "initdb", "-D", self.data, "--auth-local=trust", "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}", "-U", "postgres", "--no-sync",
        )  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                f"ssl = on\nssl_cert_file = '{self.root}/tls/server.pem'\nssl_key_file = '{self.root}/tls/server.key'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
            )
        return self

    def start(self) -> PgServer:
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-l", self.root / "log", "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        out = self._as_postgres(
            BIN / "psql", "-h", self.root, "-p", self.port, "-d", dbname, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql
        )
        return out.stdout

    def setup_role(self) -> None:
        self.psql(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{HOSTS_ROLE}') THEN "
            f"CREATE ROLE {HOSTS_ROLE} LOGIN PASSWORD '{self.password}'; END IF; END $$"
        )

    def create_database(self, name: str | None = None) -> str:
        name = name or "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name}")
        return name

    def admin_dsn(self, dbname: str) -> str:
        """The owner's connection (Unix socket, no password): for db init, dumps and inspection."""
        return f"host={self.root} port={self.port} dbname={dbname} user=postgres"

    def hosts_dsn(self, dbname: str, tls: bool = False) -> str:
        dsn = f"host=127.0.0.1 port={self.port} dbname={dbname} user={HOSTS_ROLE}"
        if tls:
            dsn += f" sslmode=verify-full sslrootcert={self.ca}"
        else:
            dsn += " sslmode=disable"
        return dsn

    def pg_dump(self, dbname: str) -> str:
        return self._as_postgres(BIN / "pg_dump", "-h", self.root, "-p", self.port, dbname).stdout

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._as_postgres(BIN / "pg_isready", "-h", "127.0.0.1", "-p", self.port, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("postgres did not come up")


def write_private(path: Path, text: str) -> Path:
    """A root-owned 0600 file (key and password files)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    return path


class Fleet:
    """One database with the schema, a key, a password file and a policy selecting it."""

    def __init__(self, server: PgServer, root: Path, tls: bool = False) -> None:
        from pam_twofa.fleet import key as fleetkey

        self.server = server
        self.root = root
        self.dbname = server.create_database()
        etc = root / "etc"
        etc.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(etc, 0o755)
        self.state_dir = root / "state"
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self.key_file = etc / "fleet.key"
        fleetkey.write_new(str(self.key_file), fleetkey.Keyring.generate())
        self.password_file = write_private(etc / "db.pw", server.password + "\n")
        # short: a socket path holds at most 107 bytes; the agent wants its folder root-owned 0700
        self.socket = Path(tempfile.mkdtemp(prefix="tfa-", dir="/tmp")) / "agent.sock"
        self.agents: list = []
        self.policy_path = etc / "policy.yaml"
        self.write_policy(tls=tls)
        self.admin(["db", "init", "--dsn", server.admin_dsn(self.dbname)])
        from pam_twofa.fleet.database import GRANTS

        for statement in GRANTS.format(role=HOSTS_ROLE, database=self.dbname).splitlines():
            if statement and not statement.startswith("--"):
                server.psql(statement, self.dbname)

    def policy_text(
        self,
        dsn=None,
        tls=False,
        extra="",
        key_file=None,
        statement_timeout=3,
        socket=None,
        state_dir=None,
        offline=None,
    ) -> str:
        """``offline``: (max_age, refresh) of storage.offline; None: the defaults."""
        dsn = dsn or self.server.hosts_dsn(self.dbname, tls=tls)
        offline_text = f"  offline:\n    max_age: {offline[0]}\n    refresh: {offline[1]}\n" if offline else ""
        return f"""version: 1
{extra}storage:
  state_dir: {state_dir or self.state_dir}
  backend: postgresql
  agent_socket: {socket or self.socket}
{offline_text}  postgresql:
    dsn: "{dsn}"
    password_file: {self.password_file}
    key_file: {key_file or self.key_file}
    connect_timeout: 2
    statement_timeout: {statement_timeout}
"""

    def write_policy(self, path=None, **kwargs) -> Path:
        path = Path(path or self.policy_path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.policy_text(**kwargs))
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
        return path

    def policy(self, path=None):
        from pam_twofa import policy

        return policy.load(str(path or self.policy_path), use_cache=False)

    def store(self, path=None):
        from pam_twofa.cli.backends import store_for

        return store_for(self.policy(path))

    def admin(self, argv, policy=None):
        """twofa-admin ARGV --policy P in this process: (exit code, stdout+stderr)."""
        import contextlib
        import io

        from pam_twofa.cli import run
        from pam_twofa.cli.admin import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = run(main, [*argv, "--policy", str(policy or self.policy_path)], prog="twofa-admin")
        return rc, out.getvalue()

    def dump(self) -> str:
        return self.server.pg_dump(self.dbname)

    def start_agent(self, policy=None, *args, wait=True) -> Agent:
        agent = Agent(Path(policy or self.policy_path), *args)
        self.agents.append(agent)
        agent.start(wait=wait)
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        shutil.rmtree(self.socket.parent, ignore_errors=True)


REPO = Path(__file__).resolve().parents[1]
# What /usr/bin/pam-twofa-agent runs (#!/usr/bin/python3), with this checkout on PYTHONPATH (Agent.start).
AGENT_CODE = "from pam_twofa.fleet.agent import entry; entry()"


def socket_of(policy_path: Path) -> Path:
    for line in policy_path.read_text().splitlines():
        if line.strip().startswith("agent_socket:"):
            return Path(line.split(":", 1)[1].strip())
    raise AssertionError("the policy names no agent_socket")


class Agent:
    """``pam-twofa-agent --policy P`` of this checkout, in Debian's interpreter, as a child process."""

    def __init__(self, policy: Path, *args) -> None:
        self.policy = policy
        self.args = args
        self.socket = socket_of(policy)
        self.proc: subprocess.Popen | None = None
        self.log = policy.parent / f"agent-{uuid.uuid4().hex[:6]}.log"

    def start(self, wait: bool = True) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "PYTHONPATH": str(REPO)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["/usr/bin/python3", "-c", AGENT_CODE, "--policy", str(self.policy), *self.args],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        if wait:
            deadline = time.time() + 20
            while not self.answers():
                if self.proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"the agent did not start:\n{self.output()}")
                time.sleep(0.05)

    def answers(self) -> bool:
        """True once the socket accepts (a stale socket file of a killed agent does not)."""
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
