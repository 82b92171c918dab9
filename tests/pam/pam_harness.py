"""Library of the PAM-layer tests; the fixtures are in conftest.py, which explains the harness."""

from __future__ import annotations

import base64
import filecmp
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
from support.codes import code_not_in

# --- fixed paths -----------------------------------------------------------------


def _installed_pkg() -> Path:
    """The pam_twofa that Debian's python3 (the one PAM embeds) imports, wherever it was installed.

    The Debian package puts it in /usr/lib/python3/dist-packages; an older
    pip install in /usr/local/lib/python3.X/dist-packages.
    """
    found = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", "import os, pam_twofa; print(os.path.dirname(pam_twofa.__file__))"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    path = found.stdout.strip()
    return Path(path) if found.returncode == 0 and path else Path("/usr/lib/python3/dist-packages/pam_twofa")


INSTALLED_PKG = _installed_pkg()
# PAM_TWOFA_TEST_PACKAGE=/path/to/checkout/pam_twofa: run the module and the commands from that
# folder instead of the installed copy (a second checkout tested without reinstalling the host's).
PACKAGE_OVERRIDE = os.environ.get("PAM_TWOFA_TEST_PACKAGE")
if PACKAGE_OVERRIDE:
    INSTALLED_PKG = Path(PACKAGE_OVERRIDE).resolve()
MODULE = INSTALLED_PKG / "pam_module.py"  # what pam_python.so loads: the installed copy
CHECKOUT_PKG = Path(__file__).resolve().parents[2] / "pam_twofa"
# pam_wrapper needs absolute module paths: libpam-python's file on Debian 13, then on Debian 12.
PAM_PYTHON = next(
    (
        p
        for p in ("/usr/lib/x86_64-linux-gnu/security/pam_python.so", "/lib/security/pam_python.so")
        if os.path.exists(p)
    ),
    "/lib/security/pam_python.so",
)
PAM_MATRIX = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so"
PAM_PERMIT = "/lib/x86_64-linux-gnu/security/pam_permit.so"
PAM_DENY = "/lib/x86_64-linux-gnu/security/pam_deny.so"
TOOLS = ("pamtester", "oathtool", "unshare", "mount", "twofa-admin", "twofa-enroll")

# The two stacks (docs/login.md).
PW = "twofa-pw"  # password (pam_matrix) then the code
KEY = "twofa-key"  # the code then pam_permit: the SSH key was the first factor
STACKS = (PW, KEY)

PROMPT = "Verification code"
PERIOD = 30
HARNESS_FAILED = 97  # exit status of the namespace wrapper when its own setup failed

# Messages of pam_twofa.login.flow the tests look for (fragments, so rewording a
# sentence elsewhere does not break them).
MSG_BAD = "Wrong verification code"
MSG_REPLAYED = "already used"
MSG_LOCKED = "Too many wrong codes"
MSG_ERROR = "not working on this host"

# --- users and groups (nss_wrapper) --------------------------------------------

# name: (uid, primary gid)
USERS = {
    "alice": (2001, 2001),  # supplementary member of staff
    "bob": (2002, 2002),
    "carol": (2003, 2003),  # listed in exempt.users where a test says so
    "dave": (2004, 2004),  # supplementary member of ops (exempt group)
    "erin": (2005, 3000),  # staff is her PRIMARY group
    "frank": (2006, 2006),  # in no policy group
    "oscar": (2007, 3001),  # ops is his PRIMARY group
    "peggy": (2008, 2008),
    "trent": (2009, 2009),
    "victor": (2010, 2010),
    "bgadmin": (2011, 2011),  # break-glass: supplementary member of staff (enforced) AND ops (exempt)
    # Names the directory services hand out that are not plain file names (test_pam_names.py)
    "CORP\\walter": (2101, 2101),  # winbind
    "wendy@corp.example": (2102, 2102),  # SSSD with fully qualified names
    "jos\u00e9": (2103, 2103),  # LDAP / AD, non-ASCII
    "two words": (2104, 2104),
    "\u00fc" * 100: (2105, 2105),  # 200 bytes of UTF-8: stored under a hashed file name
}
GROUPS = {  # name: (gid, supplementary members)
    "staff": (3000, ["alice", "bgadmin"]),
    "ops": (3001, ["dave", "bgadmin"]),
}
PASSWORDS = {name: f"Pw.{name}.k7Qz-{name[::-1]}" for name in USERS}

