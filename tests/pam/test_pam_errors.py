"""Bad input through the real PAM stack (docs/login.md, Bad input): broken policy, broken state,
unknown users, malformed codes. Each fails closed with a clear message, and
no traceback reaches the output or syslog (the harness checks every call).
"""

import os

import pytest
from pam_harness import KEY, MSG_BAD, MSG_ERROR, PAM_PERMIT, STACKS

pytestmark = pytest.mark.pam

# --- broken policy ----------------------------------------------------------------

BROKEN_POLICIES = {
    # id: (text, the line the error is on, what the message names)
    "yaml-syntax-error": (
        "version: 1\n"
        "enforce:\n"
        "  mode: off\n"
        "exempt:\n"
        "  users: []\n"
        "  groups: [ops]: oops\n"
        "storage:\n"
        "  state_dir: {state}\n",
        6,
        "YAML syntax error",
    ),
    "yaml-tab": (
        "version: 1\nenforce:\n  mode: off\n\tgroups: []\nstorage:\n  state_dir: {state}\n",
        4,
        "YAML syntax error",
    ),
    "unknown-key": (
        "version: 1\n"
        "enforce:\n"
        "  mode: off\n"
        "exempt:\n"
        "  users: []\n"
        "  groups: []\n"
        "  colour: blue\n"
        "storage:\n"
        "  state_dir: {state}\n",
        7,
        "exempt.colour",
    ),
}


@pytest.mark.parametrize("kind", BROKEN_POLICIES)
def test_broken_policy_fails_closed_and_names_file_and_line(scratch, policy, kind):
    text, line, what = BROKEN_POLICIES[kind]
    alice = scratch.enroll("alice")  # under a valid policy
    code = alice.code()
    # Control: with the valid policy, frank (not enrolled, mode off) gets in.
    assert scratch.login(KEY, "frank").ok

    policy.text(text.format(state=scratch.state_dir))
    where = f"{scratch.policy_path}:{line}:"

    check = scratch.cli("check")
    assert check.rc != 0, str(check)
    messages = [m.strip() for m in check.output.splitlines() if m.strip().startswith(where)]
    assert messages, f"twofa-admin check does not name {where}:\n{check.output}"
    assert any(what in m for m in messages), str(check)
    assert "Traceback" not in check.output

    for stack in STACKS:
        for user, answer in (("alice", code), ("frank", None)):
            result = scratch.login(stack, user, answer)
            assert result.denied, str(result)
            assert MSG_ERROR in result.output, str(result)
            assert not result.prompted, str(result)
            # the same file:line message as twofa-admin check, in syslog for the admin
            assert any(m in line for m in messages for line in result.syslog), (messages, result)
            assert result.log_with(f"user={user}", "error: policy"), str(result)

    # Repaired: logins work again, and the code was not consumed by the refused attempts.
    policy()
    assert scratch.cli("check").rc == 0
    again = scratch.login(KEY, "alice", code)
    assert again.ok, str(again)


# --- an empty, version-less or truncated policy ---------------------------------------

NO_VERSION = {
    # id: text written verbatim (an accidental `> policy.yaml`, a half-written file...)
    "empty": "",
    "comments-only": "# pam-twofa policy\n# version: 1\n",
    "null": "~\n",
    "version-less": "enforce:\n  mode: off\nstorage:\n  state_dir: {state}\n",
    "truncated-at-1": "v",
    "truncated-at-9": "version: ",
}


@pytest.mark.parametrize("kind", NO_VERSION)
def test_empty_or_versionless_policy_applies_on_error(scratch, kind):
    """Refused, never read as "all defaults" (2FA off): deny by default, allowed with on_error=allow."""
    alice = scratch.enroll("alice")
    code = alice.code()
    allow = "twofa-key-allow"  # the key stack, with the module option on_error=allow
    (scratch.service_dir / allow).write_text(f"{scratch.auth_line} on_error=allow\nauth required {PAM_PERMIT}\n")
    # Control, under the valid policy (mode off): frank gets in, alice is asked for her code.
    assert scratch.login(KEY, "frank").ok
    assert scratch.pamtester(allow, "frank").ok
    assert scratch.pamtester(allow, "alice").prompted

    scratch.write_policy_text(NO_VERSION[kind].format(state=scratch.state_dir), verbatim=True)
    check = scratch.cli("check")
    assert check.rc == 2, str(check)
    assert f"{scratch.policy_path}:1: " in check.output, str(check)
    if not kind.startswith("truncated"):
        assert f'{scratch.policy_path}:1: version: missing; add "version: 1" as the first line' in check.output

    for stack in STACKS:
        for user, answer in (("alice", code), ("frank", None)):
            result = scratch.login(stack, user, answer)
            assert result.denied, str(result)
            assert MSG_ERROR in result.output and not result.prompted, str(result)
            assert result.log_with(f"user={user}", "error: policy", f"{scratch.policy_path}:1:"), str(result)
    for user in ("alice", "frank"):
        result = scratch.pamtester(allow, user)
        assert result.ok and not result.prompted, str(result)
        assert result.log_with(f"user={user}", "allowed without a code"), str(result)

    # Repaired: alice is asked again, and her code was not consumed by the refused attempts.
    scratch.write_policy()
    assert scratch.login(KEY, "alice", code).ok


