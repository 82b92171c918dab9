"""Users who are not asked for a code (docs/policy.md steps 1 and 4), in both stacks.

The policy enforces 2FA for everyone with ``unenrolled: deny`` and the exempt
users are ENROLLED, so only the exemption can explain a login without a
code. In the password stack the password still decides: the module never
grants a login on its own.
"""

import pytest
from pam_harness import KEY, PW, STACKS

pytestmark = pytest.mark.pam

EXEMPT_POLICY = dict(
    mode="all",
    unenrolled="deny",
    exempt_users=["carol"],
    exempt_groups=["ops"],
    exempt_networks=["10.0.0.0/8", "2001:db8::/32"],
)

# id: (user, rhost, enrolled, the policy, what the syslog line names)
CASES = {
    "exempt-user": ("carol", None, True, EXEMPT_POLICY, ["exempt", "exempt.users"]),
    "exempt-group-supplementary": ("dave", None, True, EXEMPT_POLICY, ["exempt", "ops (supplementary)"]),
    "exempt-group-primary": ("oscar", None, True, EXEMPT_POLICY, ["exempt", "ops (primary)"]),
    "exempt-network-ipv4": ("alice", "10.1.2.3", True, EXEMPT_POLICY, ["exempt", "10.0.0.0/8", "rhost=10.1.2.3"]),
    "exempt-network-ipv6": ("alice", "2001:db8::7", True, EXEMPT_POLICY, ["exempt", "2001:db8::/32"]),
    "not-enrolled-not-enforced": (
        "frank",
        None,
        False,
        dict(mode="groups", groups=["staff"], unenrolled="deny"),
        ["not asked", "not enrolled and not enforced"],
    ),
}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("case", CASES)
def test_not_asked_for_a_code(scratch, policy, stack, case):
    user, rhost, enrolled, settings, logged = CASES[case]
    policy(**settings)
    if enrolled:
        scratch.enroll(user)
    result = scratch.login(stack, user, rhost=rhost)
    assert result.ok, str(result)
    assert not result.prompted, str(result)
    assert result.log_with(f"user={user}", *logged), str(result)


@pytest.mark.parametrize("case", CASES)
def test_password_stack_wrong_password_still_fails(scratch, policy, case):
    user, rhost, enrolled, settings, _logged = CASES[case]
    policy(**settings)
    if enrolled:
        scratch.enroll(user)
    result = scratch.login(PW, user, password="wrong-password-123", rhost=rhost)
    assert result.denied, str(result)
    assert not result.prompted, str(result)
    right = scratch.login(PW, user, rhost=rhost)  # control: the right password gets in
    assert right.ok, str(right)


@pytest.mark.parametrize("rhost", [None, "192.0.2.1", "11.0.0.1", "2001:db9::1", "gw.example.org", "10.1.2.3.evil"])
def test_not_exempt_is_asked(scratch, policy, rhost):
    """Control: under the same policy, a user with no exemption is asked, whatever the address."""
    policy(**EXEMPT_POLICY)
    alice = scratch.enroll("alice")
    result = scratch.login(KEY, "alice", alice.code(), rhost=rhost)
    assert result.prompted, str(result)
    assert result.ok, str(result)
    assert not result.log_with("exempt"), str(result)


def test_enforced_unenrolled_is_denied_under_the_exempt_policy(scratch, policy):
    """Control: the exempt policy really enforces 2FA for everyone else."""
    policy(**EXEMPT_POLICY)
    result = scratch.login(KEY, "bob", rhost="192.0.2.1")
    assert result.denied, str(result)
    assert "twofa-enroll" in result.output, str(result)
