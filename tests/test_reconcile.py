"""pam_twofa.core.reconcile: merging a host's offline journal into the database's record (issue 23).

Small literal records, one test per rule of the module docstring, then whole
scenarios: two hosts offline merging one after the other, and real logins
(core.auth) on both sides.
"""

from __future__ import annotations

import pytest
from support.codes import code_not_in

from pam_twofa.core import auth, totp
from pam_twofa.core.auth import Limits
from pam_twofa.core.reconcile import (
    CHANGED_OFFLINE,
    IDENTITY,
    MERGED,
    REENROLLED,
    REMOVED,
    UNWRITABLE,
    Merged,
    merge,
)
from pam_twofa.core.record import FIELDS, MAX_TRUSTED, Record, dumps, loads
from pam_twofa.core.recovery import new_codes

NOW = 1_700_000_010  # step 56666667 at period 30
STEP = NOW // 30
LIMITS = Limits(max_failures=3, per_seconds=900, window=1)
SEND_WINDOW = 3600
KEY = b"reconcile-test-secret-key-01234"
SALT = b"recovery-salt-16"
H1, H2, H3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
BASE_V, CURRENT_V = 5, 7
A, B, C = "203.0.113.9", "198.51.100.4", "192.0.2.7"


def enrolled(**fields: object) -> Record:
    values: dict[str, object] = {
        "key": KEY,
        "enrolled_at": NOW - 86400,
        "recovery_salt": SALT,
        "recovery_hashes": [H1, H2, H3],
        "last_step": STEP - 100,
    }
    values.update(fields)
    return Record("alice", **values)


def changed(record: Record, **fields: object) -> Record:
    new = record.copy()
    for name, value in fields.items():
        setattr(new, name, value)
    return new


def run(
    current: Record | None,
    base: Record | None,
    local: Record,
    steps: list[int] | None = None,
    current_version: int = CURRENT_V,
    base_version: int = BASE_V,
    now: int = NOW,
) -> Merged:
    out = merge(current, current_version, base, base_version, local, steps or [], now, LIMITS, SEND_WINDOW)
    if out.record is not None:
        assert out.dropped == ""
        assert loads(dumps(out.record), "alice") == out.record  # writable: the record's own checks pass
    else:
        assert out.dropped and "\n" not in out.dropped and out.twice == []
    return out


def merged(
    current: Record | None,
    base: Record | None,
    local: Record,
    current_version: int = CURRENT_V,
    base_version: int = BASE_V,
) -> Record:
    out = run(current, base, local, current_version=current_version, base_version=base_version)
    assert out.record is not None, out.dropped
    return out.record


# -- the table of fields --------------------------------------------------------------------


def test_every_field_has_a_rule_identity_or_merged():
    """A field added to record.FIELDS without a rule here fails: it would silently take current's value."""
    names = [f[0] for f in FIELDS]
    assert sorted(IDENTITY + MERGED) == sorted(names)
    assert not set(IDENTITY) & set(MERGED)


# -- rule 1: nothing written meanwhile --------------------------------------------------------


def test_nothing_written_meanwhile_writes_local_as_it_is():
    base = enrolled(failures=[NOW - 100, NOW - 50], trusted={B: NOW + 60})
    # a success here cleared the failures and forgot the trust that no longer applied (trust.renew)
    local = changed(base, failures=[], last_step=STEP, trusted={A: NOW + 60}, last_success_at=NOW - 1)
    # current is what the database holds at base's version: base itself
    out = run(base, base, local, steps=[STEP], current_version=BASE_V)
    assert out.record == local and out.record is not local
    assert out.record.failures is not local.failures and out.record.trusted is not local.trusted
    assert out.twice == []


def test_nothing_written_meanwhile_without_a_record_writes_local():
    local = Record("alice", email_sends=[NOW - 5], failures=[NOW - 3])
    out = run(None, None, local, current_version=0, base_version=0)
    assert out.record == local


# -- rule 2: identity ------------------------------------------------------------------------


IDENTITY_CHANGES = {
    "key": b"another-secret-key-0123456789ab",
    "digits": 8,
    "period": 60,
    "algorithm": "SHA256",
    "enrolled_at": NOW - 5,
    "recovery_salt": b"other-salt-16byt",
    "email": "alice@example.org",
}


