"""Hostile input, property-based (hypothesis): the typed code, the user name,
PAM_RHOST, and the policy, google-authenticator and record documents.

Every case ends in a clear result (PASS only for the right code, FAIL or
IGNORE otherwise), never in an exception escaping ``Login.run``; parsers
return their object or raise their own error (PolicyError with
``file:line:`` on every line, GoogleAuthenticatorError, RecordError), never
another exception.
"""

from __future__ import annotations

import ipaddress
import re
import string

import pytest
import yaml
from hardening_helpers import CODE, KEY, VALID_NOW, WRONG, T, World, login, record_text
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pam_twofa.core import recovery
from pam_twofa.core.record import RecordError, loads
from pam_twofa.policy import FIELDS, Policy, PolicyError
from pam_twofa.policy.parse import parse
from pam_twofa.system import accounts, googleauth
from pam_twofa.system.accounts import Account

PASS, FAIL, IGNORE = login.PASS, login.FAIL, login.IGNORE
FAST: dict = dict(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

ANY_CHAR = st.characters(blacklist_categories=())  # every code point, surrogates and controls included
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def single_lines(world: World) -> None:
    """Every log line is one printable line with exactly one `` result=`` field."""
    for _priority, message in world.logs:
        assert message.isprintable(), repr(message)
        assert message.count(" result=") == 1, message


# --- the code ----------------------------------------------------------------------------

JUNK = st.text(
    st.sampled_from(
        [" ", "\t", "\n", "\r", "\0", "\x1b", "\u200b", "\u00a0", "\u3000", "-", "0", "\ufffd", "\u202e", "+", "٣"]
    ),
    max_size=4,
)
CODE_FORMS = st.sampled_from(
    [
        CODE,
        CODE.translate(FULLWIDTH),
        CODE.translate(ARABIC),
        CODE[:3] + " " + CODE[3:],
        CODE[:3] + "-" + CODE[3:],
        CODE[:3] + "\t" + CODE[3:],
        CODE + "0",
        CODE[:-1],
        "0" + CODE,
        CODE[::-1],
        WRONG,
    ]
)
LONG = st.tuples(st.integers(0, 100_000), st.sampled_from([CODE, "0", "x", " ", "\u0661", "\U0001f600"])).map(
    lambda t: (t[1] * (t[0] // len(t[1]) + 1))[: t[0]]
)
TYPED = st.one_of(
    st.text(ANY_CHAR, max_size=80),
    st.tuples(JUNK, CODE_FORMS, JUNK).map("".join),
    LONG,
    st.text(string.digits + " -", min_size=6, max_size=12),
)


def may_pass(typed: str) -> bool:
    """A necessary condition, independent of the module's normalizer: only the
    right code's ASCII digits, in order, with nothing but ASCII blanks and dashes around or between."""
    if any(c not in "0123456789 \t\r\n-" for c in typed):
        return False
    return "".join(c for c in typed if c in string.digits) in VALID_NOW


@settings(max_examples=150, **FAST)
@given(typed=TYPED)
@example(typed=CODE)
@example(typed=f"  {CODE}\n")
@example(typed=CODE[:3] + "\t" + CODE[3:])
@example(typed=CODE.translate(FULLWIDTH))
@example(typed=CODE + "\0")
@example(typed="\0" + CODE)
@example(typed=CODE * 16_667)
@example(typed="")
@example(typed="\ud800" + CODE)
def test_only_the_right_code_passes_and_nothing_raises(world, typed):
    world.enroll("alice")
    world.logs.clear()
    result, conv = world.run("alice", [typed])
    assert result in (PASS, FAIL)
    assert conv.prompts == [login.PROMPT]
    if result == PASS:
        assert may_pass(typed), repr(typed[:80])
        assert conv.errors == []
    else:
        assert conv.errors == [login.MSG_BAD], conv.transcript
    if typed in (
        CODE,
        f" {CODE} ",
        f"{CODE}\n",
        CODE[:3] + " " + CODE[3:],
        CODE[:3] + "-" + CODE[3:],
        CODE[:3] + "\t" + CODE[3:],  # docs/login.md, "Codes as typed": spaces, tabs and dashes are ignored
    ):
        assert result == PASS
    text = world.log_text()
    assert CODE not in text and (len(typed) < 6 or typed[:16] not in text)
    single_lines(world)


def test_no_answer_and_long_answers_are_cheap_failures(world):
    world.enroll("alice")
    assert world.run("alice", [])[0] == FAIL  # the conversation returned None
    for size in (64, 65, 1000, 100_000, 10_000_000):
        result, conv = world.run("alice", [CODE + "0" * (size - len(CODE))])
        assert result == FAIL and len(conv.errors) == 1, conv.transcript
        assert conv.errors[0] == login.MSG_BAD or conv.errors[0].startswith("Too many wrong codes"), conv.transcript


@pytest.mark.parametrize(
    "typed,ok",
    [
        ("k7m2x-9qp4t", True),
        ("K7M2X-9QP4T", True),
        (" k7m2x 9qp4t ", True),
        ("k7m2x9qp4t", True),
        ("k7m2x-9qp4", False),
        ("ｋ7m2x-9qp4t", False),
        ("k7m2x\u200b-9qp4t", False),
        ("k7m2x_9qp4t", False),
        ("k7m2x-9qp4t\0", False),
        ("k7m2x-9qp4t" * 10, False),
    ],
)
def test_recovery_code_forms(world, typed, ok):
    salt = b"r" * 16
    world.enroll("alice", recovery_salt=salt, recovery_hashes=recovery.hashes_for(["k7m2x-9qp4t"], salt))
    result, _conv = world.run("alice", [typed])
    assert result == (PASS if ok else FAIL)
    if ok:  # single use
        assert world.run("alice", [typed], now=T + 30)[0] == FAIL


# --- the user name -----------------------------------------------------------------------

NAMES = st.one_of(
    st.text(ANY_CHAR, max_size=300),
    st.text(string.ascii_letters + string.digits + "._-@$/\\\0 \n", max_size=40),
    st.integers(0, 100_000).map(lambda n: "a" * n),
    st.sampled_from(
        [
            "../alice",
            "alice/../bob",
            "/etc/shadow",
            "alice\0",
            "\0",
            "",
            ".",
            "..",
            "-rf",
            "a" * 201,
            "alice\n",
            "alice ",
            "Ålice",
            "ａｌｉｃｅ",
            "alice@example.com",
            "root",
            "$",
            "a$",
            ".alice.rec",
            "alice.rec",
            "users/alice",
            "alice.lock",
            "\u202eecila",
            "a\x1b[2Jb",
        ]
    ),
)


@settings(max_examples=200, **FAST)
@given(name=NAMES)
def test_any_user_name_is_refused_cleanly_and_writes_nothing(world, name):
    """NSS that knows every name (LDAP with odd names): the decision is deny, unknown or invalid: FAIL, no file."""
    accounts.lookup = lambda user: Account(user, 5000, 5000, {5000}, "/nonexistent") if isinstance(user, str) else None
    before = sorted(p.name for p in world.state.rglob("*"))
    world.logs.clear()
    result, conv = world.run(name, [WRONG])
    assert result == FAIL, (name[:40], conv.transcript)
    assert conv.errors in ([login.MSG_BAD], [login.MSG_NOT_ENROLLED]), conv.transcript
    assert sorted(p.name for p in world.state.rglob("*")) == before
    single_lines(world)
    for _priority, message in world.logs:
        assert len(message) < 600


def test_user_names_that_are_paths_never_reach_the_file_system(world, tmp_path):
    world.enroll("alice")
    accounts.lookup = lambda user: Account(user, 5000, 5000, {5000}, "/x")
    outside = tmp_path / "alice.rec"
    for name in ("../alice", "users/../alice", "../../etc/alice", "alice/.", "./alice", "alice\0"):
        assert world.run(name, [CODE])[0] == FAIL
        assert world.run(name, [WRONG])[0] == FAIL
    assert not outside.exists()
    assert world.store.load("alice").failures == []  # nothing was counted against the real alice


def test_case_insensitive_nss_shares_one_record_and_one_lockout(world, monkeypatch):
    """NSS that ignores case (SSSD, AD): 'ALICE' is alice. The emailed-code path must use the
    account's canonical name, or each spelling gets its own failure counter and mail quota."""
    from pam_twofa.system import mail

    sent = []
    monkeypatch.setattr(mail, "send", lambda policy, message: sent.append(message))
    world.write_policy(
        "enforce:\n  mode: all\n  unenrolled: email\nrate_limit:\n  max_failures: 3\n  per_seconds: 900\n"
    )
    accounts.lookup = lambda user: USERS_CI.get(user.lower()) if isinstance(user, str) else None
    for attempt, spelling in enumerate(("alice", "Alice", "aLice")):
        world.run(spelling, ["00000000"], now=T + attempt)
    result, conv = world.run("ALICE", ["00000000"], now=T + 10)
    assert result == FAIL
    assert login.MSG_LOCKED.split("{")[0] in conv.errors[0], conv.transcript  # the account is locked, whatever the case
    assert len(sent) == 3  # no fourth mail for another spelling
    assert sorted(p.name for p in world.users_dir.iterdir() if p.name.endswith(".rec")) == ["alice.rec"]
    assert all(m["To"] == "alice@localhost" for m in sent)


USERS_CI = {"alice": Account("alice", 1001, 1001, {1001}, "/home/alice")}


# --- PAM_RHOST ---------------------------------------------------------------------------

NETWORKS = ["10.0.0.0/8", "192.0.2.0/24", "fe80::/10", "2001:db8::/32"]
NETS = [ipaddress.ip_network(n) for n in NETWORKS]


def in_exempt_network(rhost) -> bool:
    """Independent oracle (ipaddress). The module drops an IPv6 zone that looks like an interface
    name (letters, digits, ``_.-``), maps ::ffff:a.b.c.d to IPv4, and refuses anything longer than
    128 characters or not ASCII."""
    if not rhost or len(rhost) > 128 or not rhost.isascii():
        return False
    text, percent, zone = rhost.partition("%") if ":" in rhost else (rhost, "", "")
    if percent and not re.fullmatch(r"[A-Za-z0-9_.-]+", zone):
        return False
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in net for net in NETS if net.version == address.version)


ZONES = st.text(string.ascii_letters + string.digits + " =%()\t\n.-_:", max_size=20)
RHOSTS = st.one_of(
    st.none(),
    st.just(""),
    st.ip_addresses().map(str),
    st.ip_addresses(network="10.0.0.0/8").map(str),
    st.ip_addresses(network="fe80::/10").map(str),
    st.tuples(st.ip_addresses(v=6).map(str), ZONES).map(lambda t: f"{t[0]}%{t[1]}"),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}\Z"),
    st.text(ANY_CHAR, max_size=60),
    st.text("0123456789.:abcdef%/[] ", max_size=50),
)


@settings(max_examples=300, **FAST)
@given(rhost=RHOSTS)
@example(rhost="fe80::1%eth0")
@example(rhost="fe80::1%eth0 result=success")
@example(rhost="10.1.2.3/8")
@example(rhost="010.1.2.3")
@example(rhost="10.1.2.3 ")
@example(rhost="::ffff:10.1.2.3")
@example(rhost="[fe80::1]")
@example(rhost="fe80::1%" + "x" * 200)
@example(rhost="\u0661\u0660.0.0.1")
def test_rhost_exempts_exactly_the_listed_networks(world, rhost):
    world.enroll("alice")
    nets = ", ".join(f'"{n}"' for n in NETWORKS)
    if not hasattr(world, "rhost_policy"):
        world.write_policy(f"enforce:\n  mode: all\n  unenrolled: deny\nexempt:\n  networks: [{nets}]\n")
        world.rhost_policy = True
    world.logs.clear()
    result, conv = world.run("alice", [], rhost=rhost)  # no answer: a cheap failure when asked
    expected = IGNORE if in_exempt_network(rhost) else FAIL
    assert result == expected, (rhost, conv.transcript, world.log_text())
    single_lines(world)


# --- documents: policy, google-authenticator file, record --------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-10, 400),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.text(ANY_CHAR, max_size=10),
    st.binary(max_size=8),
    st.text(st.characters(whitelist_categories=("Nd", "No")), min_size=1, max_size=3),
    st.sampled_from(
        [
            "off",
            "all",
            "groups",
            "deny",
            "allow",
            "email",
            "yes",
            "no",
            "~",
            "0x10",
            "1_0",
            "0o7",
            "1:30",
            "10.0.0.0/8",
            "{hostname}",
            "{user}@{x}",
            "SHA1",
            "SHA256",
            "/var/lib/x",
            "../x",
        ]
    ),
)


