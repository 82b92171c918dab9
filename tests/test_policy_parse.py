"""Strict validation of the policy YAML (docs/policy.md): what is accepted, and errors as FILE:LINE: key: message."""

import json
import os
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pam_twofa.policy import FIELDS, SCHEMA, Policy, PolicyError
from pam_twofa.policy.parse import default_text, parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = {attr: default for attr, _key, _kind, default in FIELDS}


def versioned(text: str) -> str:
    """``text`` with the required ``version: 1`` appended if it has none (line numbers stay those of ``text``)."""
    if any(line.startswith("version:") for line in text.splitlines()):
        return text
    return text + ("" if not text or text.endswith("\n") else "\n") + "version: 1\n"


def ok(text: str) -> Policy:
    return parse(versioned(textwrap.dedent(text)), "P")


def errors(text: str) -> list:
    with pytest.raises(PolicyError) as info:
        parse(versioned(textwrap.dedent(text)), "P")
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def error(text: str) -> str:
    found = errors(text)
    assert len(found) == 1, found
    return found[0]


# -- what is accepted -----------------------------------------------------------


def test_default_policy_file_parses_to_the_defaults():
    policy = parse(default_text(), "/etc/pam-twofa/policy.yaml")
    assert policy.as_dict() == DEFAULTS
    assert policy.mode == "off"
    assert policy.state_dir == "/var/lib/pam-twofa"
    assert policy.path == "/etc/pam-twofa/policy.yaml"


def test_default_policy_file_names_every_section_of_the_spec():
    text = default_text()
    for section in ("version:", "enforce:", "exempt:", "totp:", "rate_limit:", "email:", "storage:", "on_error:"):
        assert section in text


def test_example_policy_in_config_parses():
    path = os.path.join(REPO, "config", "policy.yaml")
    with open(path, encoding="utf-8") as handle:
        parse(handle.read(), path)