def test_identity_changes_cover_the_identity_fields():
    assert set(IDENTITY_CHANGES) == set(IDENTITY)


@pytest.mark.parametrize("field", sorted(IDENTITY_CHANGES))
@pytest.mark.parametrize("current_version", [BASE_V, CURRENT_V])
def test_identity_changed_offline_drops_the_journal(field, current_version):
    base = enrolled()
    local = changed(base, **{field: IDENTITY_CHANGES[field]}, failures=[NOW - 1])
    out = run(base, base, local, current_version=current_version)
    assert out.record is None and out.dropped == CHANGED_OFFLINE


def test_enrolled_offline_without_a_base_drops_the_journal():
    local = enrolled()  # base None: the identity must be an empty Record's
    out = run(Record("alice"), None, local)
    assert out.record is None and out.dropped == CHANGED_OFFLINE


def test_a_tombstone_meanwhile_wins_over_the_journal():
    base = enrolled()
    local = changed(base, last_step=STEP, failures=[NOW - 10], trusted={A: NOW + 600})
    out = run(None, base, local, steps=[STEP])
    assert out.record is None and out.dropped == REMOVED


@pytest.mark.parametrize("field", ["key", "enrolled_at"])
def test_a_reenrollment_meanwhile_drops_the_journal(field):
    base = enrolled()
    local = changed(base, last_step=STEP, failures=[NOW - 10])
    current = changed(base, **{field: IDENTITY_CHANGES[field]}, last_step=-1)
    out = run(current, base, local, steps=[STEP])
    assert out.record is None and out.dropped == REENROLLED


def test_unenrolled_meanwhile_drops_the_journal():
    base = enrolled()
    current = Record("alice", email_sends=[NOW - 50])  # enrolled state gone, the row still there
    out = run(current, base, changed(base, last_step=STEP))
    assert out.record is None and out.dropped == REENROLLED


def test_created_and_removed_meanwhile_without_a_base_drops_the_journal():
    local = Record("alice", failures=[NOW - 5])
    out = run(None, None, local, current_version=3, base_version=0)
    assert out.record is None and out.dropped == REMOVED


@pytest.mark.parametrize("field", ["digits", "period", "algorithm", "recovery_salt", "email"])
def test_other_identity_changes_meanwhile_keep_currents_identity(field):
    base = enrolled()
    local = changed(base, failures=[NOW - 10])
    current = changed(base, **{field: IDENTITY_CHANGES[field]})
    out = merged(current, base, local)
    assert getattr(out, field) == IDENTITY_CHANGES[field]
    assert out.failures == [NOW - 10]


def test_without_a_base_the_emailed_code_path_merges_against_an_empty_record():
    """An unenrolled user logged in offline with emailed codes: no row before, another host created one."""
    local = Record(
        "alice",
        failures=[NOW - 40, NOW - 2000],  # the second is out of the window
        email_sends=[NOW - 100],
        email_code_salt=b"local-salt",
        email_code_hash=b"L" * 32,
        email_code_expires=NOW + 500,
        last_success_at=NOW - 30,
        last_success_rhost=A,
        trusted={A: NOW + 3000},
    )
    current = Record(
        "alice",
        failures=[NOW - 20],
        email_sends=[NOW - 200],
        email_code_salt=b"other-salt",
        email_code_hash=b"C" * 32,
        email_code_expires=NOW + 400,
        last_success_at=NOW - 60,
        last_success_rhost=B,
    )
    out = merged(current, None, local, base_version=0, current_version=1)
    assert out.failures == [NOW - 40, NOW - 20]
    assert out.email_sends == [NOW - 200, NOW - 100]
    assert (out.email_code_salt, out.email_code_hash, out.email_code_expires) == (b"local-salt", b"L" * 32, NOW + 500)
    assert (out.last_success_at, out.last_success_rhost) == (NOW - 30, A)
    assert out.trusted == {A: NOW + 3000}


