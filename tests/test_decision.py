"""pam_twofa.core.decision: the four steps of docs/policy.md, table-driven, with plain Facts (no system lookups)."""

from __future__ import annotations

import pytest

from pam_twofa.core.decision import DENY, EMAIL, ERROR, SKIP, TOTP, UNRESOLVED_GROUP, Facts, decide, unresolved_groups
from pam_twofa.policy import Policy

PATH = "/etc/pam-twofa/policy.yaml"

# gids of the groups in these tests
WHEEL, STAFF, DEV, OPS, BACKUP, USERS = 10, 50, 1001, 1002, 34, 100

GROUP_IDS = {
    "wheel": WHEEL,
    "staff": STAFF,
    "dev": DEV,
    "ops": OPS,
    "backup": BACKUP,
    "ghost": None,  # in the policy, but the system has no such group
}


def facts(
    user="alice",
    primary=USERS,
    supplementary=(),
    rhost="203.0.113.9",
    enrolled=False,
    group_ids=None,
    groups_known=True,
):
    return Facts(
        user,
        primary,
        {primary, *supplementary},
        dict(GROUP_IDS if group_ids is None else group_ids),
        rhost,
        enrolled,
        groups_known=groups_known,
    )


def policy(**values):
    return Policy(PATH, **values)


NOT_ENFORCED = "not asked: not enrolled and not enforced (enforce.mode is {mode})"
UNRESOLVED = (
    "error: enforce.groups {names} cannot be resolved (no such group, or the group database is not answering):"
    " membership is unknown, so on_error applies"
)
ENROLLED = "asked: enrolled in TOTP (enrolled users are always asked)"
EMAIL_TAIL = "; not enrolled, so a code is emailed (enforce.unenrolled: email)"
DENY_TAIL = "; not enrolled and enforce.unenrolled is deny"