def test_every_key_with_non_default_values():
    policy = ok(
        """\
        version: 1
        enforce:
          mode: groups
          groups: [admins, "wheel"]
          unenrolled: deny
        exempt:
          users: [backup, svc.deploy, "host$"]
          groups:
            - robots
          networks: [10.0.0.0/8, 192.168.1.7, "2001:db8::/32", "fe80::1"]
        totp:
          issuer: "ACME {hostname}"
          digits: 8
          period: 60
          window: 2
          algorithm: SHA256
        rate_limit:
          max_failures: 3
          per_seconds: 600
        email:
          address: "{user}+2fa@example.org"
          from: "2fa@{hostname}"
          smtp: {host: mail.example.org, port: 587, starttls: true, ssl: false, username: relay, password_file: /etc/pam-twofa/smtp.pw, timeout: 5}
          code_digits: 6
          code_ttl: 300
          max_sends: 2
          per_seconds: 1800
        storage:
          state_dir: /srv/twofa
        on_error: allow
        """
    )
    expected = {
        "version": 1,
        "mode": "groups",
        "enforce_groups": ("admins", "wheel"),
        "unenrolled": "deny",
        "exempt_users": ("backup", "svc.deploy", "host$"),
        "exempt_groups": ("robots",),
        "exempt_networks": ("10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "fe80::1"),
        "totp_issuer": "ACME {hostname}",
        "totp_digits": 8,
        "totp_period": 60,
        "totp_window": 2,
        "totp_algorithm": "SHA256",
        "max_failures": 3,
        "failure_window": 600,
        "email_address": "{user}+2fa@example.org",
        "email_from": "2fa@{hostname}",
        "smtp_host": "mail.example.org",
        "smtp_port": 587,
        "smtp_starttls": True,
        "smtp_ssl": False,
        "smtp_username": "relay",
        "smtp_password_file": "/etc/pam-twofa/smtp.pw",
        "smtp_timeout": 5,
        "code_digits": 6,
        "code_ttl": 300,
        "max_sends": 2,
        "send_window": 1800,
        "state_dir": "/srv/twofa",
        "on_error": "allow",
    }
    got = policy.as_dict()
    assert {attr: got[attr] for attr in expected} == expected
    # fields added later (not in this text) keep their defaults
    assert {a: v for a, v in got.items() if a not in expected} == {
        a: v for a, v in DEFAULTS.items() if a not in expected
    }
    assert [n.prefix for n in policy.networks()] == [8, 32, 32, 128]


def test_ssl_alone_and_username_without_password_file_are_fine():
    policy = ok(
        """\
        email:
          smtp:
            ssl: yes
            port: 465
            username: relay
        """
    )
    assert (policy.smtp_ssl, policy.smtp_starttls, policy.smtp_port, policy.smtp_username) == (
        True,
        False,
        465,
        "relay",
    )
    assert policy.smtp_password_file is None


@pytest.mark.parametrize("mode", ["off", "groups", "all"])
def test_each_enforce_mode(mode):
    assert ok(f"enforce:\n  mode: {mode}\n").mode == mode
    assert ok(f"enforce:\n  mode: '{mode}'\n").mode == mode


@pytest.mark.parametrize(
    "key, value, attr, expected",
    [
        ("enforce.unenrolled", "email", "unenrolled", "email"),
        ("enforce.unenrolled", "deny", "unenrolled", "deny"),
        ("on_error", "deny", "on_error", "deny"),
        ("on_error", "allow", "on_error", "allow"),
        ("totp.algorithm", "SHA1", "totp_algorithm", "SHA1"),
        ("totp.algorithm", "SHA512", "totp_algorithm", "SHA512"),
        ("version", "1", "version", 1),
        ("email.smtp.username", "null", "smtp_username", None),
        ("email.smtp.username", "~", "smtp_username", None),
        ("email.smtp.starttls", "on", "smtp_starttls", True),
        ("email.smtp.starttls", "false", "smtp_starttls", False),
        ("email.smtp.host", "192.0.2.25", "smtp_host", "192.0.2.25"),
        ("email.smtp.host", "'::1'", "smtp_host", "::1"),
        ("exempt.users", "~", "exempt_users", ()),
        ("exempt.networks", "[]", "exempt_networks", ()),
        ("totp.issuer", "'Example Corp'", "totp_issuer", "Example Corp"),
        ("email.address", "'ops-{user}@{hostname}'", "email_address", "ops-{user}@{hostname}"),
        ("totp.digits", "0x7", "totp_digits", 7),
    ],
)
def test_valid_values(key, value, attr, expected):
    parts = key.split(".")
    lines = [("  " * depth) + part + ":" for depth, part in enumerate(parts[:-1])]
    lines.append(("  " * (len(parts) - 1)) + parts[-1] + ": " + value)
    policy = parse(versioned("\n".join(lines) + "\n"), "P")
    assert getattr(policy, attr) == expected
    # and nothing else moved
    others = {a: v for a, v in policy.as_dict().items() if a != attr}
    assert others == {a: v for a, v in DEFAULTS.items() if a != attr}


RANGES = [
    ("totp", "digits", "totp_digits", 6, 8),
    ("totp", "period", "totp_period", 10, 300),
    ("totp", "window", "totp_window", 0, 10),
    ("rate_limit", "max_failures", "max_failures", 1, 1000),
    ("email", "code_digits", "code_digits", 6, 10),
    ("email", "code_ttl", "code_ttl", 30, 86400),
]


@pytest.mark.parametrize("section, key, attr, low, high", RANGES)
def test_range_bounds(section, key, attr, low, high):
    assert getattr(ok(f"{section}:\n  {key}: {low}\n"), attr) == low
    assert getattr(ok(f"{section}:\n  {key}: {high}\n"), attr) == high
    for bad in (low - 1, high + 1):
        assert error(f"{section}:\n  {key}: {bad}\n") == f"P:2: {section}.{key}: expected a number from {low} to {high}"


@settings(max_examples=60, deadline=None)
@given(spec=st.sampled_from(RANGES), data=st.data())
def test_ranges_property(spec, data):
    section, key, attr, low, high = spec
    value = data.draw(st.integers(min_value=-(10**6), max_value=10**6))
    text = f"# comment\n{section}:\n  {key}: {value}\nversion: 1\n"
    if low <= value <= high:
        assert getattr(parse(text, "P"), attr) == value
    else:
        with pytest.raises(PolicyError) as info:
            parse(text, "P")
        assert info.value.errors == [f"P:3: {section}.{key}: expected a number from {low} to {high}"]


MISSING = (
    'P:1: version: missing; add "version: 1" as the first line '
    "(an empty or truncated policy is refused so that an accident cannot switch 2FA off)"
)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here\n", "---\n", "~\n", "null\n", "--- ~\n...\n", "\ufeff"])
def test_empty_policy_is_refused_not_all_defaults(text):
    """An accidental ``> policy.yaml`` must not read as "every default" (enforce.mode: off)."""
    with pytest.raises(PolicyError) as info:
        parse(text, "P")
    assert info.value.errors == [MISSING]


@pytest.mark.parametrize(
    "text",
    [
        "enforce:\n  mode: all\n",
        "# a policy\nenforce: {mode: off}\non_error: deny\n",
        "{}\n",
    ],
)
def test_policy_without_version_is_refused(text):
    with pytest.raises(PolicyError) as info:
        parse(text, "P")
    assert info.value.errors == [MISSING]


def test_version_must_be_at_the_top_level():
    with pytest.raises(PolicyError) as info:
        parse("exempt:\n  users: [alice]\n  version: 1\n", "P")
    assert info.value.errors == [MISSING, "P:3: exempt.version: unknown key; allowed here: users, groups, networks"]


def test_missing_version_comes_first_among_other_errors():
    with pytest.raises(PolicyError) as info:
        parse("enforce:\n  mode: sometimes\n", "P")
    assert info.value.errors == [MISSING, "P:2: enforce.mode: expected one of off, groups, all"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("version: 2\n", "P:1: version: expected one of 1"),
        ("version:\n", "P:1: version: expected one of 1"),
        ("version: ~\n", "P:1: version: expected one of 1"),
        ("version: '1'\n", "P:1: version: expected a whole number"),
    ],
)
def test_version_present_but_wrong(text, message):
    with pytest.raises(PolicyError) as info:
        parse(text, "P")
    assert info.value.errors == [message]