def test_without_a_base_a_user_enrolled_meanwhile_keeps_the_enrollment():
    local = Record("alice", failures=[NOW - 40])
    current = enrolled(last_step=STEP)
    out = merged(current, None, local, base_version=0, current_version=1)
    assert IDENTITY and all(getattr(out, name) == getattr(current, name) for name in IDENTITY)
    assert out.recovery_hashes == [H1, H2, H3] and out.last_step == STEP
    assert out.failures == [NOW - 40]


def test_an_unenrolled_base_enrolled_meanwhile_merges_keeping_the_enrollment():
    """The offline logins used emailed codes, not a secret: enrolling meanwhile is no reason to drop them."""
    base = Record("alice", email_code_salt=b"s1", email_code_hash=b"B" * 32, email_code_expires=NOW + 100)
    local = changed(base, failures=[NOW - 40, NOW - 30])
    current = enrolled(enrolled_at=NOW - 60)
    out = merged(current, base, local)
    assert out.key == KEY and out.enrolled_at == NOW - 60
    assert out.failures == [NOW - 40, NOW - 30]


def test_records_of_another_user_are_refused():
    base = enrolled()
    with pytest.raises(ValueError):
        merge(Record("bob"), CURRENT_V, base, BASE_V, base.copy(), [], NOW, LIMITS, SEND_WINDOW)
    with pytest.raises(ValueError):
        merge(base, CURRENT_V, Record("bob"), BASE_V, base.copy(), [], NOW, LIMITS, SEND_WINDOW)


# -- rule 3: the state fields --------------------------------------------------------------------


@pytest.mark.parametrize("mine, theirs", [(STEP, STEP - 5), (STEP - 5, STEP)])
def test_the_highest_step_wins(mine, theirs):
    base = enrolled()
    out = merged(changed(base, last_step=theirs), base, changed(base, last_step=mine))
    assert out.last_step == STEP


def test_failures_are_currents_plus_those_added_offline_in_the_window():
    base = enrolled(failures=[NOW - 800])
    local = changed(base, failures=[NOW - 800, NOW - 1000, NOW - 5])  # NOW - 1000: added, but out of the window
    current = changed(base, failures=[NOW - 800, NOW - 50])
    out = merged(current, base, local)
    assert out.failures == [NOW - 800, NOW - 50, NOW - 5]  # base's NOW - 800 once, not twice
    assert out.locked_until == NOW - 5 + LIMITS.per_seconds  # three in the window: locked


def test_a_success_offline_does_not_erase_failures_elsewhere():
    base = enrolled(failures=[NOW - 100])
    local = changed(base, failures=[], last_success_at=NOW - 10)  # auth._succeed clears them
    current = changed(base, failures=[NOW - 100, NOW - 60])
    assert merged(current, base, local).failures == [NOW - 100, NOW - 60]


def test_failures_on_two_hosts_add_up_to_a_lockout():
    base = enrolled()
    local = changed(base, failures=[NOW - 30, NOW - 20])  # two: below max_failures here
    current = changed(base, failures=[NOW - 25])  # one elsewhere
    out = merged(current, base, local)
    assert out.failures == [NOW - 30, NOW - 25, NOW - 20]
    assert out.locked_until == NOW - 20 + LIMITS.per_seconds
    assert auth.is_locked(out, NOW)


def test_failures_below_the_limit_do_not_lock():
    base = enrolled()
    out = merged(changed(base, failures=[NOW - 25]), base, changed(base, failures=[NOW - 30]))
    assert out.locked_until == 0


@pytest.mark.parametrize("mine, theirs", [(NOW + 600, NOW + 300), (NOW + 300, NOW + 600)])
def test_the_later_lockout_wins(mine, theirs):
    base = enrolled()
    out = merged(changed(base, locked_until=theirs), base, changed(base, locked_until=mine))
    assert out.locked_until == NOW + 600


def test_an_unlock_meanwhile_is_not_undone_by_the_base_lockout_kept_offline():
    base = enrolled(locked_until=NOW + 600, failures=[NOW - 300, NOW - 200, NOW - 100])
    local = changed(base, last_step=base.last_step)  # refused logins offline: the lockout unchanged
    current = changed(base, locked_until=0, failures=[])  # twofa-admin unlock
    out = merged(current, base, local)
    assert out.locked_until == 0 and out.failures == []


