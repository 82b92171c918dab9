"""The class declarations mypy checks (``Record``, ``Policy``) match the tables the code runs on.

``Record`` and ``Policy`` keep their fields in ``__slots__`` built from a table
(record.FIELDS, policy.SCHEMA): the table drives parsing, defaults and the
text forms, while the annotated declarations let mypy reject a misspelled or
mistyped field. A field added to one and not the other, in another order or
with another type, fails here.
"""

import types

import pytest

from pam_twofa import policy
from pam_twofa.core import record
from pam_twofa.core.record import Record
from pam_twofa.policy import Policy


def _runtime_class(declared: object) -> type:
    """The class a value of the declared type is an instance of (``list[int]`` -> list; ``str | None`` -> str)."""
    if isinstance(declared, types.UnionType):
        return next(a for a in declared.__args__ if a is not type(None))
    origin = getattr(declared, "__origin__", declared)
    assert isinstance(origin, type)
    return origin


def record_table() -> list[tuple[str, object]]:
    """(name, type) of every Record field as record.FIELDS and CODEC_TYPES say, in order."""
    return [("user", str)] + [(name, record.CODEC_TYPES[codec]) for name, codec, _d, _v in record.FIELDS]


def test_record_declarations_are_the_fields_table_in_order():
    assert list(Record.__annotations__.items()) == record_table()


def test_record_slots_are_the_declarations():
    assert list(Record.__slots__) == list(Record.__annotations__)


def test_every_record_codec_has_a_type():
    assert {codec for _n, codec, _d, _v in record.FIELDS} == set(record.CODEC_TYPES)


def test_record_defaults_and_parsed_values_have_the_declared_types():
    fresh = Record("alice")
    parsed = record.loads(
        record.dumps(Record("alice", key=b"k" * 20, recovery_hashes=[b"h"], trusted={"1.2.3.4": 9})), "alice"
    )
    for name, declared in Record.__annotations__.items():
        for value in (getattr(fresh, name), getattr(parsed, name)):
            assert isinstance(value, _runtime_class(declared)), (name, value)


def test_policy_declarations_are_the_schema_in_order():
    expected = [("path", str), ("_networks", "list[Network] | None")] + [
        (attr, policy.KIND_TYPES[kind]) for attr, _key, kind, _default in policy.FIELDS
    ]
    assert list(Policy.__annotations__.items()) == expected


def test_policy_slots_are_the_declarations():
    assert list(Policy.__slots__) == list(Policy.__annotations__)


def test_every_policy_kind_has_a_type():
    assert {kind for _a, _k, kind, _d in policy.FIELDS} == set(policy.KIND_TYPES)


@pytest.mark.parametrize("attr", [f[0] for f in policy.FIELDS])
def test_policy_defaults_have_the_declared_types(attr):
    value = getattr(Policy(), attr)
    declared = Policy.__annotations__[attr]
    assert isinstance(value, _runtime_class(declared)) or (value is None and isinstance(declared, types.UnionType))