def test_version_alone_is_a_policy():
    assert parse("version: 1\n", "P").as_dict() == DEFAULTS
    assert parse("# comment\n\nversion: 1  # required\n", "P").as_dict() == DEFAULTS


def test_root_that_is_not_a_mapping():
    with pytest.raises(PolicyError) as info:
        parse("- version\n", "P")
    assert info.value.errors == [
        "P:1: expected a mapping of version, enforce, exempt, totp, rate_limit, trust, notify, email, storage, on_error"
    ]


def test_bare_off_is_the_text_off_not_false():
    policy = ok("enforce:\n  mode: off\n")
    assert policy.mode == "off" and policy.mode is not False
    # other YAML 1.1 booleans are not modes
    assert error("enforce:\n  mode: no\n") == "P:2: enforce.mode: expected one of off, groups, all"
    assert error("enforce:\n  mode: true\n") == "P:2: enforce.mode: expected one of off, groups, all"


def test_windows_line_endings_and_bom():
    assert parse("version: 1\r\nenforce:\r\n  mode: all\r\n", "P").mode == "all"
    assert parse("\ufeffversion: 1\nenforce:\n  mode: all\n", "P").mode == "all"


def test_yaml_anchors_are_followed():
    policy = ok("exempt:\n  users: &ops [alice, bob]\n  groups: *ops\n")
    assert policy.exempt_groups == ("alice", "bob")


# -- errors: exact file, line and key path ------------------------------------------


def test_list_item_error_names_index_and_line():
    assert (
        error("version: 1\nenforce:\n  groups: [admins, 3]\n")
        == "P:3: enforce.groups[1]: expected a list of group names"
    )
    assert (
        error("enforce:\n  groups:\n    - admins\n    - [x]\n")
        == "P:4: enforce.groups[1]: expected a list of group names"
    )


def test_path_in_message_is_the_path_given():
    with pytest.raises(PolicyError) as info:
        parse("enforce:\n  groups: admins\nversion: 1\n", "/etc/pam-twofa/policy.yaml")
    assert info.value.errors == ["/etc/pam-twofa/policy.yaml:2: enforce.groups: expected a list of group names"]


def test_unknown_top_level_key():
    assert error("version: 1\nenforcement:\n  mode: all\n") == (
        "P:2: enforcement: unknown key; allowed here: "
        "version, enforce, exempt, totp, rate_limit, trust, notify, email, storage, on_error"
    )


def test_unknown_nested_key():
    assert error("enforce:\n  mode: all\n  group: [admins]\n") == (
        "P:3: enforce.group: unknown key; allowed here: mode, groups, unenrolled"
    )
    assert error("email:\n  smtp:\n    tls: true\n").startswith(
        "P:3: email.smtp.tls: unknown key; allowed here: host, port,"
    )