@pytest.mark.parametrize("local_later", [True, False])
def test_the_later_success_is_remembered_with_its_address(local_later):
    base = enrolled(last_success_at=NOW - 1000, last_success_rhost=C)
    mine, theirs = (NOW - 10, NOW - 20) if local_later else (NOW - 20, NOW - 10)
    local = changed(base, last_success_at=mine, last_success_rhost=A)
    current = changed(base, last_success_at=theirs, last_success_rhost=B)
    out = merged(current, base, local)
    assert (out.last_success_at, out.last_success_rhost) == ((NOW - 10, A) if local_later else (NOW - 10, B))


def test_a_recovery_code_used_offline_is_used_everywhere():
    base = enrolled()  # H1, H2, H3
    local = changed(base, recovery_hashes=[H1, H3])  # H2 used here, offline
    current = changed(base, recovery_hashes=[H2, H3])  # H1 used elsewhere, online
    assert merged(current, base, local).recovery_hashes == [H3]


def test_recovery_codes_regenerated_meanwhile_are_currents():
    base = enrolled()
    local = changed(base, recovery_hashes=[H1, H3])
    current = changed(base, recovery_salt=b"other-salt-16byt", recovery_hashes=[H2, b"\x04" * 32])
    assert merged(current, base, local).recovery_hashes == [H2, b"\x04" * 32]


def _unit(salt: bytes, digest: bytes, expires: int) -> dict[str, object]:
    return {"email_code_salt": salt, "email_code_hash": digest, "email_code_expires": expires}


BASE_CODE = _unit(b"s-base", b"B" * 32, NOW + 300)
CONSUMED = _unit(b"", b"", 0)
LOCAL_CODE = _unit(b"s-local", b"L" * 32, NOW + 500)
CURRENT_CODE = _unit(b"s-current", b"C" * 32, NOW + 400)


@pytest.mark.parametrize(
    "base_unit, local_unit, current_unit, expected",
    [
        (BASE_CODE, BASE_CODE, CURRENT_CODE, CURRENT_CODE),  # unchanged offline: current's
        (BASE_CODE, BASE_CODE, CONSUMED, CONSUMED),
        (BASE_CODE, LOCAL_CODE, BASE_CODE, LOCAL_CODE),  # unchanged meanwhile: local's
        (BASE_CODE, CONSUMED, BASE_CODE, CONSUMED),  # consumed offline: never usable again
        (BASE_CODE, CONSUMED, CURRENT_CODE, CURRENT_CODE),  # current's new code replaced the base code
        (BASE_CODE, LOCAL_CODE, CONSUMED, LOCAL_CODE),  # local's new code replaced the base code
        (BASE_CODE, CONSUMED, CONSUMED, CONSUMED),
        (BASE_CODE, LOCAL_CODE, CURRENT_CODE, LOCAL_CODE),  # both new: the later expiry
        (BASE_CODE, CURRENT_CODE, LOCAL_CODE, LOCAL_CODE),
        (BASE_CODE, {**LOCAL_CODE, "email_code_expires": NOW + 400}, CURRENT_CODE, CURRENT_CODE),  # a tie: current's
        # the base code still held, with another expiry (not made by auth): the side holding it loses
        (BASE_CODE, CONSUMED, {**BASE_CODE, "email_code_expires": NOW + 900}, CONSUMED),
        (
            {**BASE_CODE, "email_code_expires": NOW + 900},
            {**BASE_CODE, "email_code_expires": NOW + 901},
            CONSUMED,
            CONSUMED,
        ),
        (CONSUMED, LOCAL_CODE, CURRENT_CODE, LOCAL_CODE),
        (CONSUMED, _unit(b"s-local", b"L" * 32, NOW + 100), CURRENT_CODE, CURRENT_CODE),
    ],
)
def test_the_emailed_code_merges_as_one_unit(base_unit, local_unit, current_unit, expected):
    base = Record("alice", **base_unit)
    local = changed(base, **local_unit)
    current = changed(base, **current_unit)
    out = merged(current, base, local)
    assert (out.email_code_salt, out.email_code_hash, out.email_code_expires) == tuple(expected.values())


