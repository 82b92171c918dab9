"""(11) Capacity: logins per second that one PostgreSQL 15 sustains, against ``pgbench -N`` on the same server.

One real PostgreSQL 15 (tests/pgserver.py) with production durability (``fsync``,
``synchronous_commit`` and ``full_page_writes`` on, where the test server turns them off),
``AGENTS`` real ``pam-twofa-agent`` processes (hosts' agents, ``--pool`` large enough), and N
simulated hosts (``HOSTS``): N threads spread over ``DRIVERS`` driver processes of Debian's
interpreter, each logging its own enrolled user in back to back through
``store.agent.AgentStore`` as the module does (``load``, then the section ``lock``, ``save``,
``end``) for WARM + DURATION seconds, the last DURATION measured. A login's latency is that
whole exchange; N hosts with a login each at all times is a closed loop, so p50 is about N
over the rate.

On this 2-core machine the agents and drivers share the CPU with the server, and the agents
cost more CPU per login than PostgreSQL does (they run psycopg's pure-Python build), so the
agents' figure measures the machine, not the server. PostgreSQL's capacity is measured apart:
the agents' statements of one login (the load; BEGIN, the advisory lock and the row FOR UPDATE
in one query; the write; COMMIT), rows of the real length, run by pgbench's C client with N
clients, each its own user. Its ratio to ``pgbench -N`` with as many clients is the goal
(>= 0.5) that decides the figure's verdict; the agents' ratio is shown with its own.

Where the limit is: the CPU each party used in each measure (/proc/PID/stat: postgres, i.e.
the postmaster and its children, the agents, the drivers, pgbench; and the machine's idle
time), the same logins without the agents at the middle N (each simulated host runs the
agents' statements itself through ``fleet.database.Database`` in Python: what the agent's
own machinery costs), and both the agents and the SQL again with ``synchronous_commit=off``
(what the WAL's fsync at each commit costs).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HOSTS = (50, 100, 200)  # simulated hosts, each a login at a time
AGENTS = 2  # real pam-twofa-agent processes the hosts are spread over
DRIVERS = 2  # driver processes (one interpreter's GIL would cap the clients at one core)
WARM = 1.0  # seconds of logins before the measured window (pools filled, connections made)
DURATION = 6.0  # seconds measured per figure
GOAL = 0.5  # logins/s over pgbench -N tps
PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


# -- the driver: a child process of /usr/bin/python3 (what pam_python and the agent run) -----------


def _agent_login(socket_path: str, user: str) -> Callable[[], None]:
    """One login as the module does it through the agent: a read, then a locked section that writes."""
    from pam_twofa.store.agent import AgentStore

    store = AgentStore(socket_path, 10.0)

    def login() -> None:
        store.load(user)
        with store.locked(user) as section:
            record = section.record
            assert record is not None  # enrolled
            record.last_step += 1  # what a successful login changes
            record.last_success_at = int(time.time())
            section.save(record)

    return login


def _sql_login(job: dict, user: str) -> Callable[[], None]:
    """The same login as the agent runs it, statement for statement, on one autocommit connection."""
    from pam_twofa.fleet import key as fleetkey
    from pam_twofa.fleet.database import Database

    password = Path(job["password_file"]).read_text().strip()
    db = Database(job["dsn"], fleetkey.load(job["key_file"]), password, 10, 10)
    cur = db.connect(autocommit=True).cursor()

    def login() -> None:
        db.open(db.fetch(cur, user))
        row = db.open_section(cur, user, begin=True)
        record = db.open(row)
        assert record is not None
        record.last_step += 1
        record.last_success_at = int(time.time())
        db.write(cur, record, (row.version or 0) + 1)
        db.end_section(cur, True)

    return login


def drive() -> int:
    """Read the job (one JSON line), say ``ready``, wait for ``go T0``, log in, print the results (JSON)."""
    job = json.loads(sys.stdin.readline())
    begin_at = stop_at = 0.0
    go = threading.Event()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    prepared = threading.Barrier(len(job["users"]) + 1)

    def host(k: int, user: str) -> None:
        mine: list[float] = []
        failed: list[str] = []
        login = None
        try:
            login = _agent_login(job["sockets"][k], user) if job["mode"] == "agent" else _sql_login(job, user)
        except Exception as exc:
            failed.append(f"{type(exc).__name__}: {exc}")
        prepared.wait()
        go.wait()
        while login is not None:
            start = time.monotonic()
            if start >= stop_at:
                break
            try:
                login()
            except Exception as exc:  # counted and shown: the figure fails on any error
                failed.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.01)
                continue
            end = time.monotonic()
            if begin_at <= start and end <= stop_at:
                mine.append(end - start)
        with lock:
            latencies.extend(mine)
            errors.extend(failed)

    threads = [threading.Thread(target=host, args=(k, u), daemon=True) for k, u in enumerate(job["users"])]
    for thread in threads:
        thread.start()
    prepared.wait()
    print("ready", flush=True)
    t0 = float(sys.stdin.readline().split()[1])
    begin_at, stop_at = t0 + job["warm"], t0 + job["warm"] + job["duration"]
    go.set()
    for thread in threads:
        thread.join()
    print(json.dumps({"latencies": latencies, "errors": len(errors), "first_error": errors[:1]}), flush=True)
    return 0


# -- CPU accounting ------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, utime + stime in ticks) of a process, threads included; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _machine() -> tuple[int, int]:
    """(busy, idle) ticks of all cores (/proc/stat; iowait counts as idle)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, idle


