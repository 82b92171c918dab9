"""Loading the policy on the login path: the compiled cache, and refusing unsafe files (docs/policy.md)."""

import os
import shutil
import stat
import subprocess
import textwrap

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support.blocking import no_block

from pam_twofa import policy
from pam_twofa.policy import CACHE_MAGIC, PolicyError
from pam_twofa.policy import parse as policy_parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFF = "version: 1\nenforce:\n  mode: off\n"
ALL = "version: 1\nenforce:\n  mode: all\n"  # same size as OFF


@pytest.fixture
def folder(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    os.chmod(etc, 0o755)
    return etc


def write(path, text, mode=0o644):
    with open(path, "w", encoding="utf-8") as handle:  # in place: same inode
        handle.write(text)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def parses(monkeypatch):
    """Counts the full parses (YAML) that policy.load does."""
    calls = []
    real = policy_parse.parse

    def counting(text, path):
        calls.append(path)
        return real(text, path)

    monkeypatch.setattr(policy_parse, "parse", counting)
    return calls


def refused(path) -> str:
    with no_block():
        with pytest.raises(PolicyError) as info:
            policy.load(str(path))
    assert len(info.value.errors) == 1
    return info.value.errors[0]


# -- the cache ----------------------------------------------------------------


@pytest.mark.root
def test_load_writes_a_private_cache_and_uses_it(folder, parses):
    path = write(folder / "policy.yaml", "version: 1\nenforce:\n  mode: all\nexempt:\n  networks: [10.0.0.0/8]\n")
    first = policy.load(path)
    cache = folder / ".policy.yaml.cache"
    st = os.lstat(cache)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    text = cache.read_text()
    assert text.startswith(CACHE_MAGIC + "\n") and text.endswith("\nend\n")
    assert f"path {path}\n" in text
    assert parses == [path]
    second = policy.load(path)
    assert parses == [path]  # no second parse
    assert second.as_dict() == first.as_dict()
    assert second.mode == "all" and second.exempt_networks == ("10.0.0.0/8",)
    assert second.path == path
    assert sorted(os.listdir(folder)) == [".policy.yaml.cache", "policy.yaml"]  # no temporary file left


def test_use_cache_false_always_parses(folder, parses):
    path = write(folder / "policy.yaml", ALL)
    policy.load(path)
    assert policy.load(path, use_cache=False).mode == "all"
    assert len(parses) == 2


def test_cache_roundtrips_every_field(folder):
    path = write(
        folder / "policy.yaml",
        textwrap.dedent(
            """\
            version: 1
            enforce: {mode: groups, groups: [admins, wheel], unenrolled: deny}
            exempt: {users: [svc], groups: [], networks: ["2001:db8::/32", 192.0.2.0/24]}
            totp: {issuer: "ACME corp {hostname}", digits: 8, period: 60, window: 0, algorithm: SHA512}
            rate_limit: {max_failures: 9, per_seconds: 60}
            email:
              address: "{user} x@{hostname}"
              smtp: {host: mail, port: 587, starttls: true, username: "relay user", password_file: /etc/pw}
            storage: {state_dir: /srv/x y}
            on_error: allow
            """
        ),
    )
    parsed = policy.load(path)
    cached = policy.load(path)
    assert cached.as_dict() == parsed.as_dict()
    assert cached.smtp_username == "relay user" and cached.smtp_starttls is True and cached.smtp_ssl is False
    assert cached.enforce_groups == ("admins", "wheel") and cached.exempt_groups == ()
    assert cached.state_dir == "/srv/x y" and cached.totp_window == 0


def test_second_process_loads_from_cache_without_yaml(folder):
    """The login path in a fresh interpreter as pam_python runs it: no yaml, no policy_parse."""
    path = write(folder / "policy.yaml", "version: 1\nenforce:\n  mode: groups\n  groups: [admins]\n")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {REPO!r})  # -I, as pam_python runs it, ignores PYTHONPATH
        from pam_twofa import policy
        p = policy.load({path!r})
        print(p.mode, ",".join(p.enforce_groups), "yaml" in sys.modules, "pam_twofa.policy.parse" in sys.modules)
        """
    )

    def run():
        done = subprocess.run(["/usr/bin/python3", "-I", "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run() == ["groups", "admins", "True", "True"]  # first: parses, writes the cache
    assert (folder / ".policy.yaml.cache").exists()
    assert run() == ["groups", "admins", "False", "False"]  # then: from the cache only
    os.utime(path, ns=(10**18, 10**18))  # touched: the cache no longer matches
    assert run() == ["groups", "admins", "True", "True"]


def test_changed_content_invalidates(folder, parses):
    path = write(folder / "policy.yaml", OFF)
    assert policy.load(path).mode == "off"
    write(path, "version: 1\nenforce:\n  mode: groups\n  groups: [ops]\n")
    assert policy.load(path).mode == "groups"
    assert len(parses) == 2


def test_same_size_new_mtime_invalidates(folder, parses):
    path = write(folder / "policy.yaml", OFF)
    os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    assert policy.load(path).mode == "off"
    ino = os.stat(path).st_ino
    write(path, ALL)  # same size, same inode
    os.utime(path, ns=(1_600_000_001 * 10**9, 1_600_000_001 * 10**9))
    assert os.stat(path).st_ino == ino and os.stat(path).st_size == len(OFF)
    assert policy.load(path).mode == "all"
    assert len(parses) == 2


def test_same_size_same_mtime_still_invalidates_by_ctime(folder, parses):
    """An edit that puts the old mtime back (cp -p, rsync -t) still changes the ctime."""
    path = write(folder / "policy.yaml", OFF)
    os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    assert policy.load(path).mode == "off"
    write(path, ALL)
    os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    assert policy.load(path).mode == "all"
    assert len(parses) == 2


def test_replaced_by_rename_invalidates(folder, parses):
    path = write(folder / "policy.yaml", OFF)
    stamp = os.stat(path).st_mtime_ns
    assert policy.load(path).mode == "off"
    new = write(folder / "policy.yaml.new", ALL)
    os.utime(new, ns=(stamp, stamp))  # same size and mtime; only the inode differs
    os.rename(new, path)
    assert policy.load(path).mode == "all"
    assert len(parses) == 2


def test_edit_to_invalid_policy_is_not_hidden_by_the_cache(folder):
    path = write(folder / "policy.yaml", ALL)
    assert policy.load(path).mode == "all"
    write(path, "version: 1\nenforce:\n  mode: sometimes\n")
    with pytest.raises(PolicyError) as info:
        policy.load(path)
    assert info.value.errors == [f"{path}:3: enforce.mode: expected one of off, groups, all"]
    with pytest.raises(PolicyError):
        policy.load(path)  # an invalid policy is never cached


def _cache_lines(folder):
    return (folder / ".policy.yaml.cache").read_text().split("\n")


def _put_cache(folder, text, mode=0o600):
    cache = folder / ".policy.yaml.cache"
    if cache.exists() or cache.is_symlink():
        cache.unlink()
    fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(cache, mode)


def _with(lines, key, value):
    return [f"{key} {value}" if line.split(" ", 1)[0] == key else line for line in lines]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda lines: "\n".join(lines)[: len("\n".join(lines)) // 2], id="truncated-half"),
        pytest.param(lambda lines: "\n".join(lines[:-2]) + "\n", id="truncated-no-end"),
        pytest.param(lambda lines: "\n".join(lines).rstrip("\n"), id="no-final-newline"),
        pytest.param(lambda lines: "", id="empty"),
        pytest.param(lambda lines: "\n".join(["garbage"] + lines[1:]), id="bad-magic"),
        pytest.param(lambda lines: "\n".join(_with(lines, "totp.digits", "six")), id="bad-int"),
        pytest.param(lambda lines: "\n".join(_with(lines, "identity", "1 2 3 4 5")), id="other-identity"),
        pytest.param(
            lambda lines: "\n".join(line.replace("enforce.mode", "enforce.mood") for line in lines), id="renamed-key"
        ),
        pytest.param(lambda lines: "\n".join(lines[:4] + lines[5:]), id="missing-line"),
        pytest.param(lambda lines: "\n".join(lines[:4] + ["extra 1"] + lines[4:]), id="extra-line"),
        pytest.param(lambda lines: "\xff\xfe\x00garbage \u2603", id="garbage"),
    ],
)
def test_damaged_cache_is_ignored(folder, parses, tamper):
    path = write(folder / "policy.yaml", ALL)
    policy.load(path)
    good = "\n".join(_cache_lines(folder))
    # every damaged cache below also claims enforce.mode off: if it were used, the result would be "off"
    lines = _with(_cache_lines(folder), "enforce.mode", "off")
    _put_cache(folder, tamper(lines))
    assert policy.load(path).mode == "all"
    assert len(parses) == 2
    assert (folder / ".policy.yaml.cache").read_text() == good  # rewritten by the parse


def test_well_formed_cache_is_trusted(folder):
    """Control for the tests above: an intact cache matching the file is used as it is (it is root-only)."""
    path = write(folder / "policy.yaml", ALL)
    policy.load(path)
    _put_cache(folder, "\n".join(_with(_cache_lines(folder), "enforce.mode", "off")))
    assert policy.load(path).mode == "off"


@pytest.mark.root
@pytest.mark.parametrize("how", ["mode-0644", "mode-0640", "foreign-owner", "symlink", "fifo", "directory"])
def test_unsafe_cache_is_ignored(folder, parses, how):
    path = write(folder / "policy.yaml", ALL)
    policy.load(path)
    forged = "\n".join(_with(_cache_lines(folder), "enforce.mode", "off"))
    cache = folder / ".policy.yaml.cache"
    if how == "mode-0644":
        _put_cache(folder, forged, 0o644)
    elif how == "mode-0640":
        _put_cache(folder, forged, 0o640)
    elif how == "foreign-owner":
        _put_cache(folder, forged)
        os.chown(cache, 65534, 65534)
    elif how == "symlink":
        elsewhere = folder.parent / "forged.cache"
        elsewhere.write_text(forged)
        os.chmod(elsewhere, 0o600)
        cache.unlink()
        os.symlink(elsewhere, cache)
    elif how == "fifo":
        cache.unlink()
        os.mkfifo(cache, 0o600)
    elif how == "directory":
        cache.unlink()
        cache.mkdir(mode=0o700)
    with no_block():
        assert policy.load(path).mode == "all"
    assert len(parses) == 2
    # nothing left behind by the attempt to rewrite the cache
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
    if how == "symlink":
        assert (folder.parent / "forged.cache").read_text() == forged  # the link target is never written


def test_cache_for_another_path_is_ignored(tmp_path, parses):
    """Same inode (a hard link, so the same identity) seen under another path: the path line must match."""
    one = tmp_path / "one"
    two = tmp_path / "two"
    for d in (one, two):
        d.mkdir()
        os.chmod(d, 0o755)
    path1 = write(one / "policy.yaml", ALL)
    path2 = str(two / "policy.yaml")
    os.link(path1, path2)
    policy.load(path1)
    forged = _with(_cache_lines(one), "enforce.mode", "off")
    _put_cache(two, "\n".join(forged))  # still says "path <one/policy.yaml>"
    assert policy.load(path2).mode == "all"
    assert len(parses) == 2
    # control: the same cache naming path2 is accepted, so the path line is what made the difference
    _put_cache(two, "\n".join(_with(forged, "path", path2)))
    assert policy.load(path2).mode == "off"
    assert len(parses) == 2


def test_cache_write_failure_is_harmless(folder, monkeypatch):
    path = write(folder / "policy.yaml", ALL)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    import pam_twofa.system.fileio as fileio

    monkeypatch.setattr(fileio, "write_atomic", broken)
    assert policy.load(path).mode == "all"
    assert not (folder / ".policy.yaml.cache").exists()


# -- refusals ---------------------------------------------------------------------


def test_symlinked_policy_is_refused(folder):
    real = write(folder / "real.yaml", ALL)
    link = folder / "policy.yaml"
    os.symlink(real, link)
    message = refused(link)
    assert message == f"{link}: is a symbolic link; point policy= at the real file"


def test_directory_is_refused(folder):
    (folder / "policy.yaml").mkdir()
    message = refused(folder / "policy.yaml")
    assert message.startswith(f"{folder / 'policy.yaml'}: not a regular file")
    assert "policy=" in message


def test_fifo_is_refused_without_blocking(folder):
    os.mkfifo(folder / "policy.yaml", 0o644)
    message = refused(folder / "policy.yaml")
    assert message.startswith(f"{folder / 'policy.yaml'}: not a regular file")


@pytest.mark.root
def test_policy_owned_by_another_user_is_refused(folder):
    path = write(folder / "policy.yaml", ALL)
    os.chown(path, 65534, 65534)
    assert refused(path) == f"{path}: the policy file must be owned by root (uid 0), not uid 65534: chown root {path}"


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o622])
def test_writable_policy_is_refused(folder, mode):
    path = write(folder / "policy.yaml", ALL, mode)
    assert refused(path) == f"{path}: the policy file is mode {mode:04o}, writable by others: chmod go-w {path}"


def test_readable_policy_is_fine(folder):
    path = write(folder / "policy.yaml", ALL, 0o644)
    assert policy.load(path).mode == "all"
    os.chmod(path, 0o600)
    assert policy.load(path).mode == "all"


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777, 0o1777])
def test_writable_folder_is_refused(folder, mode):
    path = write(folder / "policy.yaml", ALL)
    os.chmod(folder, mode)
    assert refused(path) == (
        f"{folder}: the policy folder is mode {mode & 0o7777:04o}, writable by others: chmod go-w {folder}"
    )


@pytest.mark.root
def test_folder_owned_by_another_user_is_refused(folder):
    path = write(folder / "policy.yaml", ALL)
    os.chown(folder, 65534, 65534)
    assert (
        refused(path)
        == f"{folder}: the policy folder must be owned by root (uid 0), not uid 65534: chown root {folder}"
    )


def test_missing_policy(folder):
    path = folder / "policy.yaml"
    message = refused(path)
    assert (
        message
        == f"{path}: no such policy file: run the installer (scripts/install.sh writes the default) or pass policy=PATH"
    )
    message = refused(folder / "nowhere" / "policy.yaml")
    assert message.startswith(f"{folder / 'nowhere' / 'policy.yaml'}: no such policy file")


def test_too_large_policy(folder):
    path = write(folder / "policy.yaml", "# x\n" * (policy.MAX_POLICY_BYTES // 4 + 1))
    assert refused(path).startswith(f"{path}: larger than {policy.MAX_POLICY_BYTES} bytes")


def test_not_utf8_policy_names_the_file(folder):
    path = folder / "policy.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    os.chmod(path, 0o644)
    message = refused(path)
    assert message.startswith(f"{path}: ") and "UTF-8" in message


def test_invalid_policy_errors_name_the_real_path(folder):
    path = write(folder / "policy.yaml", "version: 1\nbogus: 1\n")
    assert refused(path).startswith(f"{path}:2: bogus: unknown key")


def test_cache_path():
    assert policy.cache_path("/etc/pam-twofa/policy.yaml") == "/etc/pam-twofa/.policy.yaml.cache"
    assert policy.cache_path("/x/other.yml") == "/x/.other.yml.cache"


def test_refusal_leaves_no_cache(folder):
    path = write(folder / "policy.yaml", ALL, 0o666)
    refused(path)
    assert not (folder / ".policy.yaml.cache").exists()
    shutil.rmtree(folder)


# -- the cache round-trips every policy the parser accepts ------------------------------

# Lists, not tuples: mypy infers ("Cs",) as tuple[str], not a tuple of category names.
PRINTABLE = st.characters(blacklist_categories=["Cs"]).filter(str.isprintable)
ANY_CHAR = st.characters(blacklist_categories=["Cs"])


def _template_text(draw, placeholders, alphabet, forbid=""):
    pieces = draw(
        st.lists(
            st.one_of(
                st.sampled_from(["{%s}" % p for p in placeholders]),
                st.text(alphabet, min_size=1, max_size=8).map(
                    lambda t: "".join(c for c in t if c not in "{}" + forbid) or "x"
                ),
                st.sampled_from([" ", "+", "-", "@", ".", "  x  "]),
            ),
            min_size=1,
            max_size=6,
        )
    )
    return "".join(pieces)


def _path_text(draw, alphabet):
    parts = draw(st.lists(st.text(alphabet, min_size=1, max_size=6), min_size=1, max_size=4))
    parts = [p.replace("/", "_") for p in parts]
    return "/" + "/".join("_" + p if p in (".", "..") else p for p in parts)


@st.composite
def policy_values(draw, alphabet=PRINTABLE):
    """A dict of attribute -> value for a random subset of the schema, each value valid for its check."""
    from pam_twofa.policy import SCHEMA

    values = {}
    for attr, _key, kind, _default, check in SCHEMA:
        if attr != "version" and draw(st.booleans()):
            continue
        name, args = check[0], check[1:]
        if kind == "optstr" and draw(st.booleans()):
            value = None
        elif name == "range":
            value = draw(st.integers(args[0], args[1]))
        elif name == "enum":
            value = draw(st.sampled_from(args))
        elif name == "names":
            names = st.text(alphabet, min_size=1, max_size=20).filter(lambda n: n == n.strip() and ":" not in n)
            value = draw(st.lists(names, max_size=3))
        elif name == "networks":
            value = draw(
                st.lists(
                    st.one_of(
                        st.ip_addresses(v=4).map(str),
                        st.ip_addresses(v=6).map(str),
                        st.sampled_from(["10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0", "::/0", "192.0.2.7/32"]),
                    ),
                    max_size=3,
                )
            )
        elif name in ("template", "label"):
            value = _template_text(draw, args, alphabet, forbid=":" if name == "label" else "")
        elif name == "host":
            value = draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789.-:_", min_size=1, max_size=20))
        elif name == "path":
            value = _path_text(draw, alphabet)
        elif name == "text":
            value = draw(st.text(alphabet, max_size=12))
        elif name == "socket":
            name_part = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=40)
            value = "/run/" + draw(name_part.filter(lambda n: n not in (".", "..")))  # "/run/." is no socket path
        elif name == "dsn":
            value = "host=" + draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=20))
        else:
            raise AssertionError(f"no strategy for check {check}")
        values[attr] = value
    if values.get("smtp_ssl") and values.get("smtp_starttls"):
        values["smtp_starttls"] = False
    if values.get("smtp_password_file") and not values.get("smtp_username"):
        values["smtp_username"] = "relay"
    if values.get("backend") == "postgresql" and not values.get("pg_dsn"):
        values["pg_dsn"] = "host=db1 dbname=twofa"
    max_age = values.get("offline_max_age", 86400)
    if max_age and values.get("offline_refresh", 60) >= max_age:
        # The one rule across keys of this group: a refresh below max_age (0 keeps no copy).
        values["offline_refresh"] = max(1, max_age - 1) if max_age > 1 else 1
        if max_age == 1:
            values["offline_max_age"] = 0
    return values


def _yaml_of(values) -> str:
    import yaml

    doc: dict = {}
    for attr, key, _kind, _default in policy.FIELDS:
        if attr in values:
            node = doc
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            value = values[attr]
            node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=float("inf"))


def _roundtrip(parsed):
    st_ = os.stat(REPO)
    back = policy.loads_cache(policy.dumps_cache(parsed, st_), parsed.path, st_)
    assert back is not None, "the cache of a valid policy is not read back: every login would parse the YAML"
    assert back.as_dict() == parsed.as_dict() and back.path == parsed.path


@settings(max_examples=150, deadline=None)
@given(values=policy_values())
def test_cache_roundtrips_generated_valid_policies(values):
    """Odd but valid values (unicode, spaces, '+', '-', placeholders) come back from the cache unchanged."""
    parsed = policy_parse.parse(_yaml_of(values), "/etc/pam-twofa/policy.yaml")
    assert {a: parsed.as_dict()[a] for a in values} == {
        a: tuple(v) if isinstance(v, list) else v for a, v in values.items()
    }
    _roundtrip(parsed)


@settings(max_examples=150, deadline=None)
@given(values=policy_values(alphabet=ANY_CHAR))
@example(values={"version": 1, "smtp_username": "relay\nuser"})
@example(values={"version": 1, "smtp_ca_file": "/etc/ca\n.pem"})
@example(values={"version": 1, "email_address": "{user}\r@x"})
def test_whatever_the_parser_accepts_the_cache_roundtrips(values):
    """Any character at all: a value is refused, or it comes back from the cache (never a silent re-parse)."""
    try:
        parsed = policy_parse.parse(_yaml_of(values), "/etc/pam-twofa/policy.yaml")
    except PolicyError:
        return
    _roundtrip(parsed)


def test_policy_with_a_newline_in_a_value_is_refused_and_a_valid_one_is_cached(folder, parses):
    path = write(folder / "policy.yaml", 'version: 1\nemail:\n  smtp:\n    username: "relay\\nuser"\n')
    with pytest.raises(PolicyError) as info:
        policy.load(path)
    assert info.value.errors[0].startswith(f"{path}:4: email.smtp.username: non-printable character U+000A")
    write(path, 'version: 1\nemail:\n  smtp:\n    username: "relay user+\u00e9-{x}"\n')
    assert policy.load(path).smtp_username == "relay user+\u00e9-{x}"
    assert policy.load(path).smtp_username == "relay user+\u00e9-{x}"
    assert len(parses) == 2  # the refused one, then one parse for two loads: the second came from the cache


def test_cache_magic_names_the_format_with_trust_seconds():
    assert CACHE_MAGIC == "pam-twofa-policy-cache 5"  # 5: notify.* and unenrolled: enroll
    assert "trust.seconds 0" in policy.dumps_cache(policy.Policy(), os.stat(REPO)).split("\n")


@pytest.mark.parametrize("items", [(), ("alice",), ("two words", " x ", "CORP\\walter", "jos\u00e9"), ("a", "", "b")])
def test_cached_lists_keep_every_printable_item(items):
    """List items are tab-separated in the cache, so an item with spaces (a future name rule) comes back whole."""
    st_ = os.stat(REPO)
    text = policy.dumps_cache(policy.Policy("/p", exempt_users=items), st_)
    cached = policy.loads_cache(text, "/p", st_)
    assert cached is not None and cached.exempt_users == items


def test_cache_of_the_previous_format_is_ignored(folder, parses):
    path = write(folder / "policy.yaml", ALL)
    policy.load(path)
    lines = _with(_cache_lines(folder), "enforce.mode", "off")
    old = [line for line in lines if not line.startswith("trust.")]  # format 2: no trust.seconds line
    _put_cache(folder, "\n".join(["pam-twofa-policy-cache 2"] + old[1:]))
    assert policy.load(path).mode == "all"
    _put_cache(folder, "\n".join(_with(lines, "exempt.users", "alice")))  # a list without its tab
    assert policy.load(path).mode == "all"
    assert len(parses) == 3


# -- an empty, comment-only, version-less or truncated policy is refused ------------------

MISSING = (
    ': version: missing; add "version: 1" as the first line '
    "(an empty or truncated policy is refused so that an accident cannot switch 2FA off)"
)


@pytest.mark.parametrize(
    "text",
    ["", "\n", "# all commented out\n# enforce:\n#   mode: all\n", "null\n", "---\n", "enforce:\n  mode: all\n"],
    ids=["empty", "newline", "comments", "null", "document-start", "no-version"],
)
def test_empty_or_versionless_policy_is_refused_by_load(folder, text):
    path = write(folder / "policy.yaml", text)
    assert refused(path) == f"{path}:1{MISSING}"
    assert not (folder / ".policy.yaml.cache").exists()


def test_emptied_policy_is_not_hidden_by_an_old_cache(folder):
    """``> policy.yaml`` after a good load: the stale cache must not keep the old policy, nor defaults win."""
    path = write(folder / "policy.yaml", ALL)
    assert policy.load(path).mode == "all"
    write(path, "")
    assert refused(path) == f"{path}:1{MISSING}"


@pytest.mark.parametrize("source", ["pam_twofa/data/policy.yaml", "config/policy.yaml"])
def test_policy_truncated_before_its_version_line_is_refused(folder, source):
    """Cut at every byte up to the end of the ``version: 1`` line: refused each time."""
    with open(os.path.join(REPO, source), encoding="utf-8") as handle:
        text = handle.read()
    end = text.index("version: 1") + len("version: 1")
    path = str(folder / "policy.yaml")
    for cut in range(end):
        write(path, text[:cut])
        with pytest.raises(PolicyError) as info:
            policy.load(path)
        assert info.value.errors[0].startswith(f"{path}:"), (cut, info.value.errors)
    write(path, text)
    assert policy.load(path).version == 1  # control: the whole file loads