def test_email_sends_are_currents_plus_those_added_offline_in_the_window():
    base = Record("alice", email_sends=[NOW - 3000])
    local = changed(base, email_sends=[NOW - 3000, NOW - 4000, NOW - 10])  # NOW - 4000 out of the window
    current = changed(base, email_sends=[NOW - 3000, NOW - 100])
    assert merged(current, base, local).email_sends == [NOW - 3000, NOW - 100, NOW - 10]


def test_trust_is_merged_with_the_later_expiry_per_address():
    d = "2001:db8::1"
    base = enrolled(trusted={A: NOW + 100, B: NOW + 100, d: NOW + 100})
    local = changed(base, trusted={A: NOW + 900, B: NOW + 100, C: NOW + 700, d: NOW + 400})
    current = changed(base, trusted={A: NOW + 500, B: NOW + 800, d: NOW + 600})
    assert merged(current, base, local).trusted == {A: NOW + 900, B: NOW + 800, C: NOW + 700, d: NOW + 600}


def test_trust_that_has_ended_is_dropped():
    base = enrolled()
    local = changed(base, trusted={A: NOW, C: NOW + 1})
    current = changed(base, trusted={B: NOW - 5})
    assert merged(current, base, local).trusted == {C: NOW + 1}


def test_forgotten_trust_meanwhile_stays_forgotten():
    base = enrolled(trusted={A: NOW + 100, B: NOW + 100})
    local = changed(base, trusted={A: NOW + 100, B: NOW + 900})  # A kept as it was, B renewed by a login here
    current = changed(base, trusted={})  # twofa-enroll --forget-trusted
    assert merged(current, base, local).trusted == {B: NOW + 900}


def test_at_most_max_trusted_addresses_the_soonest_expiry_going_first():
    base = enrolled()
    mine = {f"10.0.0.{i}": NOW + 100 + i for i in range(MAX_TRUSTED)}
    theirs = {f"10.0.1.{i}": NOW + 100 + i for i in range(MAX_TRUSTED)}
    out = merged(changed(base, trusted=theirs), base, changed(base, trusted=mine))
    assert len(out.trusted) == MAX_TRUSTED
    # the latest half of each side; on equal expiry the greater address stays ("10.0.1.x" > "10.0.0.x")
    everything = {**mine, **theirs}
    kept = sorted(everything, key=lambda a: (everything[a], a))[MAX_TRUSTED:]
    assert out.trusted == {a: everything[a] for a in kept}
    assert "10.0.0.0" not in out.trusted and f"10.0.1.{MAX_TRUSTED - 1}" in out.trusted


def test_currents_other_state_is_kept():
    base = enrolled()
    current = changed(base, last_step=STEP, recovery_hashes=[H3], email_sends=[NOW - 5])
    out = merged(current, base, base.copy())  # nothing done offline
    assert out == current


def test_a_merge_the_record_refuses_drops_the_journal():
    base = enrolled(digits=5)  # not a valid record: dumps refuses it
    out = run(changed(base, failures=[NOW - 1]), base, changed(base, failures=[NOW - 2]))
    assert out.record is None and out.dropped == UNWRITABLE


# -- twice: a step accepted offline here and elsewhere ----------------------------------------------


def test_a_step_accepted_here_and_elsewhere_is_reported_twice():
    base = enrolled(last_step=STEP - 10)
    local = changed(base, last_step=STEP)
    current = changed(base, last_step=STEP)
    out = run(current, base, local, steps=[STEP - 3, STEP])
    assert out.twice == [STEP]
    assert out.record is not None and out.record.last_step == STEP


@pytest.mark.parametrize(
    "base_step, current_step, steps",
    [
        (STEP - 10, STEP + 1, [STEP - 3, STEP]),  # elsewhere a later step: not the same one
        (STEP - 10, STEP - 3, [STEP]),  # elsewhere STEP - 3, here STEP only
        (STEP, STEP, [STEP]),  # current did not rise above base: nothing accepted elsewhere
        (STEP - 10, STEP, []),  # nothing accepted here
    ],
)
def test_no_twice_without_the_same_new_step_on_both_sides(base_step, current_step, steps):
    base = enrolled(last_step=base_step)
    local = changed(base, last_step=max([base_step, *steps]))
    out = run(changed(base, last_step=current_step), base, local, steps=steps)
    assert out.twice == []