NS_SCRIPT = (
    'mount --rbind /dev "$0/olddev" && mount --bind "$0/dev" /dev '
    f'|| {{ echo "TWOFA-HARNESS: could not set up the mount namespace" >&2; exit {HARNESS_FAILED}; }}; '
    'exec "$@"'
)


# --- syslog listener -------------------------------------------------------------


class SyslogListener:
    """Collects every datagram sent to a unix socket, from a reader thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="syslog-listener", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 17)
            except TimeoutError:
                if self.closed:
                    return
                continue
            except OSError:
                return
            with self.cond:
                self.lines.append(data.decode("utf-8", "replace"))
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def since(self, mark: int) -> list[str]:
        """The lines received after ``mark``, once everything sent before now has arrived."""
        token = f"twofa-harness-sync {uuid.uuid4().hex}"
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            client.sendto(token.encode(), self.path)
        finally:
            client.close()
        with self.cond:
            if not self.cond.wait_for(lambda: any(token in line for line in self.lines[mark:]), timeout=10):
                pytest.fail("syslog harness: the sync marker never arrived")
            return [line for line in self.lines[mark:] if "twofa-harness-sync" not in line]

    def close(self) -> None:
        self.closed = True
        self.thread.join(timeout=5)
        self.sock.close()


def syslog_facility(line: str) -> int:
    """The facility number of a raw syslog datagram (``<PRI>...``)."""
    match = re.match(r"<(\d+)>", line)
    assert match, f"not a syslog datagram: {line!r}"
    return int(match.group(1)) >> 3


LOG_AUTHPRIV = 10


# --- TOTP from an independent implementation (oathtool) ------------------------


def current_step() -> int:
    return int(time.time()) // PERIOD


def oath(secret: str, step: int) -> str:
    out = subprocess.run(
        ["oathtool", "--totp", "-b", secret, "--now", f"@{step * PERIOD}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert re.fullmatch(r"\d{6}", out), out
    return out


def settle(min_left: float = 2.0) -> None:
    """Wait for the next time step if fewer than ``min_left`` seconds remain in this one."""
    left = PERIOD - time.time() % PERIOD
    if left < min_left:
        time.sleep(left + 0.1)


def new_secret() -> str:
    return base64.b32encode(os.urandom(20)).decode().rstrip("=")


class Enrolled:
    """An enrolled user: their secret and codes computed by oathtool."""

    def __init__(self, user: str, secret: str, enroll_step: int) -> None:
        self.user = user
        self.secret = secret
        self.enroll_step = enroll_step

    def code(self) -> str:
        """The code of the current time step (never the one enrollment used)."""
        return oath(self.secret, max(current_step(), self.enroll_step + 1))

    def wrong_code(self, salt: int = 0) -> str:
        """A well-formed code that no step the module accepts (window 1, plus margin) produces."""
        step = current_step()
        valid = {oath(self.secret, s) for s in range(step - 3, step + 4)}
        return code_not_in(valid, start=int(self.code()) + 104729 * (1 + salt), stride=104729)


# --- results -------------------------------------------------------------------------


class Result(NamedTuple):
    rc: int
    output: str  # stdout and stderr, interleaved
    syslog: list  # raw datagrams received while the command ran

    @property
    def ok(self) -> bool:
        return self.rc == 0 and "successfully authenticated" in self.output

    @property
    def denied(self) -> bool:
        return self.rc != 0 and "successfully authenticated" not in self.output

    @property
    def prompted(self) -> bool:
        return PROMPT in self.output

    def log_with(self, *needles: str) -> list:
        return [line for line in self.syslog if all(n in line for n in needles)]

    def __repr__(self) -> str:  # what pytest prints for ``assert cond, result``
        return f"rc={self.rc}\n--- output ---\n{self.output}\n--- syslog ---\n" + "\n".join(self.syslog)


def leaks(lines, sensitive) -> list:
    """(value, line) pairs where a sensitive value appears in a syslog line.

    Codes are matched as whole numbers, so a 6-digit code is not "found"
    inside a 10-digit timestamp; other values as substrings (long inputs by
    their first 16 characters too, in case a log line truncates them).
    """
    found: list = []
    for value in sensitive:
        if not value or len(value.strip()) < 6:
            continue
        probes = {value[:64], value[:16]} if len(value) > 16 else {value}
        if value.isascii() and value.isdigit():
            patterns = [re.compile(r"(?<![0-9])" + re.escape(p) + r"(?![0-9])") for p in probes]
        else:
            patterns = [re.compile(re.escape(p)) for p in probes]
        found.extend((value[:40], line) for line in lines if any(p.search(line) for p in patterns))
    return found


# --- session: tools, users, the /dev replacement, the listener ----------------------


class Env:
    def __init__(self, root: Path, listener: SyslogListener) -> None:
        self.root = root
        self.listener = listener
        self.scratches: list = []  # every Scratch of the session, for the session-level syslog audit
        self.passwd = root / "passwd"
        self.group = root / "group"
        self.passdb = root / "passdb"
        self.admin = shutil.which("twofa-admin") or "twofa-admin"
        self.enroll = shutil.which("twofa-enroll") or "twofa-enroll"
        if PACKAGE_OVERRIDE:
            self.admin = _command_of(root, "twofa-admin", "pam_twofa.cli.admin")
            self.enroll = _command_of(root, "twofa-enroll", "pam_twofa.cli.enroll")
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "NSS_", "PAM_"))}
        self.base_env.pop("VIRTUAL_ENV", None)
        self.base_env["LC_ALL"] = "C.UTF-8"

    def nss_env(self) -> dict:
        return {
            "LD_PRELOAD": "libnss_wrapper.so",
            "NSS_WRAPPER_PASSWD": str(self.passwd),
            "NSS_WRAPPER_GROUP": str(self.group),
        }

    def namespaced(self, argv, extra_env=None) -> list[str]:
        """``argv`` with ``extra_env`` set, in the private mount namespace of NS_SCRIPT."""
        assignments = [f"{k}={v}" for k, v in (extra_env or {}).items()]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", NS_SCRIPT, str(self.root), "env"] + [
            *assignments,
            *map(str, argv),
        ]

    def run(self, argv, extra_env=None, stdin: bytes = b"", timeout: float = 60, cwd=None) -> Result:
        """Run ``argv`` in the private mount namespace; collect its syslog lines."""
        cmd = self.namespaced(argv, extra_env)
        mark = self.listener.mark()
        proc = subprocess.run(
            cmd,
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.base_env,
            timeout=timeout,
            cwd=cwd or str(self.root),
        )
        lines = self.listener.since(mark)
        output = proc.stdout.decode("utf-8", "replace")
        if proc.returncode == HARNESS_FAILED and "TWOFA-HARNESS" in output:
            pytest.fail(f"harness: {output}")
        return Result(proc.returncode, output, lines)

    def run_interactive(
        self, argv, extra_env=None, first: bytes = b"", respond=None, timeout: float = 60, cwd=None
    ) -> Result:
        """``run`` with stdin kept open while the command runs.

        ``first`` is written at once; then ``respond(proc)`` is called while the
        command runs (``proc`` is the Popen, to notice an early exit) and the
        bytes it returns, if any, are written before stdin is closed. For an
        answer that exists only once the command has done something, such as
        a code it emailed.
        """
        steps = [lambda proc, output: first] if first else []
        if respond is not None:
            steps.append(lambda proc, output: respond(proc))
        return self.run_dialog(argv, extra_env, steps, timeout, cwd)

    def run_dialog(self, argv, extra_env=None, steps=(), timeout: float = 60, cwd=None) -> Result:
        """``run`` as a dialog: the output is read as it comes, and each of ``steps`` in turn is
        called as ``step(proc, output)`` (``output()``: all the text so far) until it returns the
        bytes to type (None: stop typing, close stdin). For answers that depend on what the
        command showed, such as a code from a secret it printed. stdout is unbuffered (stdbuf),
        so text printed before a prompt is there when the prompt is.
        """
        cmd = self.namespaced(["stdbuf", "-o0", "-e0", *argv], extra_env)
        mark = self.listener.mark()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.base_env,
            cwd=cwd or str(self.root),
        )
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None  # both are pipes
        chunks: list[bytes] = []

        def read() -> None:
            while True:
                data = os.read(stdout.fileno(), 65536)
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=read, name="dialog-output", daemon=True)
        reader.start()

        def output() -> str:
            return b"".join(chunks).decode("utf-8", "replace")

        try:
            for step in steps:
                answer = step(proc, output)
                if answer is None:
                    break
                try:
                    stdin.write(answer)
                    stdin.flush()
                except BrokenPipeError:
                    break  # the command already gave up reading: its output says why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{argv[0]} did not finish within {timeout} s:\n{output()}")
        reader.join(timeout=10)
        lines = self.listener.since(mark)
        if proc.returncode == HARNESS_FAILED and "TWOFA-HARNESS" in output():
            pytest.fail(f"harness: {output()}")
        return Result(proc.returncode, output(), lines)


def wait_for(proc, output, pattern, timeout: float = 20):
    """The first match of ``pattern`` (a compiled regex) in ``output()``; None when the process ended
    or ``timeout`` passed without one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(output())
        if found:
            return found
        if proc.poll() is not None:
            return pattern.search(output())
        time.sleep(0.02)
    return None