CASES = [
    # --- step 1: exempt user, group (primary / supplementary), network -------------
    (
        "exempt-user",
        dict(mode="all", exempt_users=("bob", "alice")),
        dict(enrolled=True),
        SKIP,
        "exempt: user alice is listed in exempt.users",
    ),
    (
        "exempt-user-exact-name-only",
        dict(mode="all", unenrolled="deny", exempt_users=("alic", "alice2", "ALICE")),
        dict(),
        DENY,
        "enforced: enforce.mode is all" + DENY_TAIL,
    ),
    (
        "exempt-group-primary",
        dict(mode="all", exempt_groups=("backup",)),
        dict(primary=BACKUP, enrolled=True),
        SKIP,
        "exempt: member of group backup (primary) listed in exempt.groups",
    ),
    (
        "exempt-group-supplementary",
        dict(mode="all", exempt_groups=("dev", "backup")),
        dict(supplementary=(STAFF, BACKUP), enrolled=True),
        SKIP,
        "exempt: member of group backup (supplementary) listed in exempt.groups",
    ),
    (
        "exempt-group-first-listed-wins",
        dict(mode="all", exempt_groups=("staff", "backup")),
        dict(supplementary=(STAFF, BACKUP)),
        SKIP,
        "exempt: member of group staff (supplementary) listed in exempt.groups",
    ),
    (
        "exempt-group-not-a-member",
        dict(mode="all", exempt_groups=("backup",)),
        dict(supplementary=(STAFF,)),
        EMAIL,
        "enforced: enforce.mode is all" + EMAIL_TAIL,
    ),
    (
        "exempt-group-ghost-matches-nobody",
        dict(mode="all", unenrolled="deny", exempt_groups=("ghost",)),
        dict(),
        DENY,
        "enforced: enforce.mode is all" + DENY_TAIL,
    ),
    (
        "exempt-group-ghost-even-with-gid-none-in-gids",
        dict(mode="all", unenrolled="deny", exempt_groups=("ghost",)),
        dict(primary=None, supplementary=(None,)),
        DENY,
        "enforced: enforce.mode is all" + DENY_TAIL,
    ),
    (
        "exempt-group-missing-from-lookup",
        dict(mode="all", unenrolled="deny", exempt_groups=("nolookup",)),
        dict(),
        DENY,
        "enforced: enforce.mode is all" + DENY_TAIL,
    ),
    (
        "exempt-network-ipv4",
        dict(mode="all", exempt_networks=("192.168.0.0/16", "10.0.0.0/8")),
        dict(rhost="10.1.2.3", enrolled=True),
        SKIP,
        "exempt: client 10.1.2.3 is in network 10.0.0.0/8 (exempt.networks)",
    ),
    (
        "exempt-network-ipv6-zone",
        dict(mode="all", exempt_networks=("fe80::/10",)),
        dict(rhost="fe80::1%eth0", enrolled=True),
        SKIP,
        "exempt: client fe80::1%eth0 is in network fe80::/10 (exempt.networks)",
    ),
    (
        "exempt-network-ipv4-mapped",
        dict(mode="all", exempt_networks=("10.0.0.0/8",)),
        dict(rhost="::ffff:10.0.0.1"),
        SKIP,
        "exempt: client ::ffff:10.0.0.1 is in network 10.0.0.0/8 (exempt.networks)",
    ),
    (
        "exempt-network-single-address",
        dict(mode="all", exempt_networks=("198.51.100.4",)),
        dict(rhost="198.51.100.4"),
        SKIP,
        "exempt: client 198.51.100.4 is in network 198.51.100.4 (exempt.networks)",
    ),
    (
        "exempt-network-outside",
        dict(mode="all", exempt_networks=("10.0.0.0/8",)),
        dict(rhost="11.0.0.1", enrolled=True),
        TOTP,
        ENROLLED,
    ),
    (
        "exempt-network-hostname-matches-nothing",
        dict(mode="all", unenrolled="deny", exempt_networks=("0.0.0.0/0", "::/0")),
        dict(rhost="trusted.example.com"),
        DENY,
        "enforced: enforce.mode is all" + DENY_TAIL,
    ),
    (
        "exempt-network-hostname-that-looks-like-a-network",
        dict(mode="all", exempt_networks=("10.0.0.0/8",)),
        dict(rhost="10.0.0.1.example.com", enrolled=True),
        TOTP,
        ENROLLED,
    ),
    (
        "exempt-network-missing-rhost",
        dict(mode="all", exempt_networks=("0.0.0.0/0", "::/0")),
        dict(rhost=None, enrolled=True),
        TOTP,
        ENROLLED,
    ),
    (
        "exempt-network-empty-rhost",
        dict(mode="all", exempt_networks=("0.0.0.0/0", "::/0")),
        dict(rhost="", enrolled=True),
        TOTP,
        ENROLLED,
    ),
    (
        "exempt-network-ipv4-client-ipv6-network",
        dict(mode="all", unenrolled="deny", exempt_networks=("::/0",)),
        dict(rhost="10.0.0.1"),
        DENY,
        "enforced: enforce.mode is all" + DENY_TAIL,
    ),
    (
        "exempt-beats-enrolled-and-mode-off",
        dict(mode="off", exempt_users=("alice",)),
        dict(enrolled=True),
        SKIP,
        "exempt: user alice is listed in exempt.users",
    ),
    (
        "exempt-user-checked-before-groups",
        dict(mode="all", exempt_users=("alice",), exempt_groups=("backup",)),
        dict(primary=BACKUP),
        SKIP,
        "exempt: user alice is listed in exempt.users",
    ),
    (
        "exempt-group-checked-before-network",
        dict(mode="all", exempt_groups=("backup",), exempt_networks=("10.0.0.0/8",)),
        dict(primary=BACKUP, rhost="10.0.0.1"),
        SKIP,
        "exempt: member of group backup (primary) listed in exempt.groups",
    ),
    # --- step 2: enrolled users are always asked ------------------------------------
    ("enrolled-mode-off", dict(mode="off"), dict(enrolled=True), TOTP, ENROLLED),
    (
        "enrolled-mode-groups-not-member",
        dict(mode="groups", enforce_groups=("ops",)),
        dict(enrolled=True),
        TOTP,
        ENROLLED,
    ),
    ("enrolled-mode-all", dict(mode="all", unenrolled="deny"), dict(enrolled=True), TOTP, ENROLLED),
    # --- step 3: enforced and not enrolled -> email or deny ---------------------------
    ("all-email", dict(mode="all"), dict(), EMAIL, "enforced: enforce.mode is all" + EMAIL_TAIL),
    ("all-deny", dict(mode="all", unenrolled="deny"), dict(), DENY, "enforced: enforce.mode is all" + DENY_TAIL),
    (
        "groups-primary-email",
        dict(mode="groups", enforce_groups=("ops",)),
        dict(primary=OPS),
        EMAIL,
        "enforced: member of group ops (primary) matched enforce.groups" + EMAIL_TAIL,
    ),
    (
        "groups-supplementary-deny",
        dict(mode="groups", enforce_groups=("dev", "ops"), unenrolled="deny"),
        dict(supplementary=(WHEEL, OPS)),
        DENY,
        "enforced: member of group ops (supplementary) matched enforce.groups" + DENY_TAIL,
    ),
    (
        "groups-primary-named-even-if-also-listed-later",
        dict(mode="groups", enforce_groups=("dev", "ops")),
        dict(primary=DEV, supplementary=(OPS,)),
        EMAIL,
        "enforced: member of group dev (primary) matched enforce.groups" + EMAIL_TAIL,
    ),
    (
        "groups-ghost-first-then-real",
        dict(mode="groups", enforce_groups=("ghost", "wheel"), unenrolled="deny"),
        dict(supplementary=(WHEEL,)),
        DENY,
        "enforced: member of group wheel (supplementary) matched enforce.groups" + DENY_TAIL,
    ),
    # --- step 4: not enforced -> no code -----------------------------------------------
    ("off-not-enrolled", dict(mode="off"), dict(), SKIP, NOT_ENFORCED.format(mode="off")),
    (
        "off-deny-still-skip",
        dict(mode="off", unenrolled="deny"),
        dict(primary=OPS),
        SKIP,
        NOT_ENFORCED.format(mode="off"),
    ),
    (
        "groups-not-member",
        dict(mode="groups", enforce_groups=("ops", "dev"), unenrolled="deny"),
        dict(supplementary=(WHEEL, STAFF)),
        SKIP,
        NOT_ENFORCED.format(mode="groups"),
    ),
    (
        # An enforce group that does not resolve is no proof of "not a member" (issue 12): on_error applies.
        "groups-ghost-is-an-error-not-not-a-member",
        dict(mode="groups", enforce_groups=("ghost",), unenrolled="deny"),
        dict(primary=None, supplementary=(None,)),
        ERROR,
        UNRESOLVED.format(names="ghost"),
    ),
    (
        "groups-ghost-beside-a-real-group-the-user-is-not-in",
        dict(mode="groups", enforce_groups=("ops", "ghost", "dev"), unenrolled="email"),
        dict(supplementary=(WHEEL,)),
        ERROR,
        UNRESOLVED.format(names="ghost"),
    ),
    (
        "groups-empty-list",
        dict(mode="groups", enforce_groups=(), unenrolled="deny"),
        dict(primary=OPS),
        SKIP,
        NOT_ENFORCED.format(mode="groups"),
    ),
    (
        "groups-listed-but-mode-all-groups-ignored",
        dict(mode="all", enforce_groups=("ops",)),
        dict(),
        EMAIL,
        "enforced: enforce.mode is all" + EMAIL_TAIL,
    ),
    (
        "groups-listed-but-mode-off",
        dict(mode="off", enforce_groups=("ops",), unenrolled="deny"),
        dict(primary=OPS),
        SKIP,
        NOT_ENFORCED.format(mode="off"),
    ),
    (
        "group-name-is-not-user-name",
        dict(mode="groups", enforce_groups=("alice",), unenrolled="deny"),
        dict(group_ids={"alice": None}),
        ERROR,
        UNRESOLVED.format(names="alice"),
    ),
]