def wrong_or_valid(kind: str):
    valid = {
        "int": st.integers(-5, 100_000),
        "str": st.text(max_size=20),
        "bool": st.booleans(),
        "optstr": st.one_of(st.none(), st.text(max_size=20)),
        "list": st.lists(
            st.one_of(st.text(max_size=12), st.sampled_from(["staff", "10.0.0.0/8", "alice"])), max_size=4
        ),
    }[kind]
    nested = st.recursive(
        SCALARS,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
        max_leaves=6,
    )
    return st.one_of(valid, valid, SCALARS, nested)


@st.composite
def policy_documents(draw):
    """A document built from the schema (pam_twofa.policy.FIELDS), then mutated."""
    doc: dict = {}
    for _attr, key, kind, _default in FIELDS:
        if draw(st.integers(0, 3)) == 0:
            continue
        node = doc
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = draw(wrong_or_valid(kind))
    if draw(st.booleans()):
        section = draw(st.sampled_from([doc] + [v for v in doc.values() if isinstance(v, dict)]))
        section[draw(st.text(max_size=8))] = draw(SCALARS)
    try:
        text = yaml.safe_dump(
            doc, allow_unicode=draw(st.booleans()), default_flow_style=draw(st.sampled_from([None, True, False]))
        )
    except Exception:  # (test data generation only: the dumper refused the document)
        text = ""
    for _ in range(draw(st.integers(0, 3))):  # text mutations: insert, delete, replace
        where = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["insert", "delete", "truncate"]))
        if how == "insert":
            text = (
                text[:where]
                + draw(
                    st.text(ANY_CHAR, max_size=4)
                    | st.sampled_from(
                        [
                            ":",
                            "- ",
                            "\t",
                            "&a ",
                            "*a",
                            "!!int ",
                            "[",
                            "{",
                            "\n  ",
                            "'",
                            '"',
                            "#",
                            "---\n",
                            "%YAML 1.1\n",
                        ]
                    )
                )
                + text[where:]
            )
        elif how == "delete":
            text = text[:where] + text[where + draw(st.integers(1, 10)) :]
        else:
            text = text[:where]
    return text