class CpuWatch:
    """CPU seconds of groups of processes between ``start`` and ``stop``; the postgres group is the
    postmaster and every child of it (its backends come and go with the connections)."""

    def __init__(self, postmaster: int, groups: dict[str, list[int]]) -> None:
        self.postmaster = postmaster
        self.groups = groups

    def _snapshot(self) -> dict[str, dict[int, int]]:
        shot: dict[str, dict[int, int]] = {name: {} for name in ("postgres", *self.groups)}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                found = _stat(int(entry))
                if found and (int(entry) == self.postmaster or found[0] == self.postmaster):
                    shot["postgres"][int(entry)] = found[1]
        for name, pids in self.groups.items():
            for pid in pids:
                found = _stat(pid)
                if found:
                    shot[name][pid] = found[1]
        return shot

    def start(self) -> None:
        self.first, self.first_machine, self.t = self._snapshot(), _machine(), time.monotonic()

    def stop(self) -> dict[str, float]:
        """Each group's share of the whole machine (1.0 = every core busy), and ``idle``."""
        last, machine, seconds = self._snapshot(), _machine(), time.monotonic() - self.t
        cores = os.cpu_count() or 1
        shares = {}
        for name, ticks in last.items():
            used = sum(t - self.first[name].get(pid, 0) for pid, t in ticks.items())
            shares[name] = used / TICK / seconds / cores
        busy, idle = machine[0] - self.first_machine[0], machine[1] - self.first_machine[1]
        shares["idle"] = idle / max(1, busy + idle)
        return shares


# -- the bench ----------------------------------------------------------------------------------------


class Result:
    def __init__(self, rate: float, p50: float, p99: float, errors: int, cpu: dict[str, float], note: str = "") -> None:
        self.rate, self.p50, self.p99, self.errors, self.cpu, self.note = rate, p50, p99, errors, cpu, note


def _result(latencies: list[float], seconds: float, errors: int, cpu: dict[str, float], note: str = "") -> Result:
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Result(len(latencies) / seconds, statistics.median(latencies), p99, errors, cpu, note)