def test_no_twice_when_nothing_was_written_meanwhile():
    base = enrolled(last_step=STEP - 10)
    local = changed(base, last_step=STEP)
    out = run(local.copy(), base, local, steps=[STEP], current_version=BASE_V)
    assert out.twice == []


# -- rule 4: the inputs are never changed ---------------------------------------------------------


def test_the_inputs_are_never_changed_nor_shared_with_the_result():
    base = enrolled(failures=[NOW - 50], trusted={A: NOW + 100}, email_sends=[NOW - 10])
    local = changed(base, failures=[NOW - 50, NOW - 5], recovery_hashes=[H1], trusted={A: NOW + 900, C: NOW + 50})
    current = changed(base, failures=[NOW - 50, NOW - 20, NOW - 3000], recovery_hashes=[H1, H2], trusted={B: NOW + 10})
    steps = [STEP]
    before = [dumps(r) for r in (current, base, local)]
    for current_version in (BASE_V, CURRENT_V):
        out = run(current, base, local, steps=steps, current_version=current_version)
        assert out.record is not None
        assert [dumps(r) for r in (current, base, local)] == before and steps == [STEP]
        out.record.failures.append(1)
        out.record.recovery_hashes.append(b"x")
        out.record.email_sends.append(1)
        out.record.trusted["10.9.9.9"] = 1
        assert [dumps(r) for r in (current, base, local)] == before


def test_dropped_reasons_are_one_line_without_secrets():
    for reason in (CHANGED_OFFLINE, REMOVED, REENROLLED, UNWRITABLE):
        assert reason and "\n" not in reason and KEY.hex() not in reason
    shown = repr(Merged(enrolled(email_code_hash=b"\x05" * 32), "", [STEP]))
    assert str(STEP) in shown and KEY.hex() not in shown and str(KEY) not in shown and "0505" not in shown


# -- scenarios: two hosts offline, merging one after the other --------------------------------------


def _two_hosts() -> tuple[Record, Record, Record]:
    base = enrolled(failures=[NOW - 500], trusted={C: NOW + 100}, last_success_at=NOW - 3000)
    host_a = changed(
        base,
        last_step=STEP - 2,
        failures=[NOW - 500, NOW - 40],
        recovery_hashes=[H2, H3],  # H1 used on A
        trusted={C: NOW + 100, A: NOW + 1000},
        last_success_at=NOW - 100,
        last_success_rhost=A,
        email_sends=[NOW - 300],
    )
    host_b = changed(
        base,
        last_step=STEP,
        failures=[NOW - 500, NOW - 30],
        recovery_hashes=[H1, H3],  # H2 used on B
        trusted={C: NOW + 100, B: NOW + 1100},
        last_success_at=NOW - 50,
        last_success_rhost=B,
        email_sends=[NOW - 200],
    )
    return base, host_a, host_b


@pytest.mark.parametrize("first", ["A", "B"])
def test_two_hosts_offline_merge_one_after_the_other_to_the_same_record(first):
    base, host_a, host_b = _two_hosts()
    one, two = (host_a, host_b) if first == "A" else (host_b, host_a)
    written = run(base, base, one, current_version=BASE_V)  # the first back: nothing written meanwhile
    assert written.record == one
    out = merged(written.record, base, two, current_version=BASE_V + 1)
    assert out.last_step == STEP
    assert out.failures == [NOW - 500, NOW - 40, NOW - 30]
    assert out.locked_until == NOW - 30 + LIMITS.per_seconds  # 2 + 1 new on top of base's 1: three
    assert out.recovery_hashes == [H3]  # both used codes gone
    assert out.trusted == {C: NOW + 100, A: NOW + 1000, B: NOW + 1100}
    assert (out.last_success_at, out.last_success_rhost) == (NOW - 50, B)
    assert out.email_sends == [NOW - 300, NOW - 200]


def test_the_merge_order_does_not_change_the_result():
    base, host_a, host_b = _two_hosts()
    a_then_b = merged(host_a, base, host_b)
    b_then_a = merged(host_b, base, host_a)
    assert a_then_b == b_then_a


