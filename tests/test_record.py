"""pam_twofa.core.record: the text form of a user's record, and what loads refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pam_twofa.core import record
from pam_twofa.core.record import MAGIC, Record, RecordError, dumps, loads

KEY = bytes.fromhex("3132333435363738393031323334353637383930")


def sample(user="alice", **overrides) -> Record:
    fields = dict(
        key=KEY,
        algorithm="SHA256",
        digits=8,
        period=60,
        enrolled_at=1_700_000_000,
        recovery_salt=bytes(range(16)),
        recovery_hashes=[bytes([i]) * 32 for i in range(3)],
        last_step=56666667,
        failures=[1_700_000_100, 1_700_000_160],
        locked_until=1_700_000_900,
        last_success_at=1_699_999_000,
        last_success_rhost="192.0.2.7",
        email="alice@example.org",
        seen={"192.0.2.7": 1_699_999_000},
    )
    fields.update(overrides)
    return Record(user, **fields)


def lines_of(rec=None):
    return dumps(rec or sample()).split("\n")


def join(lines):
    return "\n".join(lines)


def replace_line(name, value, rec=None):
    out = []
    for line in lines_of(rec):
        if line.partition(" ")[0] == name and line != MAGIC:
            out.append(f"{name} {value}")
        else:
            out.append(line)
    return join(out)


# --- roundtrip ----------------------------------------------------------------


def test_roundtrip_sample():
    rec = sample()
    text = dumps(rec)
    assert text.startswith(MAGIC + "\n")
    assert text.endswith("\nend\n")
    back = loads(text, "alice")
    assert back == rec
    assert back.key == KEY
    assert back.failures == [1_700_000_100, 1_700_000_160]
    assert back.recovery_hashes == [bytes([i]) * 32 for i in range(3)]
    assert back.algorithm == "SHA256" and back.digits == 8 and back.period == 60
    assert back.enrolled


def test_roundtrip_default_record_not_enrolled():
    rec = Record("bob")
    back = loads(dumps(rec), "bob")
    assert back == rec
    assert back.key == b"" and not back.enrolled
    assert back.recovery_hashes == [] and back.failures == []
    assert back.last_step == -1


def test_equality_is_field_by_field():
    assert sample() != sample(last_step=1)
    assert sample() != sample(user="bob")
    assert sample() != sample(failures=[])


printable = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Cf", "Co", "Cn", "Zs")) | st.just(" "),
    max_size=60,
).filter(str.isprintable)
ints = st.integers(min_value=-(10**20) + 1, max_value=10**20 - 1)


@settings(max_examples=300, deadline=None)
@given(
    user=printable,
    key=st.binary(max_size=64),
    algorithm=st.sampled_from(["SHA1", "SHA256", "SHA512"]),
    digits=st.integers(min_value=6, max_value=10),
    period=st.integers(min_value=1, max_value=3600),
    enrolled_at=ints,
    salt=st.binary(max_size=32),
    hashes=st.lists(st.binary(min_size=1, max_size=64), max_size=12),
    last_step=ints,
    failures=st.lists(ints, max_size=20),
    locked_until=ints,
    last_success_at=ints,
    rhost=printable,
    email=printable,
)
def test_roundtrip_property(
    user,
    key,
    algorithm,
    digits,
    period,
    enrolled_at,
    salt,
    hashes,
    last_step,
    failures,
    locked_until,
    last_success_at,
    rhost,
    email,
):
    rec = Record(
        user,
        key=key,
        algorithm=algorithm,
        digits=digits,
        period=period,
        enrolled_at=enrolled_at,
        recovery_salt=salt,
        recovery_hashes=hashes,
        last_step=last_step,
        failures=failures,
        locked_until=locked_until,
        last_success_at=last_success_at,
        last_success_rhost=rhost,
        email=email,
    )
    text = dumps(rec)
    back = loads(text, user)
    for name in Record.__slots__:
        assert getattr(back, name) == getattr(rec, name), name
    assert dumps(back) == text


def test_dumps_refuses_control_characters_in_text_fields():
    with pytest.raises(RecordError):
        dumps(sample(email="a@b\nfailures 1"))
    with pytest.raises(RecordError):
        dumps(sample(last_success_rhost="host\rx"))
    with pytest.raises(RecordError):
        dumps(Record("eve\nuser alice"))


def test_copy_is_deep_for_lists():
    rec = sample()
    dup = rec.copy()
    assert dup == rec and dup is not rec
    dup.failures.append(1)
    dup.recovery_hashes.pop()
    assert rec.failures == [1_700_000_100, 1_700_000_160]
    assert len(rec.recovery_hashes) == 3


# --- what loads refuses ---------------------------------------------------------


def test_truncated_at_every_character_offset():
    text = dumps(sample(email="jöe@exämple.org", user="jösé"))
    for cut in range(len(text)):
        with pytest.raises(RecordError):
            loads(text[:cut], "jösé")
    assert loads(text, "jösé").email == "jöe@exämple.org"


def test_truncated_at_every_byte_offset():
    data = dumps(sample(email="jöe@exämple.org", user="jösé")).encode("utf-8")
    for cut in range(len(data)):
        chunk = data[:cut]
        # as the store reads it: strict UTF-8, then loads; both errors are a refusal
        with pytest.raises((RecordError, UnicodeDecodeError)):
            loads(chunk.decode("utf-8"), "jösé")
        # and even if the bytes were decoded leniently, the record is refused
        with pytest.raises(RecordError):
            loads(chunk.decode("utf-8", "replace"), "jösé")


@pytest.mark.parametrize(
    "magic",
    [
        "pam-twofa-record 4",
        "pam-twofa-record 0",
        "pam-twofa-record 02",
        "pam-twofa-record ²",
        "pam-twofa-record",
        "PAM-TWOFA-RECORD 1",
        " pam-twofa-record 1",
        "pam-twofa-record 1 ",
        "",
    ],
)
def test_wrong_magic(magic):
    lines = lines_of()
    lines[0] = magic
    with pytest.raises(RecordError):
        loads(join(lines), "alice")


def test_missing_end_or_trailing_newline():
    text = dumps(sample())
    with pytest.raises(RecordError):
        loads(text[: -len("end\n")], "alice")
    with pytest.raises(RecordError):
        loads(text + "\n", "alice")  # blank line after end
    with pytest.raises(RecordError):
        loads(text + "extra 1\n", "alice")  # data after end
    with pytest.raises(RecordError):
        loads(text + "x", "alice")  # data after the final newline
    with pytest.raises(RecordError):
        loads(text + " ", "alice")
    with pytest.raises(RecordError):
        loads(text.replace("\n", "\r\n"), "alice")
    with pytest.raises(RecordError):
        loads("", "alice")


FIELD_NAMES = [line.partition(" ")[0] for line in lines_of()[1:-2]]


def test_field_names_are_all_the_record_fields():
    assert sorted(FIELD_NAMES) == sorted(Record.__slots__)


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_missing_field(name):
    lines = [line for line in lines_of() if line.partition(" ")[0] != name or line == MAGIC]
    assert len(lines) == len(lines_of()) - 1
    with pytest.raises(RecordError):
        loads(join(lines), "alice")


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_duplicated_field(name):
    lines = lines_of()
    index = next(i for i, line in enumerate(lines) if line.partition(" ")[0] == name and i > 0)
    lines.insert(index + 1, lines[index])  # same line twice, same value
    with pytest.raises(RecordError):
        loads(join(lines), "alice")


@pytest.mark.parametrize("extra", ["admin 1", "role root", "key2 00", "end_ 1", " leading 1", "nospace", ""])
def test_extra_field_or_line(extra):
    lines = lines_of()
    lines.insert(2, extra)
    with pytest.raises(RecordError):
        loads(join(lines), "alice")


def test_other_users_record():
    text = dumps(sample(user="alice"))
    with pytest.raises(RecordError):
        loads(text, "mallory")
    with pytest.raises(RecordError):
        loads(text, "alice ")
    with pytest.raises(RecordError):
        loads(text, "Alice")
    with pytest.raises(RecordError):
        loads(text, "")
    assert loads(text, "alice").user == "alice"


INT_FIELDS = ["digits", "period", "enrolled_at", "last_step", "locked_until", "last_success_at"]
BAD_INTS = [
    "+1",
    "1_0",
    " 1",
    "1 ",
    "",
    "-",
    "--1",
    "0x10",
    "1e3",
    "1.0",
    "٣",
    "１",
    "²",
    "一",
    "+",
    "99999999999999999999999",
]


@pytest.mark.parametrize("name", INT_FIELDS)
@pytest.mark.parametrize("bad", BAD_INTS)
def test_bad_integer_fields(name, bad):
    with pytest.raises(RecordError):
        loads(replace_line(name, bad), "alice")


@pytest.mark.parametrize("bad", [b for b in BAD_INTS if b] + ["1,,2", ",1", "1,", "1, 2", " "])
def test_bad_failure_timestamps(bad):
    with pytest.raises(RecordError):
        loads(replace_line("failures", bad), "alice")


def test_good_integer_edge_forms():
    rec = loads(replace_line("last_step", "-5"), "alice")
    assert rec.last_step == -5
    rec = loads(replace_line("failures", "-1,0,7"), "alice")
    assert rec.failures == [-1, 0, 7]


BAD_HEX = ["zz", "abc", "0g", "12 34", " 1234", "1234 ", "12\t34", "１２", "0x12", "12-34", "éé"]


@pytest.mark.parametrize("name", ["key", "recovery_salt"])
@pytest.mark.parametrize("bad", BAD_HEX)
def test_bad_hex_fields(name, bad):
    with pytest.raises(RecordError):
        loads(replace_line(name, bad), "alice")


@pytest.mark.parametrize("bad", BAD_HEX + ["00,zz", "00,0"])
def test_bad_recovery_hashes(bad):
    with pytest.raises(RecordError):
        loads(replace_line("recovery_hashes", bad), "alice")


@pytest.mark.parametrize("bad", ["sha1", "MD5", "SHA-1", "SHA384", "", " SHA1", "SHA1 "])
def test_bad_algorithm(bad):
    with pytest.raises(RecordError):
        loads(replace_line("algorithm", bad), "alice")


@pytest.mark.parametrize(
    "name, bad", [("digits", "5"), ("digits", "11"), ("digits", "-6"), ("period", "0"), ("period", "3601")]
)
def test_out_of_range_totp_parameters(name, bad):
    with pytest.raises(RecordError):
        loads(replace_line(name, bad), "alice")


@pytest.mark.parametrize("bad", ["a\x00b", "a\x1bb", "a\u2028b", "a\x85b", "x" * 1025])
def test_bad_text_fields(bad):
    with pytest.raises(RecordError):
        loads(replace_line("email", bad), "alice")
    with pytest.raises(RecordError):
        loads(replace_line("last_success_rhost", bad), "alice")


def test_oversized_record():
    text = dumps(sample())
    padded = text.replace("email alice@example.org", "email " + "a" * (record.MAX_BYTES + 1))
    with pytest.raises(RecordError):
        loads(padded, "alice")


def test_record_error_is_value_error():
    assert issubclass(RecordError, ValueError)


# --- repr never shows the secret -------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=10, max_size=64), hashes=st.lists(st.binary(min_size=16, max_size=32), max_size=3))
def test_repr_never_contains_key(key, hashes):
    rec = Record("alice", key=key, recovery_hashes=hashes, recovery_salt=b"saltsaltsaltsalt")
    shown = repr(rec) + str(rec)
    assert key.hex() not in shown
    assert repr(key) not in shown
    assert key.hex().upper() not in shown
    for h in hashes:
        assert h.hex() not in shown
    assert "saltsaltsaltsalt" not in shown
    assert "alice" in shown and "enrolled=True" in shown


def test_repr_sample_exact():
    assert repr(sample()) == "Record(user='alice', enrolled=True, failures=2)"
    assert repr(Record("bob")) == "Record(user='bob', enrolled=False, failures=0)"


# --- format versions (docs/store.md) -----------------------------------------

CORPUS = Path(__file__).parent / "data" / "records"
CORPUS_USERS = {
    "v1-enrolled": "alice",
    "v1-locked": "bob",
    "v1-email-pending": "carol",
    "v1-address-only": "dave.d-1@corp",
    "v2-trusted": "erin",
}


def test_corpus_has_a_record_of_every_released_format():
    versions = {path.read_text().split("\n", 1)[0] for path in CORPUS.glob("*.rec")}
    assert versions == {f"pam-twofa-record {v}" for v in range(1, record.VERSION)} | {"pam-twofa-record 1"}


@pytest.mark.parametrize("name", sorted(CORPUS_USERS))
def test_records_of_older_formats_keep_loading(name):
    """Records written by released versions load; fields added since take their defaults; a save writes the current format."""
    text = (CORPUS / f"{name}.rec").read_text()
    loaded = loads(text, CORPUS_USERS[name])
    assert loaded.trusted == ({} if name.startswith("v1") else {"192.0.2.7": 1764390000, "2001:db8::5": 1764391000})
    assert loaded.seen == {} and loaded.invited_at == 0
    again = dumps(loaded)
    assert again.startswith("pam-twofa-record 2\n")  # nothing of version 3 in it (see written_version)
    assert loads(again, CORPUS_USERS[name]) == loaded
    # Every value the old text held survives the upgrade.
    for line in text.split("\n")[1:-2]:
        key, _sep, value = line.partition(" ")
        assert f"\n{key} {value}\n" in again


def test_v1_corpus_values():
    bob = loads((CORPUS / "v1-locked.rec").read_text(), "bob")
    assert bob.enrolled and bob.algorithm == "SHA256" and bob.digits == 8 and bob.period == 60
    assert bob.locked_until == 1764300940 and len(bob.failures) == 5
    carol = loads((CORPUS / "v1-email-pending.rec").read_text(), "carol")
    assert not carol.enrolled and carol.email == "carol@example.com" and carol.email_code_expires == 1764300600


def test_a_v1_record_with_a_field_of_a_later_version_is_refused():
    text = (CORPUS / "v1-enrolled.rec").read_text().replace("\nend\n", "\ntrusted \nend\n")
    with pytest.raises(RecordError):
        loads(text, "alice")


def test_a_record_of_a_newer_format_is_refused_with_a_reason():
    text = dumps(sample()).replace(MAGIC, f"pam-twofa-record {record.VERSION + 1}", 1)
    with pytest.raises(RecordError, match="newer"):
        loads(text, "alice")


def test_every_field_has_a_codec_a_default_and_a_version():
    for name, codec, _default, since in record.FIELDS:
        assert codec in ("int", "hex", "text", "hexlist", "intlist", "addresses"), name
        assert 1 <= since <= record.VERSION, name
    assert max(since for *_rest, since in record.FIELDS) == record.VERSION


def test_trusted_roundtrip_and_limits():
    rec = sample(trusted={"192.0.2.7": 1_700_000_500, "2001:db8::1": 1_700_000_600})
    assert loads(dumps(rec), "alice").trusted == rec.trusted
    too_many = sample(trusted={f"192.0.2.{i}": 1 for i in range(record.MAX_TRUSTED + 1)})
    with pytest.raises(RecordError):
        loads(dumps(too_many), "alice")
    for bad in ("192.0.2.7", "=5", "a=b", "1.2.3.4=5,1.2.3.4=6", "a b=5"):
        with pytest.raises(RecordError):
            loads(replace_line("trusted", bad), "alice")


def test_a_record_is_written_in_the_oldest_version_that_holds_it():
    """A host not upgraded yet reads it (fleets upgrade host by host) until a newer field is used."""
    plain = sample(seen={})
    text = dumps(plain)
    assert text.startswith("pam-twofa-record 2\n") and "\nseen " not in text and "\ninvited_at " not in text
    assert loads(text, "alice") == plain
    for field, value in (("seen", {"192.0.2.1": 5}), ("invited_at", 5)):
        text = dumps(sample(**{"seen": {}, field: value}))
        assert text.startswith(MAGIC + "\n") and f"\n{field} " in text
    assert dumps(Record("bob")).startswith(f"pam-twofa-record {record.WRITE_FLOOR}\n")