RANDOM_YAML = st.lists(
    st.sampled_from(list(":-[]{}&*!|>'\"#%@`,? \n\tabcdefmo0123456789~.") + ["mode", "enforce", "version"]), max_size=80
).map("".join)


@settings(max_examples=250, **FAST)
@given(text=st.one_of(policy_documents(), RANDOM_YAML, st.text(ANY_CHAR, max_size=200)))
@example(text="version: \u00b2\n")
@example(text="version: \u0661\n")
@example(text="totp:\n  digits: \u00b2\n")
@example(text="enforce: &a\n  mode: all\n  groups: *a\n")
@example(text="a: &a [*a]\n")
@example(text="[" * 1000)
@example(text="{a: " * 1000)
@example(text="- " * 1000)
@example(text="email:\n  smtp:\n    ssl: true\n    starttls: true\n    password_file: /x\n")
@example(text="rate_limit:\n  max_failures: " + "9" * 5000 + "\n")
def test_policy_parse_returns_a_policy_or_file_line_errors(text):
    try:
        result = parse(text, "P")
    except PolicyError as exc:
        assert exc.errors, text
        for error in exc.errors:
            assert re.match(r"P:\d+: \S", error), (error, text)
            line = int(error.split(":")[1])
            assert 1 <= line <= text.count("\n") + 2, (error, text)
    else:
        assert isinstance(result, Policy)
        for attr, _key, kind, _default in FIELDS:
            value = getattr(result, attr)
            expected = {"int": int, "str": str, "bool": bool, "list": tuple}.get(kind)
            if expected is not None:
                assert isinstance(value, expected) and (kind != "int" or not isinstance(value, bool)), (attr, value)


