"""(6)-(9) The database backend (README "Many hosts"): three hosts = three policies and three
``pam-twofa-agent`` processes on one real PostgreSQL 15 (tests/pgserver.py), same machine.

(6) one authentication through the agent against the same through the file store, whole
    ``pamtester`` processes, alternated run by run (budget <= 1.15x);
(7) 20 parallel attempts with one valid code spread over the 3 hosts: exactly 1 succeeds, every round;
(8) 50 parallel logins of distinct users spread over the 3 hosts: all succeed, p95 <= 3x p50;
(9) one authentication served from an agent's offline copy, the database stopped, against the file
    store, alternated as in (6) (budget <= 1.15x).

The module and agents are those of ``PAM_TWOFA_BENCH_PACKAGE`` (a checkout's ``pam_twofa`` folder)
or, by default, the installed package.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

HOSTS = 3


def package_dir() -> str:
    override = os.environ.get("PAM_TWOFA_BENCH_PACKAGE")
    if override:
        return os.path.abspath(override)
    out = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", "import pam_twofa, os; print(os.path.dirname(pam_twofa.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


class DbBench:
    def __init__(self, bench, users: int) -> None:
        import pgserver
        from pgserver import Agent, PgServer, write_private

        from pam_twofa.fleet import key as fleetkey
        from pam_twofa.fleet.database import GRANTS, Database, PgStore

        self.bench = bench  # the file-store Bench: its users, keys, services and environment
        self.server = PgServer().init().start()
        self.server.setup_role()
        self.dbname = self.server.create_database("twofa")
        key_file = os.path.join(bench.dir, "fleet.key")
        fleetkey.write_new(key_file, fleetkey.Keyring.generate())
        password_file = str(write_private(Path(bench.dir) / "db.pw", self.server.password))
        module = os.path.join(package_dir(), "pam_module.py")
        pgserver.REPO = Path(package_dir()).parent  # the agents run the same package as the module
        self.agents = []
        for host in range(HOSTS):
            folder = os.path.join(bench.dir, f"run{host}")
            os.mkdir(folder, 0o700)
            policy = os.path.join(bench.dir, f"host{host}.yaml")
            with open(policy, "w") as f:
                f.write(
                    f"version: 1\ntotp: {{window: 1}}\nrate_limit: {{max_failures: 100}}\nstorage:\n"
                    f"  state_dir: {bench.state}\n  backend: postgresql\n  agent_socket: {folder}/a.sock\n"
                    f'  postgresql:\n    dsn: "{self.server.hosts_dsn(self.dbname)}"\n'
                    f"    password_file: {password_file}\n    key_file: {key_file}\n"
                )
            with open(os.path.join(bench.svc, f"host{host}"), "w") as f:
                f.write(f"auth required /lib/security/pam_python.so {module} policy={policy}\n")
            agent = Agent(Path(policy))
            agent.start()
            self.agents.append(agent)
        db = Database(self.server.admin_dsn(self.dbname), fleetkey.load(key_file))
        conn = db.connect(check_schema=False)
        db.init(conn)
        conn.close()
        for statement in GRANTS.format(role="twofa", database=self.dbname).splitlines():
            if statement and not statement.startswith("--"):
                self.server.psql(statement, self.dbname)
        from pam_twofa.core.record import Record

        store = PgStore(db)
        for name in bench.names[:users]:
            record = Record(name, key=bench.keys[name], enrolled_at=int(time.time()))
            store.update(name, lambda old, r=record: r)
        store.close()
        for host in range(HOSTS):  # warm each host's policy cache and agent pool
            bench.run(f"host{host}", "nobody-here", "000000")

    def cleanup(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.server.destroy()


def _parallel(bench, jobs) -> list:
    """Start every (service, user, answer) at once, answers written when all started: (seconds, rc) each."""
    start = time.perf_counter()
    procs = []
    for service, user, answer in jobs:
        proc = subprocess.Popen(
            ["pamtester", service, user, "authenticate"],
            env=bench.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append((proc, answer))
    for proc, answer in procs:
        assert proc.stdin is not None
        proc.stdin.write(answer + "\n")
        proc.stdin.close()
    results = []
    for proc, _answer in procs:
        proc.wait()
        results.append((time.perf_counter() - start, proc.returncode))
    return results


def offline_figure(bench, db: DbBench, runs: int, base: int):
    """(9): the database stopped, each agent serves logins from its offline copy (storage.offline,
    on by default; the users were enrolled after the agents' first sync, so their rows reached the
    copies by NOTIFY). A first login per host finds the database unreachable and takes its agent
    offline; then fresh users alternate between the file store and the hosts, as in (6)."""
    db.server.stop()
    for host in range(HOSTS):
        bench.run(f"host{host}", "nobody-here", "000000")
    a, b, failures = [], [], 0
    for i in range(runs):
        user = bench.names[base + i]
        t, rc = bench.run("twofa", user, bench.code(user))
        a.append(t)
        failures += rc != 0
        user = bench.names[base + runs + i]
        t, rc = bench.run(f"host{i % HOSTS}", user, bench.code(user))
        b.append(t)
        failures += rc != 0
    return ("(9) TOTP from the agent's offline copy (database down) vs the file store", a, b, failures, 1.15)


def db_figures(bench_class, runs: int, rounds: int):
    """(rows for the A/B table, lines, ok) of figures (6)-(8)."""
    users = 4 * runs + 150 + rounds
    bench = bench_class(users=users)
    db = None
    try:
        db = DbBench(bench, users)
        a, b, failures = [], [], 0
        for i in range(runs):
            user = bench.names[i]  # fresh users: a code is accepted once (the file store and the database
            t, rc = bench.run("twofa", user, bench.code(user))  # hold the same keys, separately)
            a.append(t)
            failures += rc != 0
            user = bench.names[runs + i]
            t, rc = bench.run(f"host{i % HOSTS}", user, bench.code(user))
            b.append(t)
            failures += rc != 0
        rows = [("(6) TOTP through the agent vs the file store", a, b, failures, 1.15)]
        lines = []
        winners = []
        base = 2 * runs + 150
        for r in range(rounds):
            user = bench.names[base + r]
            code = bench.code(user)
            results = _parallel(bench, [(f"host{k % HOSTS}", user, code) for k in range(20)])
            winners.append(sum(rc == 0 for _t, rc in results))
        exact = all(w == 1 for w in winners)
        lines.append(
            f"(7) 20 parallel tries of one code over {HOSTS} hosts, {rounds} rounds: successes per round "
            f"{sorted(set(winners))} (budget: exactly 1 every round) " + ("ok" if exact else "OVER")
        )
        durations, fails = [], 0
        for r in range(3):
            names = bench.names[2 * runs + r * 50 : 2 * runs + (r + 1) * 50]
            jobs = [(f"host{k % HOSTS}", u, bench.code(u)) for k, u in enumerate(names)]
            for seconds, rc in _parallel(bench, jobs):
                durations.append(seconds)
                fails += rc != 0
        durations.sort()
        p50 = statistics.median(durations)
        p95 = durations[int(len(durations) * 0.95) - 1]
        spread = fails == 0 and p95 <= 3 * p50
        lines.append(
            f"(8) 50 parallel logins over {HOSTS} hosts x3 rounds: {len(durations) - fails}/{len(durations)} "
            f"succeeded, p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, p95/p50 {p95 / p50:.2f} "
            "(budget <=3, all succeed) " + ("ok" if spread else "OVER")
        )
        rows.append(offline_figure(bench, db, runs, base=2 * runs + 150 + rounds))
        return rows, lines, exact and spread
    finally:
        if db is not None:
            db.cleanup()
        bench.cleanup()
