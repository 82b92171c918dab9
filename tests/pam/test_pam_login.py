"""Codes, replay, lockout and enforcement through the real PAM stack (pamtester + pam_python).

Both stacks of docs/login.md: password (pam_matrix) then code, and code then
pam_permit (the SSH key was the first factor). Codes come from oathtool.
"""

import pytest
from pam_harness import KEY, MSG_BAD, MSG_LOCKED, MSG_REPLAYED, PW, STACKS

pytestmark = pytest.mark.pam


@pytest.mark.parametrize("stack", STACKS)
def test_correct_code_then_wrong_code_then_replayed_code(scratch, stack):
    alice = scratch.enroll("alice")
    code = alice.code()

    first = scratch.login(stack, "alice", code)
    assert first.ok, str(first)
    assert first.prompted, str(first)
    assert first.log_with("user=alice", "result=success", f"pam_twofa({stack}:auth)"), str(first)

    wrong = scratch.login(stack, "alice", alice.wrong_code())
    assert wrong.denied, str(wrong)
    assert MSG_BAD in wrong.output, str(wrong)
    assert wrong.log_with("user=alice", "result=bad code"), str(wrong)

    again = scratch.login(stack, "alice", code)
    assert again.denied, str(again)
    assert MSG_REPLAYED in again.output, str(again)
    assert again.log_with("user=alice", "replayed code"), str(again)
    assert not again.log_with("result=success"), str(again)


def test_password_stack_needs_the_password_too(scratch):
    """A correct code does not make up for a wrong password: the module never grants on its own."""
    alice = scratch.enroll("alice")
    result = scratch.login(PW, "alice", alice.code(), password="not-the-password")
    assert result.denied, str(result)


@pytest.mark.parametrize("stack", STACKS)
def test_lockout_refuses_correct_code_until_admin_unlock(scratch, stack):
    # the policy of every test: rate_limit.max_failures: 3
    bob = scratch.enroll("bob")
    for attempt in range(3):
        result = scratch.login(stack, "bob", bob.wrong_code(salt=attempt))
        assert result.denied, str(result)
        assert result.log_with("user=bob", "bad code"), str(result)
    assert MSG_LOCKED in result.output, result  # the third failure locks the account
    assert result.log_with("user=bob", "now locked"), str(result)

    code = bob.code()
    locked = scratch.login(stack, "bob", code)
    assert locked.denied, str(locked)
    assert MSG_LOCKED in locked.output, str(locked)
    assert "twofa-admin unlock bob" in locked.output, str(locked)
    assert locked.log_with("user=bob", "result=locked"), str(locked)

    still = scratch.login(stack, "bob", code)
    assert still.denied and MSG_LOCKED in still.output, str(still)

    unlock = scratch.cli("unlock", "bob")
    assert unlock.rc == 0, str(unlock)
    assert "unlocked" in unlock.output, str(unlock)

    after = scratch.login(stack, "bob", code)
    assert after.ok, str(after)
    assert after.log_with("user=bob", "result=success"), str(after)


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("user,membership", [("alice", "supplementary"), ("erin", "primary")])
def test_enforced_unenrolled_user_is_refused_with_deny(scratch, policy, stack, user, membership):
    policy(mode="groups", groups=["staff"], unenrolled="deny")
    result = scratch.login(stack, user)
    assert result.denied, str(result)
    assert "twofa-enroll" in result.output, str(result)
    assert not result.prompted, str(result)
    assert result.log_with(f"user={user}", "denied: not enrolled", f"staff ({membership})"), str(result)


@pytest.mark.parametrize("stack", STACKS)
def test_enforced_user_who_enrolled_is_asked_and_accepted(scratch, policy, stack):
    """Control for the test above: the same policy lets an enrolled member in with a code."""
    policy(mode="groups", groups=["staff"], unenrolled="deny")
    alice = scratch.enroll("alice")
    result = scratch.login(stack, "alice", alice.code())
    assert result.ok and result.prompted, str(result)


def test_key_stack_without_an_answer_fails(scratch):
    """An enrolled user who answers nothing (conversation ends) is refused, not let through."""
    scratch.enroll("alice")
    result = scratch.pamtester(KEY, "alice", [])
    assert result.denied and result.prompted, str(result)