def _command_of(root: Path, name: str, module: str) -> str:
    """A console script like the installed one, running the package at PAM_TWOFA_TEST_PACKAGE."""
    folder = root / "bin"
    folder.mkdir(exist_ok=True)
    path = folder / name
    site = str(INSTALLED_PKG.parent)
    # The commands run without PYTHON* variables (base_env) and under -I: the path is in the script.
    path.write_text(
        f"#!/usr/bin/python3 -I\nimport sys\nsys.path.insert(0, {site!r})\nfrom {module} import entry\nentry()\n"
    )
    os.chmod(path, 0o755)
    os.chmod(folder, 0o755)
    return str(path)


def _check_prerequisites() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("the PAM tests run as root (unshare --mount, twofa-enroll --user, root-owned state)")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            problems.append(f"missing command {tool} (scripts/test.sh installs the test tools)")
    for path in (PAM_PYTHON, PAM_MATRIX, PAM_PERMIT, PAM_DENY, str(MODULE)):
        if not os.path.exists(path):
            problems.append(f"missing {path}")
    for lib in ("libpam_wrapper.so", "libnss_wrapper.so"):
        if not any(
            os.path.exists(os.path.join(d, lib))
            for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/lib/x86_64-linux-gnu")
        ):
            problems.append(f"missing {lib}")
    if not problems and not PACKAGE_OVERRIDE:
        cmp = filecmp.dircmp(CHECKOUT_PKG, INSTALLED_PKG, ignore=["__pycache__"])
        stale = _differences(cmp)
        if stale:
            problems.append(
                "the installed pam_twofa differs from the checkout ("
                + ", ".join(stale[:5])
                + "): run bash scripts/install.sh"
            )
    if problems:
        pytest.fail("PAM test prerequisites:\n  " + "\n  ".join(problems), pytrace=False)