# -- real logins (core.auth) on two hosts ---------------------------------------------------------------


def _code(step: int) -> str:
    return totp.hotp(KEY, step, 6, "SHA1")


def test_real_logins_on_two_hosts_the_same_code_is_seen_twice_and_failures_lock():
    codes, salt, hashes = new_codes(3)
    base = enrolled(recovery_salt=salt, recovery_hashes=hashes, last_step=STEP - 10)
    wrong = code_not_in({_code(STEP + d) for d in range(-2, 3)})

    # Host A, offline: a wrong code, then the current TOTP code, then recovery code 0.
    a = auth.attempt(base, wrong, NOW - 20, LIMITS).record
    ok = auth.attempt(a, _code(STEP), NOW - 10, LIMITS)
    assert ok.result == auth.SUCCESS
    rec = auth.attempt(ok.record, codes[0], NOW - 5, LIMITS)
    assert rec.result == auth.RECOVERY
    host_a, steps_a = rec.record, [STEP]

    # Meanwhile host B (online) accepted the same TOTP code, took recovery code 1, then two wrong codes.
    b = auth.attempt(base, _code(STEP), NOW - 15, LIMITS)
    assert b.result == auth.SUCCESS
    b = auth.attempt(b.record, codes[1], NOW - 12, LIMITS)
    assert b.result == auth.RECOVERY
    b = auth.attempt(b.record, wrong, NOW - 8, LIMITS)
    b = auth.attempt(b.record, wrong, NOW - 4, LIMITS)
    assert not auth.is_locked(b.record, NOW)  # two failures on B alone

    out = run(b.record, base, host_a, steps=steps_a)
    assert out.record is not None
    assert out.twice == [STEP]
    # A's failure was before its success, which cleared it there: A added none, so B's two stay two.
    assert out.record.failures == [NOW - 8, NOW - 4] and not auth.is_locked(out.record, NOW)
    assert out.record.recovery_hashes == [hashes[2]]
    assert auth.attempt(out.record, codes[0], NOW, LIMITS).result == auth.BAD_CODE  # used on A: used everywhere
    assert auth.attempt(out.record, _code(STEP), NOW, LIMITS).result == auth.REPLAYED


def test_real_failures_on_two_hosts_lock_the_account():
    base = enrolled(last_step=STEP - 10)
    wrong = code_not_in({_code(STEP + d) for d in range(-2, 3)})
    a = auth.attempt(base, wrong, NOW - 20, LIMITS).record
    a = auth.attempt(a, wrong, NOW - 10, LIMITS).record
    b = auth.attempt(base, wrong, NOW - 15, LIMITS).record
    assert not auth.is_locked(a, NOW) and not auth.is_locked(b, NOW)
    out = merged(b, base, a)
    assert auth.is_locked(out, NOW)
    assert auth.attempt(out, _code(STEP), NOW, LIMITS).result == auth.LOCKED


def test_addresses_seen_are_merged_the_later_time_per_address():
    base = enrolled(seen={A: NOW - 500})
    local = changed(base, seen={A: NOW - 500, B: NOW - 10})  # a login from B here, offline
    current = changed(base, seen={A: NOW - 100, C: NOW - 50})  # logins elsewhere meanwhile
    assert merged(current, base, local).seen == {A: NOW - 100, B: NOW - 10, C: NOW - 50}


def test_at_most_max_seen_addresses_the_oldest_going_first():
    from pam_twofa.core.record import MAX_SEEN

    base = enrolled()
    mine = {f"10.0.0.{i}": NOW - 1000 + i for i in range(MAX_SEEN)}
    theirs = {f"10.0.1.{i}": NOW - 500 + i for i in range(4)}
    out = merged(changed(base, seen=theirs), base, changed(base, seen=mine))
    assert len(out.seen) == MAX_SEEN and set(theirs) <= set(out.seen) and "10.0.0.0" not in out.seen


def test_the_later_invitation_wins():
    base = enrolled(invited_at=NOW - 90000)
    assert merged(changed(base, invited_at=NOW - 10), base, base).invited_at == NOW - 10
    assert merged(base, base, changed(base, invited_at=NOW - 5)).invited_at == NOW - 5
