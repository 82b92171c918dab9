"""The system's user and group databases (an adapter: pwd, grp, getgrouplist)."""

import os

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from collections.abc import Iterable

    from pam_twofa.core.decision import DecisionPolicy, Facts
    from pam_twofa.core.record import Record


class Account:
    """An account of the user database. Its supplementary groups are read on first use: a login whose
    policy names no group never asks NSS for them (with SSSD or LDAP that is a lookup saved)."""

    __slots__ = ("name", "uid", "gid", "home", "_gids", "_groups_known")

    def __init__(
        self, name: str, uid: int, gid: int, gids: "set[int] | None", home: str, groups_known: bool = True
    ) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self._gids = gids  # None: not read yet
        self._groups_known = groups_known

    @property
    def gids(self) -> "set[int]":
        """Primary and supplementary group ids (the primary only when ``groups_known`` is False)."""
        if self._gids is None:
            return self._read_groups()
        return self._gids

    @property
    def groups_known(self) -> bool:
        """False when getgrouplist failed, so ``gids`` holds the primary group only."""
        if self._gids is None:
            self._read_groups()
        return self._groups_known

    def _read_groups(self) -> "set[int]":
        try:
            gids, self._groups_known = set(os.getgrouplist(self.name, self.gid)), True
        except OSError:
            gids, self._groups_known = {self.gid}, False
        self._gids = gids
        return gids


def lookup(user: str) -> Account | None:
    """The account; None if unknown. Its groups are read when first asked for (``Account.gids``)."""
    import pwd

    if not user or "\0" in user:
        return None
    try:
        entry = pwd.getpwnam(user)
    except (KeyError, ValueError, OverflowError):
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, None, entry.pw_dir)


def group_ids(names: "Iterable[str]") -> "dict[str, int | None]":
    """{group name: gid, or None when it does not resolve: no such group, or NSS cannot answer
    (``getgrnam`` tells the two apart only by errno, which Python does not give)."""
    import grp

    found: dict[str, int | None] = {}
    for name in names:
        try:
            found[name] = grp.getgrnam(name).gr_gid
        except (KeyError, ValueError):
            found[name] = None
    return found


# -- enumerating accounts (twofa-admin status and invite; never the login path) ---------------------

LOGIN_DEFS = "/etc/login.defs"
UID_RANGE = (1000, 60000)  # login.defs' defaults for UID_MIN and UID_MAX


def login_uid_range(path: str | None = None) -> tuple[int, int]:
    """(UID_MIN, UID_MAX) of /etc/login.defs, as useradd reads them; its defaults for a key that is not there."""
    found = {"UID_MIN": UID_RANGE[0], "UID_MAX": UID_RANGE[1]}
    try:
        with open(path or LOGIN_DEFS, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                words = line.split()
                if len(words) >= 2 and words[0] in found:
                    try:
                        found[words[0]] = int(words[1], 0)
                    except ValueError:
                        pass
    except OSError:
        pass
    return found["UID_MIN"], found["UID_MAX"]


def group_members(names: "Iterable[str]", primary: bool = False) -> list[str]:
    """The names listed as supplementary members of the groups ``names`` (unknown groups: none);
    with ``primary``, also the accounts whose primary group one of them is. Only what NSS enumerates."""
    import grp

    found = []
    gids = set()
    for name in names:
        try:
            group = grp.getgrnam(name)
        except (KeyError, ValueError):
            continue
        found.extend(group.gr_mem)
        gids.add(group.gr_gid)
    if primary and gids:
        import pwd

        found.extend(entry.pw_name for entry in pwd.getpwall() if entry.pw_gid in gids)
    return found


def login_accounts(root: bool = True) -> list[Account]:
    """Accounts people log in with: a uid within login.defs' UID_MIN..UID_MAX and a login shell that
    is not nologin or false, and root (unless ``root`` is False). Only what NSS enumerates (directory
    users need enumeration on)."""
    import pwd

    low, high = login_uid_range()
    found = []
    for entry in pwd.getpwall():
        shell = entry.pw_shell.rsplit("/", 1)[-1]
        if ((root and entry.pw_uid == 0) or low <= entry.pw_uid <= high) and shell not in ("nologin", "false", ""):
            account = lookup(entry.pw_name)
            if account is not None:
                found.append(account)
    return found


def facts(
    policy: "DecisionPolicy", account: Account, record: "Record | None", rhost: str | None, now: float = 0.0
) -> "Facts":
    """The facts the decision needs, looked up the same way for a login and for ``twofa-admin``.

    ``now`` is the time of the login; without it (0) no client is trusted.
    """
    from pam_twofa.core.decision import Facts

    wanted = policy.exempt_groups + (policy.enforce_groups if policy.mode == "groups" else ())
    trusted_until = 0
    if policy.trust_seconds and record is not None and record.trusted:
        from pam_twofa.core.trust import until

        trusted_until = until(record, rhost)
    # Only a policy that names groups needs the user's supplementary groups.
    return Facts(
        account.name,
        account.gid,
        account.gids if wanted else {account.gid},
        group_ids(wanted) if wanted else {},
        rhost,
        record is not None and record.enrolled,
        trusted_until,
        record.locked_until if record is not None else 0,
        now,
        account.groups_known if wanted else True,
    )