class Capacity:
    def __init__(self, users: int) -> None:
        from db_bench import package_dir
        from pgserver import PgServer

        self.package = package_dir()
        self.agents: list = []
        self.sockets: list[str] = []
        self.server = PgServer()
        try:
            self._setup(users)
        except BaseException:
            self.cleanup()
            raise

    def _setup(self, users: int) -> None:
        import pgserver
        from pgserver import Agent, write_private

        from pam_twofa.core import recovery
        from pam_twofa.core.record import Record
        from pam_twofa.fleet import key as fleetkey
        from pam_twofa.fleet.database import GRANTS, Database, PgStore

        pgserver.REPO = Path(self.package).parent  # agents and drivers run the same package
        self.server.init()
        # Production durability, and room for 200 hosts' connections plus pgbench's.
        with open(self.server.data / "postgresql.conf", "a") as conf:
            conf.write("fsync = on\nsynchronous_commit = on\nfull_page_writes = on\nmax_connections = 450\n")
        self.server.start()
        self.server.setup_role()
        self.dbname = self.server.create_database("twofa")
        self.server.psql(f"CREATE DATABASE pgbench OWNER {pgserver.HOSTS_ROLE}")
        self.dir = self.server.root / "capacity"
        self.dir.mkdir(mode=0o700)
        self.key_file = str(self.dir / "fleet.key")
        fleetkey.write_new(self.key_file, fleetkey.Keyring.generate())
        self.password_file = str(write_private(self.dir / "db.pw", self.server.password + "\n"))
        self.dsn = self.server.hosts_dsn(self.dbname)
        db = Database(self.server.admin_dsn(self.dbname), fleetkey.load(self.key_file))
        conn = db.connect(check_schema=False)
        db.init(conn)
        conn.close()
        for statement in GRANTS.format(role=pgserver.HOSTS_ROLE, database=self.dbname).splitlines():
            if statement and not statement.startswith("--"):
                self.server.psql(statement, self.dbname)
        self.users = [f"cap{i}" for i in range(users)]
        store = PgStore(db)
        now = int(time.time())
        for name in self.users:  # records as enrollment writes them, recovery codes' hashes included
            record = Record(
                name,
                key=os.urandom(20),
                enrolled_at=now,
                recovery_salt=os.urandom(16),
                recovery_hashes=[os.urandom(32) for _ in range(recovery.COUNT)],
            )
            store.update(name, lambda old, r=record: r)
        store.close()
        state = self.dir / "state"
        state.mkdir(mode=0o700)
        for k in range(AGENTS):
            folder = Path(f"/tmp/tfa-cap-{os.getpid()}-{k}")  # a socket path holds at most 107 bytes
            policy = self.dir / f"host{k}.yaml"
            policy.write_text(
                f"version: 1\nstorage:\n  state_dir: {state}\n  backend: postgresql\n"
                f'  agent_socket: {folder}/a.sock\n  postgresql:\n    dsn: "{self.dsn}"\n'
                f"    password_file: {self.password_file}\n    key_file: {self.key_file}\n"
                "    statement_timeout: 10\n"
            )
            os.chmod(policy, 0o644)
            agent = Agent(policy, "--pool", str(max(HOSTS)))
            self.agents.append(agent)
            self.sockets.append(str(folder / "a.sock"))
            agent.start()
        pgbench = self._pgbench("-i", "-q", "-s", "1")
        if pgbench.returncode != 0:
            raise RuntimeError(f"pgbench -i failed: {pgbench.stderr.strip()}")
        self.login_script = self._login_script(users)

    def _login_script(self, users: int) -> str:
        """The agent's statements of one login as a pgbench script, on a copy of the table in the pgbench
        database (rows as long as the real ones: a sealed record of this size is stored out of line, in
        TOAST): client C logs in user ``capC``, its own."""
        from pam_twofa.fleet.database import SCHEMA

        length = int(self.server.psql("SELECT max(length(sealed)) FROM twofa_records", self.dbname))
        for statement in SCHEMA:
            self.server.psql(statement, "pgbench")
        self.server.psql(
            "GRANT SELECT, INSERT, UPDATE ON twofa_records TO twofa; "
            "INSERT INTO twofa_records (user_name, sealed, key_ids, version) SELECT 'cap' || i, "
            "left((SELECT string_agg(md5(random()::text || g || i), '') "
            f"FROM generate_series(1, {length // 32 + 1}) AS g), "
            f"{length}), 'k', 1 FROM generate_series(0, {users - 1}) AS i",
            "pgbench",
        )
        user = "'cap' || :client_id"
        sealed = os.urandom(length // 2 + 1).hex()[:length]
        script = self.dir / "login.sql"
        # As the agent sends them: the load; then BEGIN, the advisory lock and the row FOR UPDATE in
        # one query (one round trip); the write; the COMMIT. (Each agent announces its writes to the
        # others in one NOTIFY every 0.1 s at most, fleet.link: not a statement per login.)
        script.write_text(
            f"SELECT sealed, version FROM twofa_records WHERE user_name = {user};\n"
            f"BEGIN \\; SELECT pg_advisory_xact_lock(hashtextextended({user}, 0)) \\; "
            f"SELECT sealed, version FROM twofa_records WHERE user_name = {user} FOR UPDATE;\n"
            f"INSERT INTO twofa_records (user_name, sealed, key_ids, version) VALUES ({user}, '{sealed}', 'k', 1) "
            "ON CONFLICT (user_name) DO UPDATE SET sealed = EXCLUDED.sealed, key_ids = EXCLUDED.key_ids, "
            "version = twofa_records.version + 1, updated_at = now() "
            "WHERE twofa_records.version IS NULL OR twofa_records.version < twofa_records.version + 1;\n"
            "COMMIT;\n"
        )
        os.chmod(script, 0o644)
        return str(script)

    def postmaster(self) -> int:
        return int((self.server.data / "postmaster.pid").read_text().split()[0])

    def set_synchronous_commit(self, value: str) -> None:
        """For every session, the open ones too (a reload reaches them: none sets it itself)."""
        self.server.psql(f"ALTER SYSTEM SET synchronous_commit = {value}")
        self.server.psql("SELECT pg_reload_conf()")
        time.sleep(0.2)

    def _pgbench_env(self) -> dict[str, str]:
        return dict(os.environ, PGPASSWORD=self.server.password, PGSSLMODE="disable")

    def _pgbench(self, *args: str) -> subprocess.CompletedProcess:
        # Over TCP as the hosts' role, as the agents connect (scram, no TLS).
        argv = [PGBENCH, "-h", "127.0.0.1", "-p", str(self.server.port), "-U", "twofa", *args, "pgbench"]
        return subprocess.run(argv, capture_output=True, text=True, env=self._pgbench_env())

    def pgbench(self, clients: int, script: str | None = None) -> Result:
        """``pgbench -N`` (or ``script``, the login's SQL) with ``clients`` clients for WARM + DURATION
        seconds; the transactions of the last DURATION seconds counted from its per-transaction log."""
        logs = self.dir / f"pgbench-{time.monotonic_ns()}"
        logs.mkdir()
        what = ["-f", script] if script else ["-N"]
        argv = [PGBENCH, "-h", "127.0.0.1", "-p", str(self.server.port), "-U", "twofa", *what, "-n",
                "-c", str(clients), "-j", "2", "-T", str(int(WARM + DURATION) + 1), "-l",
                f"--log-prefix={logs}/tx", "pgbench"]  # fmt: skip
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self._pgbench_env()
        )
        watch = CpuWatch(self.postmaster(), {"pgbench": [proc.pid]})
        time.sleep(WARM)  # its connections made, as the drivers' warm-up
        begin = time.time()
        watch.start()
        time.sleep(DURATION)  # it runs a second longer: the window ends before it does
        cpu = watch.stop()
        end = time.time()
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench failed: {err.strip() or out.strip()}")
        latencies = []
        for log in logs.iterdir():  # client_id transaction_no time_us script_no epoch_s epoch_us
            for line in log.read_text().splitlines():
                fields = line.split()
                done = int(fields[4]) + int(fields[5]) / 1e6
                if begin + int(fields[2]) / 1e6 <= done <= end:
                    latencies.append(int(fields[2]) / 1e6)
        return _result(latencies, end - begin, 0, cpu)

    def logins(self, mode: str, hosts: int) -> Result:
        """N simulated hosts logging in for WARM + DURATION seconds; the last DURATION measured."""
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C.UTF-8",
            "PYTHONPATH": str(Path(self.package).parent),
        }
        drivers = []
        for d in range(DRIVERS):
            users = self.users[d:hosts:DRIVERS]
            job = {
                "mode": mode,
                "users": users,
                # host k of driver d is host d + k * DRIVERS overall: over the agents in turn
                "sockets": [self.sockets[(d + k * DRIVERS) % AGENTS] for k in range(len(users))],
                "dsn": self.dsn,
                "password_file": self.password_file,
                "key_file": self.key_file,
                "warm": WARM,
                "duration": DURATION,
            }
            proc = subprocess.Popen(
                ["/usr/bin/python3", os.path.abspath(__file__), "drive"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            drivers.append(proc)
        for proc in drivers:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a capacity driver did not start")
        groups = {"drivers": [p.pid for p in drivers]}
        if mode == "agent":
            groups["agents"] = [a.proc.pid for a in self.agents if a.proc]
        watch = CpuWatch(self.postmaster(), groups)
        t0 = time.monotonic()
        for proc in drivers:
            assert proc.stdin is not None
            proc.stdin.write(f"go {t0}\n")
            proc.stdin.flush()
        time.sleep(WARM)
        watch.start()
        time.sleep(max(0.0, t0 + WARM + DURATION - time.monotonic()))
        cpu = watch.stop()
        latencies: list[float] = []
        errors, first = 0, ""
        for proc in drivers:
            out, _ = proc.communicate(timeout=60)
            result = json.loads(out.splitlines()[-1])
            latencies += result["latencies"]
            errors += result["errors"]
            first = first or "".join(result["first_error"])
        if not latencies:
            raise RuntimeError(f"no login completed ({errors} errors: {first})")
        return _result(latencies, DURATION, errors, cpu, first)

    def cleanup(self) -> None:
        for agent in self.agents:
            agent.stop()
        for socket_path in self.sockets:
            shutil.rmtree(os.path.dirname(socket_path), ignore_errors=True)
        self.server.destroy()


def _cpu(cpu: dict[str, float]) -> str:
    names = [n for n in ("postgres", "agents", "drivers", "pgbench") if n in cpu]
    return ", ".join(f"{n} {cpu[n] * 100:.0f}%" for n in names) + f", idle {cpu['idle'] * 100:.0f}%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 0.01 else f"{seconds * 1000:.0f}"


def _latency(result: Result) -> str:
    return f"p50 {_ms(result.p50)} ms, p99 {_ms(result.p99)} ms"


def _verdict(ratio: float, errors: int) -> str:
    return "ok" if ratio >= GOAL and not errors else "LOW"


def capacity_figures() -> tuple[list[str], bool]:
    """(lines, ok) of figure (11); ok: PostgreSQL's capacity for logins (their SQL from pgbench's client)
    reaches GOAL x pgbench -N at every N, and no login failed."""
    bench = Capacity(users=max(HOSTS))
    lines: list[str] = []
    ok = True
    cores = os.cpu_count()
    try:
        middle = HOSTS[len(HOSTS) // 2]
        for hosts in HOSTS:
            agents, reference = bench.logins("agent", hosts), bench.pgbench(hosts)
            server = bench.pgbench(hosts, bench.login_script)
            ratio, server_ratio = agents.rate / reference.rate, server.rate / reference.rate
            ok &= server_ratio >= GOAL and agents.errors == 0
            lines.append(
                f"(11) capacity, {hosts} hosts over {AGENTS} agents: {agents.rate:,.0f} logins/s ({_latency(agents)}); "
                f"pgbench -N: {reference.rate:,.0f} tps; ratio {ratio:.2f} (goal >= {GOAL}) "
                + _verdict(ratio, agents.errors)
            )
            lines.append(
                f"     PostgreSQL's capacity: the logins' SQL from pgbench's client: {server.rate:,.0f} logins/s "
                f"({_latency(server)}); ratio {server_ratio:.2f} (goal >= {GOAL}) " + _verdict(server_ratio, 0)
            )
            lines.append(
                f"     CPU of {cores} cores: agents' logins: {_cpu(agents.cpu)}; "
                f"the SQL from pgbench: {_cpu(server.cpu)}; pgbench -N: {_cpu(reference.cpu)}"
            )
            if agents.errors:
                lines.append(f"     {agents.errors} logins failed, the first: {agents.note}")
            if hosts == middle:
                sql = bench.logins("sql", hosts)
                lines.append(
                    f"     without agents, {hosts} hosts running the agents' statements themselves (Python): "
                    f"{sql.rate:,.0f} logins/s ({_latency(sql)}); CPU {_cpu(sql.cpu)}"
                    + (f"; {sql.errors} failed, the first: {sql.note}" if sql.errors else "")
                )
                ok &= sql.errors == 0
                bench.set_synchronous_commit("off")
                async_agents, async_server = bench.logins("agent", hosts), bench.pgbench(hosts, bench.login_script)
                bench.set_synchronous_commit("on")
                lines.append(
                    f"     synchronous_commit=off, {hosts} hosts: agents {async_agents.rate:,.0f} logins/s "
                    f"(on: {agents.rate:,.0f}); the SQL from pgbench {async_server.rate:,.0f} logins/s "
                    f"(on: {server.rate:,.0f})"
                )
                ok &= async_agents.errors == 0
        return lines, ok
    finally:
        bench.cleanup()


if __name__ == "__main__":
    if sys.argv[1:] == ["drive"]:
        raise SystemExit(drive())
    figures, passed = capacity_figures()  # alone; bench.py --capacity prints them with the other figures
    print("\n".join(figures))
    raise SystemExit(0 if passed else 1)
