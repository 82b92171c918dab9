"""pam-twofa benchmarks (docs/performance.md): ratios measured in one run, never absolute budgets.

Usage (as root, after scripts/install.sh, from the checkout; scripts/bench.sh runs it so):
    PYTHONPATH=$PWD:$PWD/tests /usr/bin/python3 bench/bench.py [--runs N] [--db] [--ssh] [--capacity]

Every figure is whole ``pamtester`` processes under pam_wrapper + nss_wrapper
(fake users, nothing written to the host's /etc), A and B alternated run by
run so that machine noise hits both sides alike. (11), the capacity of one
PostgreSQL in logins per second (bench/capacity.py), is a rate instead: simulated
hosts speaking the agent protocol, against ``pgbench -N`` on the same server.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# floor, db_bench, ssh_bench and capacity: from this folder (the script's); pam_twofa and the tests'
# pgserver: from PYTHONPATH (scripts/bench.sh).
from floor import BARE_MODULE

from pam_twofa.core import totp  # code computation for the bench's own answers

# pam_wrapper needs absolute module paths: libpam-python's file on Debian 13, then on Debian 12.
PAM_PYTHON = next(
    (
        p
        for p in ("/usr/lib/x86_64-linux-gnu/security/pam_python.so", "/lib/security/pam_python.so")
        if os.path.exists(p)
    ),
    "/lib/security/pam_python.so",
)
PAM_PERMIT = "/lib/x86_64-linux-gnu/security/pam_permit.so"
PAM_DENY = "/lib/x86_64-linux-gnu/security/pam_deny.so"
FIGURE_WIDTH = 60  # the longest label, "    reference: pam_google_authenticator.so vs password only", fits


def installed_module() -> str:
    if os.environ.get("PAM_TWOFA_BENCH_PACKAGE"):  # a checkout's pam_twofa folder instead of the installed one
        return os.path.join(os.path.abspath(os.environ["PAM_TWOFA_BENCH_PACKAGE"]), "pam_module.py")
    out = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", "import pam_twofa.cli.pamconfig as p; print(p.module_path())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


class Bench:
    def __init__(self, users: int, extra_users: int = 0) -> None:
        self.extra_users = extra_users
        self.dir = tempfile.mkdtemp(prefix="pam-twofa-bench-")
        os.chmod(self.dir, 0o755)
        self.state = os.path.join(self.dir, "state")
        os.mkdir(self.state, 0o700)
        self.policy = os.path.join(self.dir, "policy.yaml")
        with open(self.policy, "w") as f:
            f.write(f"version: 1\nstorage: {{state_dir: {self.state}}}\ntotp: {{window: 1}}\n")
        self.svc = os.path.join(self.dir, "svc")
        os.mkdir(self.svc)
        bare = os.path.join(self.dir, "bare.py")
        with open(bare, "w") as f:
            f.write(BARE_MODULE)
        services = {
            "bare": f"auth required {PAM_PYTHON} {bare}",
            "twofa": f"auth required {PAM_PYTHON} {installed_module()} policy={self.policy}",
            "permit": f"auth required {PAM_PERMIT}",
            "other": f"auth required {PAM_DENY}",
        }
        for name, line in services.items():
            with open(os.path.join(self.svc, name), "w") as f:
                f.write(line + "\n")
        self.names = [f"user{i}" for i in range(users)]
        self.keys: dict[str, bytes] = {}
        with open(os.path.join(self.dir, "passwd"), "w") as pw, open(os.path.join(self.dir, "group"), "w") as gr:
            pw.write("root:x:0:0:root:/root:/bin/sh\n")
            gr.write("root:x:0:\n")
            for i, name in enumerate(self.names):
                pw.write(f"{name}:x:{10000 + i}:{10000 + i}::/nonexistent:/bin/sh\n")
                gr.write(f"{name}:x:{10000 + i}:\n")
        self.env = dict(
            os.environ,
            LD_PRELOAD="libpam_wrapper.so libnss_wrapper.so",
            PAM_WRAPPER="1",
            PAM_WRAPPER_SERVICE_DIR=self.svc,
            NSS_WRAPPER_PASSWD=os.path.join(self.dir, "passwd"),
            NSS_WRAPPER_GROUP=os.path.join(self.dir, "group"),
        )
        self._enroll(self.names)
        self._enroll(f"ghost{i}" for i in range(extra_users))  # enrolled, but not in passwd
        # Warm the policy cache and the page cache once.
        self.run("twofa", self.names[0], "000000")

    def _enroll(self, names) -> None:
        """Write records straight into the store's layout (the CLI per user would take hours at 100,000)."""
        from pam_twofa.core.record import Record, dumps

        users_dir = os.path.join(self.state, "users")
        os.makedirs(users_dir, mode=0o700, exist_ok=True)
        for name in names:
            key = os.urandom(20)
            self.keys[name] = key
            fd = os.open(os.path.join(users_dir, name + ".rec"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, dumps(Record(name, key=key, enrolled_at=int(time.time()))).encode())
            os.close(fd)

    def run(self, service: str, user: str, answer: str) -> tuple[float, int]:
        start = time.perf_counter()
        proc = subprocess.run(
            ["pamtester", service, user, "authenticate"],
            input=answer + "\n",
            env=self.env,
            capture_output=True,
            text=True,
        )
        return time.perf_counter() - start, proc.returncode

    def code(self, user: str) -> str:
        return totp.totp(self.keys[user], time.time())

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def summary(samples) -> str:
    return f"{min(samples) * 1000:6.1f} {statistics.median(samples) * 1000:6.1f} {max(samples) * 1000:6.1f}"


def ab(bench: Bench, runs: int, b_side) -> tuple[list, list, int]:
    """Alternate the bare module (A) and ``b_side(i) -> (seconds, rc)`` (B); count B failures."""
    a, b, failures = [], [], 0
    for i in range(runs):
        t, _rc = bench.run("bare", bench.names[i % len(bench.names)], "123456")
        a.append(t)
        t, rc = b_side(i)
        b.append(t)
        failures += rc != 0
    return a, b, failures


def login_vs_bare(runs: int) -> list:
    bench = Bench(users=runs)
    rows: list[tuple[str, list, list, int, float | None]] = []
    try:

        def twofa(i):
            user = bench.names[i]  # a fresh user each run: a code is accepted once
            return bench.run("twofa", user, bench.code(user))

        a, b, failures = ab(bench, runs, twofa)
        rows.append(("(1) correct TOTP vs bare pam_python module", a, b, failures, 1.3))
        a, b, _ = ab(bench, runs, lambda i: bench.run("permit", bench.names[i], ""))
        rows.append(("    reference: pam_permit.so vs bare pam_python", a, b, 0, None))
    finally:
        bench.cleanup()
    return rows


def scale(runs: int) -> list:
    """(2) the same login with 100,000 enrolled users against 10."""
    small, large = Bench(users=runs), Bench(users=runs, extra_users=100_000 - runs)
    try:
        a, b, failures = [], [], 0
        for i in range(runs):
            user = small.names[i]
            t, rc = small.run("twofa", user, small.code(user))
            a.append(t)
            failures += rc != 0
            user = large.names[i]
            t, rc = large.run("twofa", user, large.code(user))
            b.append(t)
            failures += rc != 0
        return [("(2) correct TOTP, 100,000 enrolled vs 10", a, b, failures, 1.05)]
    finally:
        small.cleanup()
        large.cleanup()


def _parallel(bench: Bench, jobs) -> list:
    """Start every (user, answer) at once; return (seconds, rc) per job."""
    start = time.perf_counter()
    procs = []
    for user, answer in jobs:
        proc = subprocess.Popen(
            ["pamtester", "twofa", user, "authenticate"],
            env=bench.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append((proc, answer))
    for proc, answer in procs:
        assert proc.stdin is not None  # a pipe
        proc.stdin.write(answer + "\n")
        proc.stdin.close()
    results = []
    for proc, _answer in procs:
        proc.wait()
        results.append((time.perf_counter() - start, proc.returncode))
    return results


def concurrency(rounds: int) -> tuple[list[str], bool]:
    """(3) 50 parallel logins of distinct users; (4) 20 parallel tries of one valid code."""
    bench = Bench(users=50 * 3 + rounds)
    lines = []
    try:
        durations, failures = [], 0
        for r in range(3):
            users = bench.names[r * 50 : (r + 1) * 50]
            for seconds, rc in _parallel(bench, [(u, bench.code(u)) for u in users]):
                durations.append(seconds)
                failures += rc != 0
        durations.sort()
        p50 = statistics.median(durations)
        p95 = durations[int(len(durations) * 0.95) - 1]
        ok = failures == 0 and p95 <= 3 * p50
        lines.append(
            f"(3) 50 parallel logins x3 rounds: {len(durations) - failures}/{len(durations)} succeeded, "
            f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, p95/p50 {p95 / p50:.2f} (budget <=3, all succeed) "
            + ("ok" if ok else "OVER")
        )
        winners = []
        for r in range(rounds):
            user = bench.names[150 + r]  # a fresh user per round: its current code is unused
            code = bench.code(user)
            results = _parallel(bench, [(user, code)] * 20)
            winners.append(sum(rc == 0 for _t, rc in results))
        exact = all(w == 1 for w in winners)
        lines.append(
            f"(4) 20 parallel tries of one valid code, {rounds} rounds: successes per round "
            f"{sorted(set(winners))} (budget: exactly 1 every round) " + ("ok" if exact else "OVER")
        )
        return lines, ok and exact
    finally:
        bench.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="A/B pairs per figure (default 60)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the same-code race (default 20)")
    parser.add_argument("--ssh", action="store_true", help="also (5): SSH login through a Docker sshd (needs Docker)")
    parser.add_argument(
        "--ssh-runs",
        type=int,
        default=100,
        help="rounds of (5), each one login per stack (default 100: a whole SSH login varies more than one pamtester run)",
    )
    parser.add_argument("--db", action="store_true", help="also (6)-(10): the database backend (needs postgresql-15)")
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="also (11): logins/s one PostgreSQL sustains through agents, against pgbench -N (needs postgresql-15)",
    )
    parser.add_argument(
        "--capacity-only", action="store_true", help="only (11) (no file-store figures; ignores --db and --ssh)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.py: run as root (the store must be root-owned)", file=sys.stderr)
        return 1
    if args.capacity_only:
        return capacity_only()
    rows = login_vs_bare(args.runs) + scale(args.runs)
    db_lines, db_ok = [], True
    if args.db:
        from db_bench import db_figures

        db_rows, db_lines, db_ok = db_figures(Bench, args.runs, args.rounds)
        rows += db_rows
        from failover_bench import failover_figure

        failover_line, failover_ok = failover_figure()
        db_lines.append(failover_line)
        db_ok &= failover_ok
    if args.ssh:
        from ssh_bench import ssh_rows

        rows += ssh_rows(args.ssh_runs)
    print(
        f"pam-twofa bench: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()} (PAM: /usr/bin/python3), {args.runs} alternating A/B runs"
        + (f", (5) {args.ssh_runs} rounds" if args.ssh else "")
    )
    print(
        f"{'figure':{FIGURE_WIDTH}} {'A min/med/max ms':>22} {'B min/med/max ms':>22} {'B/A':>6} {'budget':>7} {'fails':>5}"
    )
    ok = True
    for name, a, b, failures, budget in rows:
        ratio = statistics.median(b) / statistics.median(a)
        verdict = "" if budget is None else ("ok" if ratio <= budget and not failures else "OVER")
        ok &= verdict != "OVER"
        print(
            f"{name:{FIGURE_WIDTH}} {summary(a):>22} {summary(b):>22} {ratio:6.2f} {('<=' + str(budget)) if budget else '':>7} {failures:5d} {verdict}"
        )
    lines, concurrent_ok = concurrency(args.rounds)
    for line in lines + db_lines:
        print(line)
    capacity_ok = True
    if args.capacity:
        from capacity import capacity_figures

        capacity_lines, capacity_ok = capacity_figures()
        for line in capacity_lines:
            print(line, flush=True)
    return 0 if ok and concurrent_ok and db_ok and capacity_ok else 1


def capacity_only() -> int:
    from capacity import capacity_figures

    print(
        f"pam-twofa bench: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, (11) only"
    )
    lines, ok = capacity_figures()
    for line in lines:
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
