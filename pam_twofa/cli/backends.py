"""Which store the commands use, and the host-side checks of the database settings (not the login path)."""

from __future__ import annotations

import ipaddress
import os
import stat

from pam_twofa.store import Store
from pam_twofa.store.files import FileStore
from pam_twofa.system.fileio import owner_mode_problem

TYPE_CHECKING = False  # True for mypy only (the annotations are strings: ``annotations`` above)
if TYPE_CHECKING:
    from pam_twofa.policy import Policy


def store_for(policy: Policy) -> Store:
    """The store the policy selects, for the commands: files, or the database directly."""
    if policy.backend == "postgresql":
        from pam_twofa.fleet.database import Database, PgStore

        return PgStore(Database.from_policy(policy))
    return FileStore(policy.state_dir)


def _line_of(text: str, key: str) -> int:
    """The line of ``key`` (a dotted path) in the policy text, or 1."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 1
    line = 1
    for part in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            break
    return line


def _loopback(host: str) -> bool:
    if not host or host.startswith(("/", "@")):  # a Unix socket folder (or abstract socket)
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dsn_problems(dsn: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) about a libpq connection string, without connecting."""
    from psycopg.conninfo import conninfo_to_dict as parse_dsn

    try:
        params = parse_dsn(dsn)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's own message
        return [f"not a valid libpq connection string ({' '.join(str(exc).split())})"], []
    errors, warnings = [], []
    if "password" in params:
        errors.append(
            "holds a password, and the policy file is readable by every local user: "
            "remove it and put it in storage.postgresql.password_file (root-owned 0600)"
        )
    hosts = [h for h in params.get("host", "").split(",")] + [h for h in params.get("hostaddr", "").split(",") if h]
    remote = sorted({h for h in hosts if not _loopback(h)})
    sslmode = params.get("sslmode", "prefer")
    if remote and sslmode not in ("verify-full", "verify-ca"):
        warnings.append(
            f"host {', '.join(remote)} is not on this machine and sslmode is {sslmode}, not verify-full or "
            "verify-ca: anyone on the network path can pose as the database (and see and change every answer: "
            "unlock or disable any user, reset failure counters, make used codes valid again) or capture the "
            "role's password; the secrets stay encrypted under the fleet key. "
            "Set sslmode=verify-full and sslrootcert=FILE"
        )
    return errors, warnings


def _folders(path: str) -> list[str]:
    """The folders above ``path``, from ``/`` down to its own folder."""
    parts = [p for p in path.split("/")[:-1] if p]
    return ["/"] + ["/" + "/".join(parts[: n + 1]) for n in range(len(parts))]


def agent_socket_problems(path: str) -> list[str]:
    """Why someone other than root could serve ``storage.agent_socket`` (the login believes the
    agent's ``none``: whoever serves the socket can turn the second factor off); [] if nothing.

    Every folder above it, the path as written and as it resolves, must be root's and closed to
    writes by group and others, except with the sticky bit (``/tmp``: root's entries in it stay
    root's); its own folder, if it exists, as the agent wants it (root 0700, not a link), and
    the socket, if it exists, a socket of root's. A missing folder is made by the agent, root 0700.
    """
    problems: list[str] = []
    own = os.path.dirname(path)
    real_own = os.path.realpath(own)
    checked: set[str] = set()
    for folder in [*_folders(path), *_folders(os.path.join(real_own, "x"))]:
        if folder in checked:
            continue
        checked.add(folder)
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            continue  # made by the agent (only the last ones can be missing: the others exist)
        except OSError as exc:
            problems.append(f"{folder}: cannot be read ({exc.strerror or exc}): fix it or choose another path")
            continue
        if stat.S_ISLNK(st.st_mode) and folder != own:
            # a link root owns cannot be changed (only replaced, which its own folder rules out);
            # where it leads is walked as the resolved path
            problem = owner_mode_problem(st, folder, "a link above the agent's socket", forbidden=0)
        elif not stat.S_ISDIR(st.st_mode):
            problem = f"{folder}: not a folder (the agent socket's folder must be one, not a link): choose another path"
        elif folder == own:
            # as the agent's own check (fleet.cache.private_folder): it would not start
            fix = (
                f"chown root:root {folder}; chmod 700 {folder} if nothing else uses it, or give the socket a folder"
                " of its own (the default /run/pam-twofa/agent.sock: the agent makes the folder)"
            )
            problem = owner_mode_problem(st, folder, "the agent's socket folder", fix=fix)
        elif st.st_mode & stat.S_ISVTX:
            problem = owner_mode_problem(st, folder, "a folder above the agent's socket", forbidden=0)
        else:
            problem = owner_mode_problem(st, folder, "a folder above the agent's socket", forbidden=0o022)
        if problem:
            problems.append(problem)
    try:
        st = os.lstat(path)
    except OSError:
        return problems  # not there yet: the agent makes it
    if not stat.S_ISSOCK(st.st_mode):
        problems.append(f"{path}: not a socket: remove it, or choose another path")
    elif st.st_uid != 0:
        problems.append(
            f"{path}: the socket is owned by uid {st.st_uid}, not root: pam-twofa-agent did not make it, and logins"
            " refuse it; stop whatever serves it and remove it"
        )
    return problems


def storage_problems(policy: Policy, text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) as ``FILE:LINE: key: message`` for the database settings of a valid policy."""
    from pam_twofa.fleet import key as fleetkey
    from pam_twofa.system import secretfile

    if policy.backend != "postgresql":
        return [], []
    errors, warnings = [], []

    def at(key: str, message: str) -> str:
        return f"{policy.path}:{_line_of(text, key)}: {key}: {message}"

    errors += [
        at("storage.agent_socket", f"{m} (whoever can serve the agent's socket decides who is asked for a code)")
        for m in agent_socket_problems(policy.agent_socket)
    ]

    # Read them as the agent will (the same reader, owner, mode, size and format rules),
    # so that check refuses exactly what the agent would; nothing read is shown.
    try:
        fleetkey.load(policy.pg_key_file)
    except fleetkey.FleetKeyError as exc:
        errors.append(at("storage.postgresql.key_file", str(exc)))
    if policy.pg_password_file is not None:
        try:
            secretfile.read_password(policy.pg_password_file, "the database password file")
        except secretfile.SecretFileError as exc:
            errors.append(at("storage.postgresql.password_file", str(exc)))
    assert policy.pg_dsn is not None  # policy.parse refuses the postgresql backend without a dsn
    dsn_errors, dsn_warnings = dsn_problems(policy.pg_dsn)
    errors += [at("storage.postgresql.dsn", m) for m in dsn_errors]
    warnings += [at("storage.postgresql.dsn", m) for m in dsn_warnings]
    return errors, warnings