@settings(max_examples=40, deadline=None)
@given(name=st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True))
def test_unknown_key_property(name):
    top = {"version", "enforce", "exempt", "totp", "rate_limit", "trust", "notify", "email", "storage", "on_error"}
    yaml_words = {"on", "off", "yes", "no", "y", "n", "true", "false", "null"}  # not names to YAML: another error
    if name in top or name in yaml_words:
        return
    with pytest.raises(PolicyError) as info:
        parse(f"version: 1\n{name}: 1\n", "P")
    assert info.value.errors[0].startswith(f"P:2: {name}: unknown key; allowed here: ")
    if name in ("digits", "period", "window", "algorithm", "issuer"):
        return
    with pytest.raises(PolicyError) as info:
        parse(f"totp:\n  digits: 6\n  {name}: 1\nversion: 1\n", "P")
    assert info.value.errors == [
        f"P:3: totp.{name}: unknown key; allowed here: issuer, digits, period, window, algorithm"
    ]


def test_repeated_key():
    assert error("enforce:\n  mode: all\n  mode: off\n") == "P:3: enforce.mode: repeated key"
    assert error("version: 1\non_error: deny\non_error: allow\n") == "P:3: on_error: repeated key"


def test_section_that_is_not_a_mapping():
    assert error("email:\n  smtp: localhost\n").startswith(
        "P:2: email.smtp: expected a mapping of host, port, starttls, ssl, username, password_file, timeout"
    )


def test_key_that_is_not_a_name():
    assert error("1: x\n") == "P:1: keys must be plain names"
    assert error("enforce:\n  yes: all\n") == "P:2: enforce: keys must be plain names"


@pytest.mark.parametrize(
    "text, message",
    [
        ("totp:\n  digits: six\n", "P:2: totp.digits: expected a whole number"),
        ("totp:\n  digits: '6'\n", "P:2: totp.digits: expected a whole number"),
        ("totp:\n  digits: 6.0\n", "P:2: totp.digits: expected a whole number"),
        ("totp:\n  digits: true\n", "P:2: totp.digits: expected a whole number"),
        ("totp:\n  digits: [6]\n", "P:2: totp.digits: expected a whole number"),
        ("totp:\n  digits: ~\n", "P:2: totp.digits: expected a whole number"),
        ('totp:\n  digits: !!int "\u0668"\n', "P:2: totp.digits: expected a whole number"),
        ("totp:\n  issuer: [a, b]\n", "P:2: totp.issuer: expected a text"),
        ("totp:\n  issuer: {a: b}\n", "P:2: totp.issuer: expected a text"),
        ("totp:\n  issuer: 12\n", "P:2: totp.issuer: expected a text"),
        ("email:\n  smtp:\n    ssl: 1\n", "P:3: email.smtp.ssl: expected true or false"),
        ("email:\n  smtp:\n    ssl: 'true'\n", "P:3: email.smtp.ssl: expected true or false"),
        ("email:\n  smtp:\n    starttls: !!bool maybe\n", "P:3: email.smtp.starttls: expected true or false"),
        ("email:\n  smtp:\n    username: [a]\n", "P:3: email.smtp.username: expected a text or null"),
        ("email:\n  smtp:\n    username: 42\n", "P:3: email.smtp.username: expected a text or null"),
        ("exempt:\n  users: alice\n", "P:2: exempt.users: expected a list of user names"),
        ("exempt:\n  users: {alice: 1}\n", "P:2: exempt.users: expected a list of user names"),
        ("exempt:\n  networks: 10.0.0.0/8\n", "P:2: exempt.networks: expected a list of networks (CIDR)"),
        ("exempt:\n  groups: [[a]]\n", "P:2: exempt.groups[0]: expected a list of group names"),
        ("enforce: all\n", "P:1: enforce: expected a mapping of mode, groups, unenrolled"),
        ("on_error: off\n", "P:1: on_error: expected one of deny, allow"),
        ("enforce:\n  unenrolled: mail\n", "P:2: enforce.unenrolled: expected one of email, deny, enroll"),
        ("totp:\n  algorithm: md5\n", "P:2: totp.algorithm: expected one of SHA1, SHA256, SHA512"),
        ("email:\n  smtp:\n    host: 'mail host'\n", "P:3: email.smtp.host: expected a host name or address"),
        ("email:\n  smtp:\n    port: 0\n", "P:3: email.smtp.port: expected a number from 1 to 65535"),
        ("email:\n  smtp:\n    port: 65536\n", "P:3: email.smtp.port: expected a number from 1 to 65535"),
        ("email:\n  address: ''\n", "P:2: email.address: expected a non-empty single-line text"),
    ],
)
def test_wrong_types_and_values(text, message):
    assert error(text) == message