GA_LINES = st.one_of(
    st.just("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567 =", max_size=40),
    st.from_regex(
        r'\A" (STEP_SIZE|WINDOW_SIZE|RATE_LIMIT|TOTP_AUTH|HOTP_COUNTER|DISALLOW_REUSE)( [0-9²٣-]{0,6}){0,3}\Z'
    ),
    st.from_regex(r"\A[0-9]{6,9}\Z"),
    st.text(ANY_CHAR, max_size=20),
)


@settings(max_examples=300, **FAST)
@given(text=st.one_of(st.lists(GA_LINES, max_size=8).map("\n".join), st.text(ANY_CHAR, max_size=200)))
@example(text="A" * 17)
@example(text='JBSWY3DPEHPK3PXP\n" STEP_SIZE ' + "9" * 5000)
@example(text='JBSWY3DPEHPK3PXP\n" STEP_SIZE ²')
def test_google_authenticator_parse_returns_or_refuses(text):
    try:
        parsed = googleauth.parse(text)
    except googleauth.GoogleAuthenticatorError as exc:
        assert str(exc)
        return
    assert len(parsed.key) >= 10 and 1 <= parsed.period <= 60 and parsed.digits == 6
    assert all(len(c) == 8 and c.isascii() and c.isdigit() for c in parsed.scratch_codes)


