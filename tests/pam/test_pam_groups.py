"""Policy groups that do not resolve (issue 12), through the real pam_python.so with nss_wrapper.

A group named in ``enforce.groups`` that the group database does not return
(a typo, or SSSD/LDAP not answering: NSS gives the same "no such group") is
no proof that the user is not a member: with ``mode: groups`` the login
applies ``on_error`` (default deny) and syslog names the group. Exempt users
and networks are decided first, so an outage never locks out a break-glass
account. An exempt group that does not resolve exempts nobody (a warning).

The outage is nss_wrapper with a group file that lacks the group, or with
``NSS_WRAPPER_GROUP`` naming a file that does not exist (every group lookup
fails).
"""

from __future__ import annotations

import pytest
from pam_harness import KEY, MSG_ERROR, PW, STACKS

pytestmark = pytest.mark.pam


def login_without_groups(scratch, stack: str, user: str, group_file: str, rhost=None):
    """A login whose NSS has no working group source (``NSS_WRAPPER_GROUP`` -> ``group_file``)."""
    argv, env = scratch._pamtester_command(stack, user, rhost)
    env["NSS_WRAPPER_GROUP"] = group_file
    answers = [scratch.passwords[user]] if stack == PW else []
    stdin = b"".join(a.encode() + b"\n" for a in answers)
    return scratch._checked(scratch.env.run(argv, env, stdin), answers)


@pytest.mark.parametrize("stack", STACKS)
def test_an_enforce_group_absent_from_the_group_database_applies_on_error(scratch, policy, stack):
    policy(mode="groups", groups=["stafff"], unenrolled="deny")  # a typo of staff
    result = scratch.login(stack, "alice")  # not enrolled, in staff: before, "not enforced" let her in
    assert result.denied and MSG_ERROR in result.output, str(result)
    assert not result.prompted, str(result)
    assert result.log_with("user=alice", "result=error: groups", "enforce.groups stafff cannot be resolved"), str(
        result
    )


def test_with_on_error_allow_the_admin_chose_to_let_them_in(scratch, policy):
    policy(mode="groups", groups=["stafff"], unenrolled="deny", on_error="allow")
    result = scratch.login(PW, "alice")
    assert result.ok, str(result)
    assert result.log_with("user=alice", "result=error: groups", "stafff"), str(result)
    assert result.log_with("user=alice", "result=allowed without a code", "on_error: allow"), str(result)


@pytest.mark.parametrize("stack", STACKS)
def test_when_the_group_source_is_down_enforced_users_are_not_let_in(scratch, policy, stack):
    policy(mode="groups", groups=["staff"], unenrolled="deny")
    control = scratch.login(stack, "alice")  # staff resolves: enforced, not enrolled, deny
    assert control.denied and "twofa-enroll" in control.output, str(control)
    missing = str(scratch.root / "no-such-group-file")
    result = login_without_groups(scratch, stack, "alice", missing)
    assert result.denied and MSG_ERROR in result.output, str(result)
    assert result.log_with("user=alice", "result=error: groups", "staff cannot be resolved"), str(result)


def test_an_outage_does_not_lock_out_exempt_users_or_networks(scratch, policy):
    policy(mode="groups", groups=["staff"], unenrolled="deny", exempt_users=["carol"], exempt_networks=["10.0.0.0/8"])
    missing = str(scratch.root / "no-such-group-file")
    by_name = login_without_groups(scratch, PW, "carol", missing)
    assert by_name.ok and not by_name.prompted, str(by_name)
    assert by_name.log_with("user=carol", "result=exempt", "exempt.users"), str(by_name)
    by_network = login_without_groups(scratch, PW, "alice", missing, rhost="10.1.2.3")
    assert by_network.ok and by_network.log_with("user=alice", "result=exempt", "10.0.0.0/8"), str(by_network)
    enrolled = scratch.enroll("bob")  # enrolled users are asked anyway: the outage changes nothing for them
    asked = login_without_groups(scratch, KEY, "bob", missing)
    assert asked.prompted and asked.denied, str(asked)  # no code typed
    assert enrolled.user == "bob"


def test_an_exempt_group_that_does_not_resolve_exempts_nobody_with_a_warning(scratch, policy):
    policy(mode="all", unenrolled="deny", exempt_groups=["opps"])  # a typo of ops
    result = scratch.login(PW, "dave")  # in ops, not enrolled
    assert result.denied and "twofa-enroll" in result.output, str(result)
    assert result.log_with("user=dave", "result=exempt group not found", "exempt.groups opps"), str(result)


def test_check_reports_the_unresolved_groups(scratch, policy):
    policy(mode="groups", groups=["staff", "stafff"], exempt_groups=["opps"])
    check = scratch.cli("check")
    assert check.rc == 2, str(check)
    assert "enforce.groups: group 'stafff' does not resolve on this system" in check.output, str(check)
    assert "on_error (deny)" in check.output, str(check)
    assert "exempt.groups: group 'opps' does not resolve on this system: it exempts nobody" in check.output
    explain = scratch.cli("explain", "frank")
    assert explain.rc == 0 and "decision: error" in explain.output and "stafff" in explain.output, str(explain)