@pytest.mark.parametrize(
    "network, why",
    [
        ("10.0.0.0/33", "prefix length must be at most 32"),
        ("2001:db8::/129", "prefix length must be at most 128"),
        ("10.0.0.1/8", "host bits are set; did you mean the network address?"),
        ("10.0.0.0/8x", "prefix length must be a number"),
        ("10.0.0.0/", "prefix length must be a number"),
        ("example.com", "not an IPv4 or IPv6 network"),
        ("10.0.0", "not an IPv4 or IPv6 network"),
        ("300.1.1.1", "not an IPv4 or IPv6 network"),
    ],
)
def test_invalid_cidr(network, why):
    assert error(f'exempt:\n  networks: ["192.0.2.0/24", "{network}"]\n') == (
        f"P:2: exempt.networks: {network!r} is not a valid network: {why}"
    )


@pytest.mark.parametrize("name", [" alice", "alice ", "", "a:b", "x" * 1025])
@pytest.mark.parametrize(
    "key, kind", [("exempt.users", "user"), ("exempt.groups", "group"), ("enforce.groups", "group")]
)
def test_invalid_user_and_group_names(key, kind, name):
    section, leaf = key.split(".")
    text = f"{section}:\n  {leaf}: [ok_name, '{name}']\n"
    assert error(text) == f"P:2: {key}: {name!r} is not a valid {kind} name (no surrounding spaces, no ':')"


def test_any_directory_name_is_a_valid_user_or_group_name():
    names = [
        "CORP\\alice",
        "alice@corp.example",
        "jos\u00e9",
        "two words",
        "domain admins",
        "-x",
        "1abc",
        "\u00fc" * 100,
    ]
    quoted = ", ".join("'" + n + "'" for n in names)
    policy = ok(f"exempt:\n  users: [{quoted}]\n  groups: [{quoted}]\nenforce:\n  groups: [{quoted}]\n")
    assert policy.exempt_users == policy.exempt_groups == policy.enforce_groups == tuple(names)


def test_valid_names_with_dots_at_and_dollar():
    policy = ok("exempt:\n  users: [john.doe, j_doe, 'user@example.org', 'MACHINE$', _svc]\n")
    assert policy.exempt_users == ("john.doe", "j_doe", "user@example.org", "MACHINE$", "_svc")


def test_issuer_must_not_contain_colon():
    assert error("totp:\n  issuer: 'ACME: prod'\n") == "P:2: totp.issuer: must not contain ':'"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("totp.issuer", "{user}", "unknown placeholder {user}; allowed: {hostname}"),
        ("totp.issuer", "{host}", "unknown placeholder {host}; allowed: {hostname}"),
        ("email.from", "twofa@{user}", "unknown placeholder {user}; allowed: {hostname}"),
        ("email.address", "{name}@example.org", "unknown placeholder {name}; allowed: {user}, {hostname}"),
        ("email.address", "{}@example.org", "unknown placeholder {}; allowed: {user}, {hostname}"),
        ("email.address", "{user!r}@x", "unknown placeholder {user!r}; allowed: {user}, {hostname}"),
        ("email.address", "{user@example.org", "unmatched '{' or '}': braces are only allowed around a placeholder"),
        ("totp.issuer", "ACME}", "unmatched '{' or '}': braces are only allowed around a placeholder"),
        ("email.from", "{{hostname}}", "unmatched '{' or '}': braces are only allowed around a placeholder"),
    ],
)
def test_templates(key, value, message):
    section, leaf = key.split(".")
    assert error(f"{section}:\n  {leaf}: '{value}'\n") == f"P:2: {key}: {message}"