# --- broken state ------------------------------------------------------------------


def _corrupt(path, kind):
    if kind == "garbage-binary":
        path.write_bytes(b"\x00\xff\xfeGARBAGE\x89PNG\r\n\x1a\n" + bytes(range(256)))
    elif kind == "garbage-text":
        path.write_text("hello, I am not a pam-twofa record\nkey = value\n")
    elif kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-at-end":
        data = path.read_bytes()
        path.write_bytes(data[: data.rindex(b"end")])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "symlink":
        elsewhere = path.parent.parent / "elsewhere.rec"
        os.rename(path, elsewhere)  # a valid record, root-owned 0600: only the link is wrong
        os.symlink(elsewhere, path)
    else:
        raise AssertionError(kind)


STATE_FAULTS = {
    "garbage-binary": "corrupted",
    "garbage-text": "corrupted",
    "truncated": "corrupted",
    "truncated-at-end": "corrupted",
    "empty": "corrupted",
    "symlink": "link",
}


@pytest.mark.parametrize("fault", STATE_FAULTS)
def test_broken_state_file_fails_closed(scratch, fault):
    alice = scratch.enroll("alice")
    path = scratch.record_path("alice")
    original = path.read_bytes()
    _corrupt(path, fault)
    broken = path.read_bytes() if not path.is_symlink() else None
    code = alice.code()
    for stack in STACKS:
        result = scratch.login(stack, "alice", code)
        assert result.denied, str(result)
        assert MSG_ERROR in result.output, str(result)
        assert result.log_with("user=alice", str(path), STATE_FAULTS[fault]), str(result)
    # Nothing was rewritten behind the admin's back.
    if fault == "symlink":
        assert path.is_symlink()
        assert (path.parent.parent / "elsewhere.rec").read_bytes() == original
        path.unlink()
    else:
        assert path.read_bytes() == broken
    path.write_bytes(original)
    os.chmod(path, 0o600)
    repaired = scratch.login(KEY, "alice", code)
    assert repaired.ok, str(repaired)


@pytest.mark.parametrize("stack", STACKS)
def test_unknown_user_is_asked_and_refused(scratch, stack):
    scratch.enroll("alice")
    result = scratch.login(stack, "nosuchuser", "123456")
    assert result.denied, str(result)
    assert result.prompted, result  # asked anyway: the answer must not reveal which accounts exist
    assert MSG_BAD in result.output, str(result)
    assert result.log_with("user=nosuchuser", "unknown user"), str(result)
    assert not (scratch.state_dir / "users" / "nosuchuser.rec").exists()


# --- malformed codes -----------------------------------------------------------------

FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")

BAD_CODES = {
    "empty": lambda code: "",
    "non-numeric": lambda code: "abcdef",
    "letters-in-code": lambda code: code[:3] + "x" + code[4:],
    "10000-chars": lambda code: code + "0" * (10_000 - len(code)),
    "10000-chars-nonnumeric": lambda code: "x" * 10_000,
    "fullwidth-digits": lambda code: code.translate(FULLWIDTH),
    "arabic-indic-digits": lambda code: code.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
    "invalid-utf8": lambda code: b"\xff\xfe" + code.encode(),
}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("kind", BAD_CODES)
def test_malformed_code_is_refused_with_a_clear_message(scratch, stack, kind):
    alice = scratch.enroll("alice")
    code = alice.code()
    bad = BAD_CODES[kind](code)
    result = scratch.login(stack, "alice", bad)
    assert result.denied, str(result)
    assert result.prompted, str(result)
    assert MSG_BAD in result.output, str(result)
    assert result.log_with("user=alice", "bad code"), str(result)
    # The account still works with the real code: the bad answer was only a failure.
    good = scratch.login(stack, "alice", code)
    assert good.ok, str(good)