VALID_RECORD = record_text(
    "alice", KEY, recovery_salt=b"s" * 16, recovery_hashes=[b"h" * 32], failures=[int(T)], email="a@b.c"
).decode()


@st.composite
def mutated_records(draw):
    text = VALID_RECORD
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["insert", "delete", "swap-lines", "truncate"]))
        if how == "insert":
            text = (
                text[:where]
                + draw(
                    st.text(ANY_CHAR, max_size=5)
                    | st.sampled_from(["\n", " ", "-", ",", "0", "ff", "\nend\n", "key 00\n"])
                )
                + text[where:]
            )
        elif how == "delete":
            text = text[:where] + text[where + draw(st.integers(1, 8)) :]
        elif how == "swap-lines":
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        else:
            text = text[:where]
    return text


@settings(max_examples=400, **FAST)
@given(text=st.one_of(mutated_records(), st.text(ANY_CHAR, max_size=300)))
def test_record_loads_returns_or_raises_record_error(text):
    try:
        record = loads(text, "alice")
    except RecordError:
        return
    assert record.user == "alice" and 6 <= record.digits <= 10 and 1 <= record.period <= 3600


# --- through the real PAM stack ----------------------------------------------------------


def test_pam_hostile_user_names_and_rhosts(scratch):
    from pam_harness import KEY as STACK
    from pam_harness import MSG_BAD

    alice = scratch.enroll("alice")
    for user in ("../alice", "alice/../../etc", "a" * 5000, "Ålice", "alice\x1b[2J", "-alice"):
        result = scratch.login(STACK, user, "123456")
        assert result.denied and result.prompted and MSG_BAD in result.output, result
        for line in result.syslog:
            assert "\x1b" not in line and "\n" not in line, line
    for n, rhost in enumerate(("fe80::1%eth0", "not an address", "::ffff:10.0.0.1", "10.0.0.1/8", "x" * 300)):
        result = scratch.login(STACK, "alice", alice.wrong_code(salt=n), rhost=rhost)
        assert result.denied and result.prompted, result  # bad code, then locked (max_failures 3)
    scratch.cli("unlock", "alice")
    assert scratch.login(STACK, "alice", alice.code(), rhost="").ok