def test_templates_are_usable_with_str_format():
    """What validation accepts, str.format (used to expand templates) accepts too."""
    policy = ok("totp:\n  issuer: 'ACME {hostname}'\nemail:\n  address: '{user}.x@{hostname}'\n")
    assert policy.totp_issuer.format(hostname="h") == "ACME h"
    assert policy.email_address.format(user="u", hostname="h") == "u.x@h"


def test_ssl_and_starttls_together():
    text = "version: 1\nemail:\n  smtp:\n    host: mail\n    ssl: true\n    starttls: true\n"
    assert error(text) == "P:5: email.smtp: ssl and starttls exclude each other; choose one"
    flow = "email:\n  code_ttl: 600\n  smtp: {ssl: true, starttls: true}\n"
    assert error(flow) == "P:3: email.smtp: ssl and starttls exclude each other; choose one"


def test_offline_refresh_must_be_below_max_age():
    text = "version: 1\nstorage:\n  offline:\n    max_age: 60\n    refresh: 60\n"
    assert error(text).startswith("P:5: storage.offline.refresh: 60 s is not below max_age (60 s)")
    assert error("version: 1\nstorage:\n  offline:\n    max_age: 30\n").startswith("P:4: storage.offline.refresh")
    assert ok("storage:\n  offline:\n    max_age: 0\n    refresh: 60\n").offline_max_age == 0  # no copy
    assert ok("storage:\n  offline:\n    max_age: 61\n").offline_refresh == 60


def test_password_file_without_username():
    text = "email:\n  smtp:\n    host: mail\n    password_file: /etc/pam-twofa/smtp.pw\n"
    assert error(text) == "P:4: email.smtp.password_file: needs email.smtp.username"
    assert error(text.replace("    host: mail\n", "    username: ''\n")).endswith(
        "email.smtp.password_file: needs email.smtp.username"
    )


@pytest.mark.parametrize("value", ["var/lib/pam-twofa", "./state", "~/state", "''"])
def test_relative_state_dir(value):
    assert error(f"storage:\n  state_dir: {value}\n") == "P:2: storage.state_dir: expected an absolute path"


@pytest.mark.parametrize("value", ["/var/../etc", "/var//lib", "/var/lib/./x"])
def test_unnormalized_state_dir(value):
    assert error(f"storage:\n  state_dir: {value}\n") == (
        "P:2: storage.state_dir: expected a normalized absolute path (no '..', no '//')"
    )


def test_relative_password_file():
    text = "email:\n  smtp:\n    username: relay\n    password_file: smtp.pw\n"
    assert error(text) == "P:4: email.smtp.password_file: expected an absolute path"


def test_yaml_syntax_error_names_the_line():
    assert error("version: 1\nenforce:\n\tmode: all\n") == (
        "P:3: YAML syntax error: found character '\\t' that cannot start any token"
    )
    found = error("version: 1\nexempt:\n  users: [alice\non_error: deny\n")
    assert found.startswith("P:") and "YAML syntax error" in found
    assert found.split(":")[1] in ("3", "4", "5")
    found = error("version: 1\nenforce:\n  mode: all\n   groups: [x]\n")
    assert found.startswith("P:4: YAML syntax error: ")


def test_deep_nesting_is_an_error_not_a_crash():
    assert error("a: " + "[" * 5000 + "\n").startswith("P:1: YAML syntax error")


def test_non_printable_control_character():
    assert error("version: 1\non_error: \x07deny\n").startswith("P:2: YAML syntax error: ")


def test_multiple_documents():
    assert error("version: 1\n---\nversion: 1\n") == "P:3: only one YAML document is allowed"
    assert error("---\nversion: 1\n...\n---\nenforce: {mode: all}\n") == "P:5: only one YAML document is allowed"