@pytest.mark.parametrize("name, policy_values, fact_values, action, rule", CASES, ids=[c[0] for c in CASES])
def test_decision_table(name, policy_values, fact_values, action, rule):
    decision = decide(policy(**policy_values), facts(**fact_values))
    assert (decision.action, decision.rule) == (action, rule)


def test_default_policy_asks_nobody_unenrolled_and_every_enrolled():
    default = Policy(PATH)
    assert default.mode == "off" and default.unenrolled == "email"
    assert decide(default, facts()).action == SKIP
    assert decide(default, facts(enrolled=True)).action == TOTP


@pytest.mark.parametrize(
    "rhost, expected",
    [
        ("10.0.0.1", SKIP),
        ("::ffff:10.0.0.1", SKIP),
        ("2001:db8::5", SKIP),
        ("2001:db8:1::5%eth0", SKIP),
        ("2001:db9::5", DENY),
        ("11.0.0.1", DENY),
        ("::ffff:11.0.0.1", DENY),
        ("::a00:1", DENY),  # IPv4-compatible, not mapped: not in 10.0.0.0/8
        ("10.0.0.1 ", DENY),
        ("10.0.0.1/8", DENY),
        ("gateway", DENY),
        ("", DENY),
        (None, DENY),
        ("１０.0.0.1", DENY),
    ],
)
def test_network_exemption_by_client(rhost, expected):
    pol = policy(mode="all", unenrolled="deny", exempt_networks=("10.0.0.0/8", "2001:db8::/32"))
    assert decide(pol, facts(rhost=rhost)).action == expected


