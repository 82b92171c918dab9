"""Module arguments through real pam_python: a mistyped or malformed argument is a configuration error.

The scratch policy is strict (every account enforced, ``unenrolled: deny``);
the host's default policy (``/etc/pam-twofa/policy.yaml``, if any) must never
stand in for it. The service is the key stack: the module's line, then
pam_permit, so the module's answer alone decides.
"""

import pytest
from pam_harness import MSG_ERROR, PAM_PERMIT

pytestmark = pytest.mark.pam

SERVICE = "twofa-opts"
LOG_AUTHPRIV_ERR = "<83>"  # facility authpriv (10) * 8 + LOG_ERR (3)


def service(scratch, *args, policy=True):
    line = scratch.module_line(*args, policy=policy)
    (scratch.service_dir / SERVICE).write_text(f"{line}\nauth required {PAM_PERMIT}\n")
    return line


@pytest.fixture
def strict(scratch, policy):
    policy(mode="all", unenrolled="deny")
    # Control: the named strict policy refuses frank (enforced, not enrolled).
    service(scratch)
    result = scratch.pamtester(SERVICE, "frank")
    assert result.denied and result.log_with("user=frank", "denied: not enrolled"), result
    return scratch


@pytest.mark.parametrize(
    "args, named",
    [
        (("polcy={policy}",), "polcy={policy}"),
        (("policy=relative/path",), "policy=relative/path"),
        (("policy", "=", "{policy}"), "policy"),  # "policy = PATH" in the file: pam splits it in three
        (("policy={policy}", "on_error=maybe"), "on_error=maybe"),
    ],
    ids=["misspelled", "relative", "spaces-around-equals", "bad-on_error"],
)
def test_bad_argument_is_refused_with_on_error_deny_and_named_in_syslog(strict, args, named):
    args = tuple(a.format(policy=strict.policy_path) for a in args)
    named = named.format(policy=strict.policy_path)
    service(strict, *args, policy=False)
    for user in ("frank", "alice"):
        result = strict.pamtester(SERVICE, user)
        assert result.denied, result
        assert MSG_ERROR in result.output and not result.prompted, result
        lines = result.log_with(f"user={user}", "error: module arguments", f"module argument '{named}' is not valid")
        assert len(lines) == 1, result
        assert lines[0].startswith(LOG_AUTHPRIV_ERR), result
        assert f"/etc/pam.d/{SERVICE}" in lines[0], result
        assert not result.log_with("not asked") and not result.log_with("denied: not enrolled"), result


def test_bad_argument_with_a_valid_on_error_allow_is_allowed_without_a_code_and_logged(strict):
    service(strict, f"polcy={strict.policy_path}", "on_error=allow", policy=False)
    result = strict.pamtester(SERVICE, "frank")
    assert result.ok and not result.prompted, result
    assert result.log_with("user=frank", "error: module arguments", f"'polcy={strict.policy_path}'"), result
    assert result.log_with("user=frank", "allowed without a code", "on_error: allow"), result


def test_control_characters_of_an_argument_do_not_reach_syslog(strict):
    # [ ... ] keeps a space and anything else inside one argument
    (strict.service_dir / SERVICE).write_text(
        f"{strict.module_line()} [on_error=deny\x1b[2Jresult=success]\nauth required {PAM_PERMIT}\n"
    )
    result = strict.pamtester(SERVICE, "frank")
    assert result.denied, result
    (line,) = result.log_with("error: module arguments")
    assert "\x1b" not in line and "on_error=deny?[2Jresult=success" in line, result