def test_several_errors_are_reported_at_once_in_file_order():
    text = textwrap.dedent(
        """\
        version: 1
        enforce:
          mode: sometimes
          groups: admins
        exempt:
          networks: [10.0.0.0/40]
          color: blue
        totp:
          digits: 12
        storage:
          state_dir: relative/path
        """
    )
    with pytest.raises(PolicyError) as info:
        parse(text, "P")
    assert info.value.errors == [
        "P:3: enforce.mode: expected one of off, groups, all",
        "P:4: enforce.groups: expected a list of group names",
        "P:6: exempt.networks: '10.0.0.0/40' is not a valid network: prefix length must be at most 32",
        "P:7: exempt.color: unknown key; allowed here: users, groups, networks",
        "P:9: totp.digits: expected a number from 6 to 8",
        "P:11: storage.state_dir: expected an absolute path",
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "version: 1",
                    "enforce:",
                    "  mode: all",
                    "  groups: [a",
                    "exempt:",
                    "  networks:",
                    "    - 10.0.0.0/8",
                    "    - x",
                    "totp: {digits: 7}",
                    "- a",
                    "  - b",
                    "&x a: *x",
                    "? [a]",
                    ": b",
                    "'",
                    '"',
                    "{",
                    "}",
                    "[",
                    "]",
                    "---",
                    "...",
                    "!!int x",
                    "\t",
                    "#",
                    "on_error: allow",
                ]
            ),
            st.text(max_size=20),
        ),
        max_size=12,
    )
)
def test_any_text_gives_a_policy_or_a_policy_error(lines):
    """Fuzz: never another exception, and every error line is P:LINE: ..."""
    text = "\n".join(lines)
    try:
        policy = parse(text, "P")
    except PolicyError as exc:
        assert exc.errors
        for line in exc.errors:
            head, number, _rest = line.split(":", 2)
            assert head == "P" and number.isdigit() and int(number) >= 1
    else:
        assert isinstance(policy, Policy)


# -- the one schema (policy.SCHEMA) ------------------------------------------------------


def test_every_key_is_declared_once_with_a_known_check():
    from pam_twofa.policy.parse import CHECKS

    assert [row[:4] for row in SCHEMA] == list(FIELDS)
    assert len({row[0] for row in SCHEMA}) == len({row[1] for row in SCHEMA}) == len(SCHEMA)
    for _attr, key, kind, default, check in SCHEMA:
        assert kind in ("str", "int", "bool", "optstr", "list"), key
        assert isinstance(check, tuple) and check and check[0] in CHECKS, f"{key} has no check"
        if default is not None:  # every default passes its own check
            assert CHECKS[check[0]](default, *check[1:]) is None, key


def test_tree_defaults_and_cache_derive_from_the_schema(tmp_path):
    from pam_twofa import policy as policy_module
    from pam_twofa.policy.parse import _tree

    def leaves(tree):
        for value in tree.values():
            yield from leaves(value) if isinstance(value, dict) else [value]

    assert list(leaves(_tree())) == [key for _attr, key, _kind, _default, _check in SCHEMA]
    assert Policy().as_dict() == {attr: default for attr, _key, _kind, default, _check in SCHEMA}
    cache = policy_module.dumps_cache(Policy(), os.stat(tmp_path)).split("\n")
    assert [line.split(" ", 1)[0] for line in cache[3:-2]] == [key for _a, key, _k, _d, _c in SCHEMA]


def test_default_policy_file_documents_every_key():
    import yaml

    def flat(tree, prefix=""):
        for name, value in tree.items():
            full = f"{prefix}.{name}" if prefix else name
            yield from flat(value, full) if isinstance(value, dict) else [full]

    documented = set(flat(yaml.safe_load(default_text())))
    assert documented == {key for _attr, key, _kind, _default in FIELDS}
    assert default_text().startswith("version: 1")  # where the missing-version message says to put it


# -- trust.seconds ------------------------------------------------------------------------


def test_trust_seconds():
    assert DEFAULTS["trust_seconds"] == 0
    assert ok("trust:\n  seconds: 0\n").trust_seconds == 0
    assert ok("trust:\n  seconds: 3600\n").trust_seconds == 3600
    assert ok("trust:\n  seconds: 2592000\n").trust_seconds == 30 * 86400
    assert error("trust:\n  seconds: 2592001\n") == "P:2: trust.seconds: expected a number from 0 to 2592000"
    assert error("trust:\n  seconds: -1\n") == "P:2: trust.seconds: expected a number from 0 to 2592000"
    assert error("trust:\n  seconds: 1h\n") == "P:2: trust.seconds: expected a whole number"
    assert error("trust:\n  minutes: 5\n") == "P:2: trust.minutes: unknown key; allowed here: seconds"
    assert error("trust: 3600\n") == "P:1: trust: expected a mapping of seconds"


# -- control characters and paths, in every key ------------------------------------------