def _differences(cmp, prefix="") -> list:
    out = [prefix + n for n in cmp.left_only if not n.endswith(".pyc")]
    out += [prefix + n for n in cmp.diff_files]
    # dircmp compares shallowly (stat); compare contents of same-named files too
    for name in cmp.same_files:
        if not filecmp.cmp(os.path.join(cmp.left, name), os.path.join(cmp.right, name), shallow=False):
            out.append(prefix + name)
    for name, sub in cmp.subdirs.items():
        out += _differences(sub, prefix + name + "/")
    return out


def _write_users(root: Path) -> None:
    passwd = [f"{n}:x:{uid}:{gid}:{n.title()}:/home/{n}:/bin/sh" for n, (uid, gid) in USERS.items()]
    passwd.insert(0, "root:x:0:0:root:/root:/bin/sh")
    group = ["root:x:0:"]
    group += [f"{n}:x:{gid}:" for n, (uid, gid) in USERS.items() if gid == uid]
    group += [f"{n}:x:{gid}:{','.join(members)}" for n, (gid, members) in GROUPS.items()]
    (root / "passwd").write_text("\n".join(passwd) + "\n")
    (root / "group").write_text("\n".join(group) + "\n")
    (root / "passdb").write_text("".join(f"{n}:{PASSWORDS[n]}:{service}\n" for n in USERS for service in (PW, KEY)))


