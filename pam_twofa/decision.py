"""Who is asked for a code: the four steps of SPEC §3 (pure: no I/O).

The caller looks up the facts (group ids, client address, enrollment) and
passes them in; ``decide`` returns what to do and the rule that decided it,
which ``twofa-admin explain`` prints and syslog records.
"""

SKIP = "skip"  # not asked: steps 1 and 4
TOTP = "totp"  # ask for the authenticator (or recovery) code: step 2
EMAIL = "email"  # enforced, not enrolled, unenrolled: email: step 3
DENY = "deny"  # enforced, not enrolled, unenrolled: deny: step 3


class Facts:
    """What the adapter found out about the login, for the decision."""

    __slots__ = ("user", "primary_gid", "gids", "group_ids", "rhost", "enrolled")

    def __init__(self, user, primary_gid, gids, group_ids, rhost, enrolled) -> None:
        self.user = user
        self.primary_gid = primary_gid  # int
        self.gids = gids  # set of ints: primary and supplementary
        self.group_ids = group_ids  # {policy group name: gid or None if no such group}
        self.rhost = rhost  # PAM_RHOST as given (may be None or a hostname)
        self.enrolled = enrolled


# Which rule decided, for code (``rule`` is display text for people and syslog).
EXEMPT_USER = "exempt user"
EXEMPT_GROUP = "exempt group"
EXEMPT_NETWORK = "exempt network"
ENROLLED = "enrolled"
ENFORCED = "enforced"
NOT_ENFORCED = "not enforced"
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


def _member(facts: Facts, groups) -> str | None:
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


def decide(policy, facts: Facts) -> Decision:
    if facts.user in policy.exempt_users:
        return Decision(SKIP, EXEMPT_USER, f"exempt: user {facts.user} is listed in exempt.users")
    group = _member(facts, policy.exempt_groups)
    if group:
        return Decision(SKIP, EXEMPT_GROUP, f"exempt: member of group {group} listed in exempt.groups")
    if policy.exempt_networks:
        from pam_twofa.network import parse_address

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
        return Decision(TOTP, ENROLLED, "asked: enrolled in TOTP (enrolled users are always asked)")
    if policy.mode == "all":
        why = "enforced: enforce.mode is all"
    elif policy.mode == "groups":
        group = _member(facts, policy.enforce_groups)
        why = f"enforced: member of group {group} matched enforce.groups" if group else None
    else:
        why = None
    if why is None:
        return Decision(SKIP, NOT_ENFORCED, f"not asked: not enrolled and not enforced (enforce.mode is {policy.mode})")
    if policy.unenrolled == "email":
        return Decision(EMAIL, ENFORCED, why + "; not enrolled, so a code is emailed (enforce.unenrolled: email)")
    return Decision(DENY, ENFORCED, why + "; not enrolled and enforce.unenrolled is deny")
