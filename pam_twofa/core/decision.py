"""Who is asked for a code: the four steps of docs/policy.md, and trusted clients (pure: no I/O).

The caller looks up the facts (group ids, client address, enrollment) and
passes them in; ``decide`` returns what to do and the rule that decided it,
which ``twofa-admin explain`` prints and syslog records.
"""

SKIP = "skip"  # not asked: steps 1 and 4
TOTP = "totp"  # ask for the authenticator (or recovery) code: step 2
EMAIL = "email"  # enforced, not enrolled, unenrolled: email: step 3
DENY = "deny"  # enforced, not enrolled, unenrolled: deny: step 3
ENROLL = "enroll"  # enforced, not enrolled, unenrolled: enroll: an emailed code, then the app is set up (step 3)
TRUSTED = "trusted"  # would be asked (TOTP or EMAIL), but this client passed a code within trust.seconds
ERROR = "error"  # the facts cannot decide (an enforce group does not resolve): the caller applies on_error

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from typing import Protocol

    from pam_twofa.core.network import Network

    class DecisionPolicy(Protocol):
        """What the decision reads of the policy (pam_twofa.policy.Policy; core imports nothing outside core)."""

        mode: str
        unenrolled: str
        enforce_groups: tuple[str, ...]
        exempt_users: tuple[str, ...]
        exempt_groups: tuple[str, ...]
        exempt_networks: tuple[str, ...]
        trust_seconds: int

        def networks(self) -> list[Network]: ...


class Facts:
    """What the adapter found out about the login, for the decision."""

    __slots__ = (
        "user",
        "primary_gid",
        "gids",
        "group_ids",
        "rhost",
        "enrolled",
        "trusted_until",
        "locked_until",
        "now",
        "groups_known",
    )

    def __init__(
        self,
        user: str,
        primary_gid: int,
        gids: set[int],
        group_ids: "dict[str, int | None]",
        rhost: str | None,
        enrolled: bool,
        trusted_until: int = 0,
        locked_until: int = 0,
        now: float = 0.0,
        groups_known: bool = True,
    ) -> None:
        self.user = user
        self.primary_gid = primary_gid  # int
        self.gids = gids  # set of ints: primary and supplementary
        self.group_ids = group_ids  # {policy group name: gid or None if no such group}
        self.rhost = rhost  # PAM_RHOST as given (may be None or a hostname)
        self.enrolled = enrolled
        # Trusted clients: the record's trust for this client's address (0: none), its lockout, and
        # the time of the login (the caller's clock: the decision stays pure).
        self.trusted_until = trusted_until
        self.locked_until = locked_until
        self.now = now
        # False when the user's supplementary groups could not be read (getgrouplist failed): ``gids``
        # then holds the primary group only, and not being in an enforce group proves nothing.
        self.groups_known = groups_known


# Which rule decided, for code (``rule`` is display text for people and syslog).
EXEMPT_USER = "exempt user"
EXEMPT_GROUP = "exempt group"
EXEMPT_NETWORK = "exempt network"
ENROLLED = "enrolled"
ENFORCED = "enforced"
NOT_ENFORCED = "not enforced"
TRUSTED_CLIENT = "trusted client"
UNRESOLVED_GROUP = "unresolved group"
EXEMPT_KINDS = (EXEMPT_USER, EXEMPT_GROUP, EXEMPT_NETWORK)


class Decision:
    __slots__ = ("action", "kind", "rule")

    def __init__(self, action: str, kind: str, rule: str) -> None:
        self.action = action
        self.kind = kind
        self.rule = rule

    @property
    def exempt(self) -> bool:
        return self.kind in EXEMPT_KINDS

    def __repr__(self) -> str:
        return f"Decision({self.action!r}, {self.kind!r}, {self.rule!r})"


def _member(facts: Facts, groups: "tuple[str, ...]") -> str | None:
    """The first of ``groups`` the user belongs to, with how (primary or supplementary)."""
    for name in groups:
        gid = facts.group_ids.get(name)
        if gid is None:
            continue
        if gid == facts.primary_gid:
            return f"{name} (primary)"
        if gid in facts.gids:
            return f"{name} (supplementary)"
    return None


def unresolved_groups(policy: "DecisionPolicy", facts: Facts) -> tuple[list[str], list[str]]:
    """(enforce groups, exempt groups) of the policy that did not resolve to a gid on this system."""
    enforce = [name for name in policy.enforce_groups if facts.group_ids.get(name) is None]
    exempt = [name for name in policy.exempt_groups if facts.group_ids.get(name) is None]
    return (enforce if policy.mode == "groups" else []), exempt