def _make_dev(root: Path) -> None:
    """The folder mounted on /dev in the namespace: symlinks into the real /dev (re-mounted at olddev)."""
    (root / "olddev").mkdir()
    dev = root / "dev"
    dev.mkdir()
    for entry in os.scandir("/dev"):
        if entry.name == "log":
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), dev / entry.name)
        else:
            os.symlink(root / "olddev" / entry.name, dev / entry.name)
    os.chmod(dev, 0o755)


def start_env():
    """Check the prerequisites, write the users, prepare /dev and the listener; return (Env, cleanup)."""
    _check_prerequisites()
    root = Path(tempfile.mkdtemp(prefix="twofa-pam-", dir="/tmp"))  # short: a socket path has 108 bytes
    os.chmod(root, 0o755)
    _write_users(root)
    _make_dev(root)
    listener = SyslogListener(str(root / "dev" / "log"))
    env = Env(root, listener)

    def cleanup():
        listener.close()
        shutil.rmtree(root, ignore_errors=True)

    try:
        probe = env.run(
            [
                "/usr/bin/python3",
                "-I",
                "-c",
                "import syslog; syslog.syslog(syslog.LOG_AUTHPRIV | syslog.LOG_INFO, 'twofa-probe')",
            ]
        )
    except BaseException:
        cleanup()
        raise
    if probe.rc != 0 or not any("twofa-probe" in line for line in probe.syslog):
        cleanup()
        pytest.fail(f"syslog harness does not capture /dev/log:\n{probe}", pytrace=False)
    return env, cleanup


# --- per test: policy, state, services, helpers ---------------------------------------