# A value each text-like check accepts, to put a control character into.
GOOD_TEXT = {
    "enum": None,  # enums are compared whole: a control character is simply not a choice
    "names": "ok_name",
    "networks": "10.0.0.0/8",
    "template": "ops {hostname}",
    "label": "ACME {hostname}",
    "host": "mail.example.org",
    "path": "/etc/pam-twofa/x",
    "text": "relay user",
    "socket": "/run/pam-twofa/agent.sock",
    "dsn": "host=db1 dbname=twofa",
}
CONTROL = ["\n", "\r", "\t", "\x00", "\x07", "\x1b", "\x7f", "\x85", "\u2028", "\u200b", "\ufeff", "\ud800"]
TEXT_KEYS = [
    (key, kind, check)
    for _attr, key, kind, _default, check in SCHEMA
    if kind in ("str", "optstr", "list") and GOOD_TEXT[check[0]] is not None
]


def _nested(key: str, value: str) -> str:
    """``key: value`` as YAML, with the nested sections of a dotted key, on the line ``key.count(".") + 1``.

    A password file needs a user name: it goes after the key.
    """
    parts = key.split(".")
    lines = [("  " * depth) + part + ":" for depth, part in enumerate(parts[:-1])]
    lines.append(("  " * (len(parts) - 1)) + parts[-1] + ": " + value)
    if key == "email.smtp.password_file":
        lines.append("    username: relay")
    return "\n".join(lines) + "\n"


def test_text_keys_cover_every_text_and_list_key_but_the_enums():
    texts = {key for _attr, key, kind, _default in FIELDS if kind in ("str", "optstr", "list")}
    assert texts - {key for key, _kind, _check in TEXT_KEYS} == {
        "enforce.mode",
        "enforce.unenrolled",
        "totp.algorithm",
        "on_error",
        "storage.backend",
    }


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize("key, kind, check", TEXT_KEYS, ids=[k for k, _kd, _c in TEXT_KEYS])
def test_control_characters_are_refused_in_every_text_and_list_item(key, kind, check, char):
    """Nothing unprintable reaches the one-line-per-key cache (it would be re-parsed at every login)."""
    good = GOOD_TEXT[check[0]]
    assert good is not None  # TEXT_KEYS holds only the checks with a good text
    bad = good[:3] + char + good[3:]
    value = json.dumps([good, bad]) if kind == "list" else json.dumps(bad)  # JSON strings are YAML double-quoted
    where = f"{key}[1]" if kind == "list" else key
    found = error(_nested(key, value))
    assert found == (
        f"P:{key.count('.') + 1}: {where}: non-printable character U+{ord(char):04X} at position 4: "
        "write the value on one line without control characters"
    )
    ok(_nested(key, json.dumps([good, good] if kind == "list" else good)))  # control: the value without it is fine


def test_smtp_username_with_a_newline_is_refused():
    assert error('email:\n  smtp:\n    username: "relay\\nuser"\n') == (
        "P:3: email.smtp.username: non-printable character U+000A at position 6: "
        "write the value on one line without control characters"
    )
    assert ok("email:\n  smtp:\n    username: relay user\n").smtp_username == "relay user"


@pytest.mark.parametrize("key", ["storage.state_dir", "email.smtp.password_file", "email.smtp.ca_file"])
@pytest.mark.parametrize(
    "value, message",
    [
        ("relative/x", "expected an absolute path"),
        ("'~/x'", "expected an absolute path"),
        ("''", "expected an absolute path"),
        ("/etc/../x", "expected a normalized absolute path (no '..', no '//')"),
        ("/etc//x", "expected a normalized absolute path (no '..', no '//')"),
        ("/etc/./x", "expected a normalized absolute path (no '..', no '//')"),
        ("/", "expected a normalized absolute path (no '..', no '//')"),
    ],
)
def test_every_path_key_needs_a_normalized_absolute_path(key, value, message):
    assert error(_nested(key, value)) == f"P:{key.count('.') + 1}: {key}: {message}"
    assert getattr(ok(_nested(key, "/etc/x y/z")), next(a for a, k, _kd, _d in FIELDS if k == key)) == "/etc/x y/z"


def test_ca_file_accepts_an_absolute_path():
    assert ok("email:\n  smtp:\n    ca_file: /etc/ssl/certs/ca.pem\n").smtp_ca_file == "/etc/ssl/certs/ca.pem"
    assert ok("email:\n  smtp:\n    ca_file: null\n").smtp_ca_file is None