def _unless_trusted(policy: "DecisionPolicy", facts: Facts, asked: Decision) -> Decision:
    """``asked``, or TRUSTED when this client passed a code within ``trust.seconds`` and the user is not locked.

    Only a login that would be asked is trusted: exemptions come first (they
    need no trust), and ``unenrolled: deny`` stays a refusal. A locked user is
    asked, and the code is refused (the lockout must not be skipped).
    """
    if not facts.trusted_until or not policy.trust_seconds:
        return asked
    from pam_twofa.core.trust import applies

    if not applies(facts.trusted_until, policy.trust_seconds, facts.now) or facts.locked_until > facts.now:
        return asked
    left = int(facts.trusted_until - facts.now)
    return Decision(
        TRUSTED,
        TRUSTED_CLIENT,
        f"trusted client: a code was accepted from {facts.rhost} within trust.seconds ({policy.trust_seconds} s);"
        f" not asked for {left} s more (otherwise {asked.rule})",
    )


def decide(policy: "DecisionPolicy", facts: Facts) -> Decision:
    if facts.user in policy.exempt_users:
        return Decision(SKIP, EXEMPT_USER, f"exempt: user {facts.user} is listed in exempt.users")
    group = _member(facts, policy.exempt_groups)
    if group:
        return Decision(SKIP, EXEMPT_GROUP, f"exempt: member of group {group} listed in exempt.groups")
    if policy.exempt_networks:
        from pam_twofa.core.network import parse_address

        address = parse_address(facts.rhost)
        if address is not None:
            for network in policy.networks():
                if network.contains(address):
                    return Decision(
                        SKIP,
                        EXEMPT_NETWORK,
                        f"exempt: client {facts.rhost} is in network {network.text} (exempt.networks)",
                    )
    if facts.enrolled:
        return _unless_trusted(
            policy, facts, Decision(TOTP, ENROLLED, "asked: enrolled in TOTP (enrolled users are always asked)")
        )
    if policy.mode == "all":
        why: str | None = "enforced: enforce.mode is all"
    elif policy.mode == "groups":
        group = _member(facts, policy.enforce_groups)
        why = f"enforced: member of group {group} matched enforce.groups" if group else None
        if why is None:
            # Not found in a group that resolved: when a group or the user's group list cannot be read
            # (a typo, or NSS/SSSD/LDAP not answering) that is no proof of "not a member".
            unresolved, _exempt = unresolved_groups(policy, facts)
            if unresolved:
                names = ", ".join(unresolved)
                return Decision(
                    ERROR,
                    UNRESOLVED_GROUP,
                    f"error: enforce.groups {names} cannot be resolved (no such group, or the group database "
                    f"is not answering): membership is unknown, so on_error applies",
                )
            if not facts.groups_known:
                return Decision(
                    ERROR,
                    UNRESOLVED_GROUP,
                    f"error: the groups of {facts.user} cannot be read (getgrouplist failed): membership of "
                    f"enforce.groups is unknown, so on_error applies",
                )
    else:
        why = None
    if why is None:
        return Decision(SKIP, NOT_ENFORCED, f"not asked: not enrolled and not enforced (enforce.mode is {policy.mode})")
    if policy.unenrolled == "email":
        return _unless_trusted(
            policy,
            facts,
            Decision(EMAIL, ENFORCED, why + "; not enrolled, so a code is emailed (enforce.unenrolled: email)"),
        )
    if policy.unenrolled == "enroll":
        # Never trusted: an address trusted after an emailed code must not skip setting up the app.
        return Decision(
            ENROLL,
            ENFORCED,
            why + "; not enrolled, so a code is emailed, then the authenticator app is set up in the same login"
            " (enforce.unenrolled: enroll)",
        )
    return Decision(DENY, ENFORCED, why + "; not enrolled and enforce.unenrolled is deny")


def requirement(policy: "DecisionPolicy", facts: Facts) -> Decision | None:
    """The decision that requires 2FA of this user whatever their client address, or None when the
    policy lets them turn it off (``twofa-enroll --disable``). ``facts`` are read as not enrolled and
    without a client address: exempt networks do not count, since a login may come from anywhere.
    An ERROR (membership unknown) requires it too: it fails closed."""
    unenrolled = Facts(
        facts.user, facts.primary_gid, facts.gids, facts.group_ids, None, False, groups_known=facts.groups_known
    )
    decision = decide(policy, unenrolled)
    return None if decision.action == SKIP else decision