class Scratch:
    """One test's world: policy file, state folder, PAM service folder, and helpers."""

    def __init__(self, env: Env, root: Path, check_leaks: bool = True) -> None:
        self.env = env
        self.check_leaks = check_leaks
        env.scratches.append(self)
        self.lines: list[str] = []  # every syslog line of every command of this scratch
        self.root = root
        os.chmod(root, 0o700)
        self.policy_path = root / "policy.yaml"
        self.state_dir = root / "state"
        self.state_dir.mkdir(mode=0o700)
        self.service_dir = root / "pam.d"
        self.service_dir.mkdir()
        self.users = USERS
        self.passwords = PASSWORDS
        # Everything syslog must never contain (docs/login.md): grows with the test.
        self.sensitive: set[str] = set(PASSWORDS.values())
        self.enrolled: dict[str, Enrolled] = {}
        self.write_policy()
        self.auth_line = self._auth_line()
        self._write_services()

    # policy --------------------------------------------------------------------

    def write_policy(
        self,
        *,
        mode="off",
        groups=(),
        unenrolled="email",
        exempt_users=(),
        exempt_groups=(),
        exempt_networks=(),
        max_failures=3,
        per_seconds=900,
        on_error="deny",
        trust_seconds=0,
    ) -> Path:
        """A valid policy (flow style, one key a line) pointing at this test's state folder."""

        def seq(items):
            return "[" + ", ".join(f"'{i}'" for i in items) + "]"

        text = f"""version: 1
enforce:
  mode: {mode}
  groups: {seq(groups)}
  unenrolled: {unenrolled}
exempt:
  users: {seq(exempt_users)}
  groups: {seq(exempt_groups)}
  networks: {seq(exempt_networks)}
totp:
  digits: 6
  period: {PERIOD}
  window: 1
rate_limit:
  max_failures: {max_failures}
  per_seconds: {per_seconds}
trust:
  seconds: {trust_seconds}
storage:
  state_dir: {self.state_dir}
on_error: {on_error}
"""
        return self.write_policy_text(text)

    def write_policy_text(self, text: str, verbatim: bool = False) -> Path:
        """Replace the policy by ``text``; ``version: 1`` is appended unless it has one or ``verbatim``."""
        if not verbatim and not any(line.startswith("version:") for line in text.splitlines()):
            text += ("" if not text or text.endswith("\n") else "\n") + "version: 1\n"
        tmp = self.policy_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.policy_path)
        return self.policy_path

    # services ------------------------------------------------------------------

    def _auth_line(self) -> str:
        """The pam_python line exactly as ``twofa-admin pam-config`` prints it for this policy."""
        out = subprocess.run(
            [self.env.admin, "pam-config", "--stack", "key", "--policy", str(self.policy_path)],
            capture_output=True,
            text=True,
            env=self.env.base_env,
            cwd=str(self.root),
        )
        assert out.returncode == 0, out.stderr
        lines = [line for line in out.stdout.splitlines() if "pam_python.so" in line and line.startswith("auth")]
        assert len(lines) == 1, out.stdout
        words = lines[0].split()
        assert words == ["auth", "required", "pam_python.so", str(MODULE), f"policy={self.policy_path}"], words
        # the same line with the module's absolute path, as pam_wrapper needs
        return " ".join(words[:2] + [PAM_PYTHON] + words[3:])

    def module_line(self, *extra: str, policy: bool = True) -> str:
        """The pam_twofa line with ``extra`` module arguments appended; without its ``policy=`` if not ``policy``."""
        fields = [f for f in self.auth_line.split() if policy or not f.startswith("policy=")]
        return " ".join([*fields, *extra])

    def _write_services(self) -> None:
        (self.service_dir / PW).write_text(f"auth required {PAM_MATRIX} passdb={self.env.passdb}\n{self.auth_line}\n")
        (self.service_dir / KEY).write_text(f"{self.auth_line}\nauth required {PAM_PERMIT}\n")
        (self.service_dir / "other").write_text(
            "".join(f"{t} required {PAM_DENY}\n" for t in ("auth", "account", "password", "session"))
        )

    # running -------------------------------------------------------------------

    def _checked(self, result: Result, typed=()) -> Result:
        assert "Traceback" not in result.output, f"traceback in the output:\n{result}"
        tb = [line for line in result.syslog if "Traceback" in line]
        assert not tb, f"traceback in syslog:\n{result}"
        # pam_python reports an exception that escaped the module (even one with no
        # traceback, as a SyntaxError at load) under the module's path as ident;
        # the module itself logs under the program's name.
        escaped = [line for line in result.syslog if "pam_module.py[" in line]
        assert not escaped, f"pam_python reported an exception of the module:\n{result}"
        assert "Error in service module" not in result.output, f"the module failed instead of deciding:\n{result}"
        self.lines.extend(result.syslog)
        self.sensitive.update(t for t in typed if isinstance(t, str))
        leaked = leaks(result.syslog, self.sensitive) if self.check_leaks else []
        assert not leaked, f"syslog contains a secret, password or code: {leaked}\n{result}"
        return result

    def _pamtester_command(self, service: str, user: str, rhost):
        """The argv and environment of one pamtester run under pam_wrapper and nss_wrapper."""
        argv = ["pamtester", "-v"]
        if rhost is not None:
            argv += ["-I", f"rhost={rhost}"]
        argv += [service, user, "authenticate"]
        env = {
            "LD_PRELOAD": "libpam_wrapper.so libnss_wrapper.so",
            "PAM_WRAPPER": "1",
            "PAM_WRAPPER_SERVICE_DIR": str(self.service_dir),
            "NSS_WRAPPER_PASSWD": str(self.env.passwd),
            "NSS_WRAPPER_GROUP": str(self.env.group),
        }
        return argv, env

    def pamtester(self, service: str, user: str, answers=(), rhost=None) -> Result:
        """``pamtester -v [-I rhost=ADDR] SERVICE USER authenticate``, answers on stdin one a line."""
        stdin = b"".join((a if isinstance(a, bytes) else a.encode()) + b"\n" for a in answers)
        argv, env = self._pamtester_command(service, user, rhost)
        return self._checked(self.env.run(argv, env, stdin), answers)

    def pamtester_interactive(
        self, service: str, user: str, answers=(), respond=None, rhost=None, timeout: float = 60
    ) -> Result:
        """``pamtester`` as above, but the last answer is given while it runs.

        ``answers`` (a password, say) are written at once; ``respond(proc)``
        is then called while pamtester runs and returns the next answer (a
        code that was emailed during this very run) or None to just close
        stdin. Every answer becomes a secret for the syslog leak check.
        """
        first = b"".join((a if isinstance(a, bytes) else a.encode()) + b"\n" for a in answers)
        typed = list(answers)

        def answer(proc):
            text = respond(proc) if respond is not None else None
            if text is None:
                return None
            typed.append(text)
            if isinstance(text, str):
                self.sensitive.add(text)
            return (text if isinstance(text, bytes) else text.encode()) + b"\n"

        argv, env = self._pamtester_command(service, user, rhost)
        return self._checked(self.env.run_interactive(argv, env, first, answer, timeout=timeout), typed)

    def pamtester_dialog(self, service: str, user: str, steps, rhost=None, timeout: float = 60) -> Result:
        """``pamtester`` driven by ``steps`` (see ``Env.run_dialog``); each step's answer (bytes,
        without the newline) is typed as a line and becomes a secret for the syslog leak check."""
        typed: list[str] = []

        def wrap(step):
            def run(proc, output):
                answer = step(proc, output)
                if answer is None:
                    return None
                text = answer.decode() if isinstance(answer, bytes) else answer
                typed.append(text)
                if text:
                    self.sensitive.add(text)
                return text.encode() + b"\n"

            return run

        argv, env = self._pamtester_command(service, user, rhost)
        return self._checked(self.env.run_dialog(argv, env, [wrap(s) for s in steps], timeout=timeout), typed)

    def login(self, stack: str, user: str, code=None, password=None, rhost=None) -> Result:
        """A login through ``stack``: the password first in the password stack, then the code (if any)."""
        answers = []
        if stack == PW:
            answers.append(self.passwords.get(user, "no-such-password") if password is None else password)
        if code is not None:
            answers.append(code)
        return self.pamtester(stack, user, answers, rhost=rhost)

    def cli(self, *args, nss=True) -> Result:
        """``twofa-admin ARGS --policy P`` (as root, users from nss_wrapper), in the namespace."""
        return self._checked(
            self.env.run([self.env.admin, *args, "--policy", self.policy_path], self.env.nss_env() if nss else {})
        )

    def enroll(self, user: str, secret: str | None = None) -> Enrolled:
        """``twofa-enroll --user USER --secret S --code C`` with the PREVIOUS step's code.

        Enrollment marks its code's step as used; logging in with the current
        step's code then works. Waits at a step boundary so both stay valid.
        """
        secret = secret or new_secret()
        self.sensitive.update({secret, secret.lower(), base64.b32decode(secret + "=" * (-len(secret) % 8)).hex()})
        for _attempt in range(3):
            settle()
            step = current_step()
            code = oath(secret, step - 1)
            self.sensitive.add(code)
            result = self._checked(
                self.env.run(
                    [self.env.enroll, "--user", user, "--secret", secret, "--code", code, "--policy", self.policy_path],
                    self.env.nss_env(),
                )
            )
            if result.rc == 0 or current_step() == step:
                break  # done, or failed for a reason other than the clock moving on (a very slow machine)
        assert result.rc == 0, f"enrollment of {user} failed:\n{result}"
        # the recovery codes it printed (xxxxx-xxxxx) are secrets too
        tail = result.output.split("ecovery codes", 1)[-1]
        self.sensitive.update(t for t in re.findall(r"\b[0-9a-z]{4,8}-[0-9a-z]{4,8}\b", tail) if re.search(r"\d", t))
        if "backend: postgresql" not in self.policy_path.read_text():  # else the record is in the database
            assert self.record_path(user).is_file()
        enrolled = Enrolled(user, secret, step - 1)
        self.enrolled[user] = enrolled
        return enrolled

    def record_path(self, user: str) -> Path:
        from pam_twofa.store.files import encode_name

        return self.state_dir / "users" / f"{encode_name(user)}.rec"