def test_networks_are_parsed_once_and_reused():
    pol = policy(mode="all", exempt_networks=("10.0.0.0/8",))
    first = pol.networks()
    assert [n.text for n in first] == ["10.0.0.0/8"]
    decide(pol, facts(rhost="10.0.0.1"))
    assert pol.networks() is first


def test_policy_rejects_unknown_fields():
    with pytest.raises(TypeError):
        Policy(PATH, mode="all", enforce_group=("ops",))


def test_policy_lists_become_tuples():
    pol = policy(enforce_groups=["ops"], exempt_users=["bob"], exempt_networks=["10.0.0.0/8"])
    assert pol.enforce_groups == ("ops",)
    assert pol.exempt_users == ("bob",)
    assert pol.exempt_networks == ("10.0.0.0/8",)


def test_decision_repr_names_action_and_rule():
    decision = decide(policy(mode="all"), facts())
    assert repr(decision) == f"Decision('email', 'enforced', {decision.rule!r})"


def test_every_decision_has_a_kind_that_matches_its_rule():
    from pam_twofa.core import decision as module

    cases = [
        (policy(exempt_users=("alice",)), facts(), module.EXEMPT_USER, True),
        (policy(mode="all"), facts(enrolled=True), module.ENROLLED, False),
        (policy(mode="all"), facts(), module.ENFORCED, False),
        (policy(mode="off"), facts(), module.NOT_ENFORCED, False),
    ]
    for pol, fact, kind, exempt in cases:
        decision = decide(pol, fact)
        assert decision.kind == kind and decision.exempt is exempt, decision


# --- groups that do not resolve (a typo, or NSS/SSSD/LDAP not answering; issue 12) ----------------


def test_an_unresolved_enforce_group_comes_after_exempt_users_and_networks():
    """An outage must not lock out break-glass accounts exempted by name or network."""
    pol = policy(mode="groups", enforce_groups=("ghost",), exempt_users=("root",), exempt_networks=("10.0.0.0/8",))
    assert decide(pol, facts(user="root")).action == SKIP
    assert decide(pol, facts(rhost="10.1.2.3")).action == SKIP
    outage = decide(pol, facts())
    assert (outage.action, outage.kind, outage.exempt) == (ERROR, UNRESOLVED_GROUP, False)


def test_an_unresolved_enforce_group_still_asks_an_enrolled_user_and_enforces_a_member():
    pol = policy(mode="groups", enforce_groups=("ghost", "ops"), unenrolled="deny")
    assert decide(pol, facts(enrolled=True)).action == TOTP  # asked anyway: nothing to decide
    assert decide(pol, facts(supplementary=(OPS,))).action == DENY  # a member of a resolved group is enforced


def test_unresolved_groups_matter_only_in_groups_mode():
    for mode, action in (("all", EMAIL), ("off", SKIP)):
        assert decide(policy(mode=mode, enforce_groups=("ghost",)), facts()).action == action


def test_an_unreadable_group_list_is_an_error_unless_membership_is_known():
    pol = policy(mode="groups", enforce_groups=("ops",), unenrolled="deny")
    decision = decide(pol, facts(groups_known=False))
    assert decision.action == ERROR and "getgrouplist failed" in decision.rule
    assert decide(pol, facts(primary=OPS, groups_known=False)).action == DENY  # the primary group is known
    assert decide(pol, facts(groups_known=True)).action == SKIP


def test_an_unresolved_exempt_group_exempts_nobody_and_is_reported():
    pol = policy(mode="all", exempt_groups=("ghost", "wheel"), enforce_groups=("ghost2",))
    assert decide(pol, facts()).action == EMAIL
    assert unresolved_groups(pol, facts(group_ids={"ghost": None, "wheel": WHEEL})) == ([], ["ghost"])
    pol = policy(mode="groups", enforce_groups=("ops", "nope"), exempt_groups=("gone",))
    assert unresolved_groups(pol, facts(group_ids={"ops": OPS})) == (["nope"], ["gone"])
