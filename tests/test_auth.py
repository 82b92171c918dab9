"""pam_twofa.core.auth: the pure state transition of one code check, with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.codes import code_not_in

from pam_twofa.core import auth, totp
from pam_twofa.core.auth import BAD_CODE, LOCKED, RECOVERY, REPLAYED, SUCCESS, Limits, attempt, normalize_code
from pam_twofa.core.record import Record
from pam_twofa.core.recovery import new_codes

KEY = b"auth-test-secret-key-0123456789"
NOW = 1_700_000_010  # step 56666667 at period 30
STEP = NOW // 30
LIMITS = Limits(max_failures=3, per_seconds=900, window=1)


def enrolled(**fields) -> Record:
    return Record("alice", key=KEY, enrolled_at=NOW - 86400, **fields)


def code(step=STEP, key=KEY, digits=6, algorithm="SHA1") -> str:
    return totp.hotp(key, step, digits, algorithm)


def wrong_code(now=NOW) -> str:
    """A 6-digit code that matches no step of the window at ``now``."""
    return code_not_in({code(now // 30 + d) for d in (-1, 0, 1)}, start=0, stride=1111)


# --- TOTP success, replay, bad code -----------------------------------------------


def test_correct_code_succeeds_and_updates_last_step():
    rec = enrolled(failures=[NOW - 100, NOW - 50], last_step=STEP - 10)
    out = attempt(rec, code(), NOW, LIMITS)
    assert out.result == SUCCESS
    assert out.ok
    assert not out.newly_locked
    assert out.record.last_step == STEP
    assert out.record.failures == []
    assert out.record.last_success_at == NOW
    # the input record is not modified: attempt is pure
    assert rec.last_step == STEP - 10
    assert rec.failures == [NOW - 100, NOW - 50]


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_code_of_any_window_step_is_accepted_and_remembered(offset):
    out = attempt(enrolled(), code(STEP + offset), NOW, LIMITS)
    assert out.result == SUCCESS
    assert out.record.last_step == STEP + offset


def test_code_outside_window_is_bad():
    out = attempt(enrolled(), code(STEP + 2), NOW, LIMITS)
    assert out.result == BAD_CODE
    assert out.record.last_step == -1


def test_same_code_again_is_replayed_and_counts_as_failure():
    first = attempt(enrolled(), code(), NOW, LIMITS)
    assert first.result == SUCCESS
    second = attempt(first.record, code(), NOW + 5, LIMITS)
    assert second.result == REPLAYED
    assert not second.ok
    assert second.record.failures == [NOW + 5]
    assert second.record.last_step == STEP
    assert second.record.last_success_at == NOW


def test_older_step_after_newer_used_is_replayed():
    newer = attempt(enrolled(), code(STEP + 1), NOW, LIMITS)
    assert newer.result == SUCCESS and newer.record.last_step == STEP + 1
    older = attempt(newer.record, code(STEP), NOW, LIMITS)
    assert older.result == REPLAYED
    assert older.record.last_step == STEP + 1
    oldest = attempt(older.record, code(STEP - 1), NOW, LIMITS)
    assert oldest.result == REPLAYED
    assert oldest.record.failures == [NOW, NOW]


def test_next_step_after_used_step_succeeds():
    first = attempt(enrolled(), code(STEP), NOW, LIMITS)
    later = attempt(first.record, code(STEP + 1), NOW + 30, LIMITS)
    assert later.result == SUCCESS
    assert later.record.last_step == STEP + 1


def test_wrong_code_is_bad_and_appends_failure():
    rec = enrolled(failures=[NOW - 10])
    out = attempt(rec, wrong_code(), NOW, LIMITS)
    assert out.result == BAD_CODE
    assert not out.ok
    assert out.record.failures == [NOW - 10, NOW]
    assert out.record.last_step == -1
    assert not out.newly_locked
    assert out.record.locked_until == 0


def test_unenrolled_record_never_succeeds_with_totp():
    rec = Record("alice")
    out = attempt(rec, code(), NOW, LIMITS)
    assert out.result == BAD_CODE
    assert out.record.failures == [NOW]


def test_record_digits_period_algorithm_are_used():
    rec = enrolled(digits=8, period=60, algorithm="SHA512")
    good = totp.totp(KEY, NOW, 8, 60, "SHA512")
    out = attempt(rec, good, NOW, LIMITS)
    assert out.result == SUCCESS
    assert out.record.last_step == NOW // 60
    # the 6-digit SHA1 code of the default parameters is not accepted for that record
    assert attempt(rec, code(), NOW, LIMITS).result == BAD_CODE


# --- lockout --------------------------------------------------------------------


def fail_n(rec, n, start=NOW, spacing=1):
    outs = []
    for i in range(n):
        out = attempt(rec, wrong_code(start + i * spacing), start + i * spacing, LIMITS)
        outs.append(out)
        rec = out.record
    return rec, outs


def test_max_failures_locks_the_account():
    rec, outs = fail_n(enrolled(), 3)
    assert [o.result for o in outs] == [BAD_CODE, BAD_CODE, BAD_CODE]
    assert [o.newly_locked for o in outs] == [False, False, True]
    last_time = NOW + 2
    assert rec.locked_until == last_time + LIMITS.per_seconds
    assert rec.failures == [NOW, NOW + 1, NOW + 2]
    assert auth.is_locked(rec, last_time + 1)
    assert not auth.is_locked(rec, last_time + LIMITS.per_seconds)


def test_replays_count_towards_the_lock():
    first = attempt(enrolled(), code(), NOW, LIMITS)
    rec = first.record
    results = []
    for i in range(3):
        out = attempt(rec, code(), NOW + i, LIMITS)
        results.append((out.result, out.newly_locked))
        rec = out.record
    assert results == [(REPLAYED, False), (REPLAYED, False), (REPLAYED, True)]
    assert rec.locked_until == NOW + 2 + LIMITS.per_seconds


def test_correct_code_while_locked_is_locked_and_changes_nothing():
    rec, _ = fail_n(enrolled(last_step=STEP - 5), 3)
    locked_until = rec.locked_until
    t = NOW + 60
    out = attempt(rec, code(t // 30), t, LIMITS)
    assert out.result == LOCKED
    assert not out.ok
    assert not out.newly_locked
    assert out.record.last_step == STEP - 5
    assert out.record.locked_until == locked_until
    assert out.record.failures == rec.failures  # locked attempts are not counted
    assert out.record.last_success_at == 0


def test_wrong_code_while_locked_does_not_extend_the_lock():
    rec, _ = fail_n(enrolled(), 3)
    out = attempt(rec, wrong_code(NOW + 100), NOW + 100, LIMITS)
    assert out.result == LOCKED
    assert out.record.locked_until == rec.locked_until
    assert len(out.record.failures) == 3


def test_recovery_code_while_locked_is_locked_and_not_consumed():
    codes, salt, hashes = new_codes(2)
    rec, _ = fail_n(enrolled(recovery_salt=salt, recovery_hashes=list(hashes)), 3)
    out = attempt(rec, codes[0], NOW + 10, LIMITS)
    assert out.result == LOCKED
    assert out.record.recovery_hashes == hashes


def test_after_lock_expires_correct_code_works():
    rec, _ = fail_n(enrolled(), 3)
    t = rec.locked_until  # is_locked is "locked_until > now": free at that second
    assert auth.is_locked(rec, t - 1)
    just_before = attempt(rec, code(int(t - 1) // 30), t - 1, LIMITS)
    assert just_before.result == LOCKED
    out = attempt(rec, code(t // 30), t, LIMITS)
    assert out.result == SUCCESS
    assert out.record.locked_until == 0
    assert out.record.failures == []
    assert out.record.last_step == t // 30


def test_after_lock_expires_one_wrong_code_does_not_relock():
    rec, _ = fail_n(enrolled(), 3)
    t = rec.locked_until + 1
    out = attempt(rec, wrong_code(t), t, LIMITS)
    assert out.result == BAD_CODE
    assert out.record.failures == [t]  # the old failures were pruned
    assert not out.newly_locked
    assert out.record.locked_until == 0


def test_old_failures_are_pruned():
    per = LIMITS.per_seconds
    rec = enrolled(failures=[NOW - per - 5, NOW - per, NOW - per + 1, NOW - 1])
    out = attempt(rec, wrong_code(), NOW, LIMITS)
    # only failures newer than now - per_seconds are kept, then the new one
    assert out.record.failures == [NOW - per + 1, NOW - 1, NOW]
    assert out.newly_locked  # three failures inside the window
    rec2 = enrolled(failures=[NOW - per - 5, NOW - per])
    out2 = attempt(rec2, wrong_code(), NOW, LIMITS)
    assert out2.record.failures == [NOW]
    assert not out2.newly_locked


def test_failures_spread_beyond_the_window_never_lock():
    rec = enrolled()
    for i in range(6):
        t = NOW + i * 500  # at most two failures inside any 900 s window
        out = attempt(rec, wrong_code(t), t, LIMITS)
        assert out.result == BAD_CODE
        assert not out.newly_locked
        rec = out.record
    assert rec.locked_until == 0


def test_success_clears_failures_before_lock():
    rec, _ = fail_n(enrolled(), 2)
    out = attempt(rec, code(), NOW + 2, LIMITS)
    assert out.result == SUCCESS
    assert out.record.failures == []
    again, _ = fail_n(out.record, 2, start=NOW + 3)
    assert again.locked_until == 0


# --- recovery codes --------------------------------------------------------------


@pytest.fixture(scope="module")
def recovery():
    return new_codes(4)


def with_recovery(recovery_tuple, **fields):
    _codes, salt, hashes = recovery_tuple
    return enrolled(recovery_salt=salt, recovery_hashes=list(hashes), **fields)


def test_new_codes_shape(recovery):
    codes, salt, hashes = recovery
    assert len(codes) == 4 and len(hashes) == 4 and len(salt) == 16
    for c in codes:
        assert len(c) == 11 and c[5] == "-"
        assert all(ch in "abcdefghjkmnpqrstuvwxyz23456789" for ch in c.replace("-", ""))
        assert c not in repr(hashes)
    assert len(set(codes)) == 4


def test_recovery_code_accepted_once(recovery):
    codes, _salt, hashes = recovery
    rec = with_recovery(recovery, failures=[NOW - 30])
    out = attempt(rec, codes[1], NOW, LIMITS)
    assert out.result == RECOVERY
    assert out.ok
    assert out.record.recovery_hashes == [hashes[0], hashes[2], hashes[3]]
    assert out.record.failures == []
    assert out.record.last_success_at == NOW
    assert out.record.last_step == -1  # a recovery code is not a TOTP step
    again = attempt(out.record, codes[1], NOW + 1, LIMITS)
    assert again.result == BAD_CODE
    assert again.record.failures == [NOW + 1]
    assert again.record.recovery_hashes == out.record.recovery_hashes


@pytest.mark.parametrize(
    "transform",
    [
        lambda c: c,
        lambda c: c.replace("-", ""),
        lambda c: c.upper(),
        lambda c: " ".join(c.replace("-", "")),
        lambda c: f"  {c[:3]}-{c[3:]}\t\n",
        lambda c: c.replace("-", "--").upper(),
    ],
    ids=["as-shown", "no-dash", "upper", "spaced", "padded", "double-dash-upper"],
)
def test_recovery_code_forms_ignored(recovery, transform):
    codes, _salt, hashes = recovery
    out = attempt(with_recovery(recovery), transform(codes[2]), NOW, LIMITS)
    assert out.result == RECOVERY
    assert len(out.record.recovery_hashes) == 3
    assert hashes[2] not in out.record.recovery_hashes


def test_each_recovery_code_once_then_all_refused(recovery):
    codes, _salt, _hashes = recovery
    rec = with_recovery(recovery)
    big = Limits(max_failures=100, per_seconds=900, window=1)
    for i, c in enumerate(codes):
        out = attempt(rec, c, NOW + i, big)
        assert out.result == RECOVERY, c
        rec = out.record
    assert rec.recovery_hashes == []
    for i, c in enumerate(codes):
        out = attempt(rec, c, NOW + 10 + i, big)
        assert out.result == BAD_CODE
        rec = out.record
    assert len(rec.failures) == 4


def test_recovery_code_of_another_salt_is_refused(recovery):
    other_codes, _s, _h = new_codes(1)
    out = attempt(with_recovery(recovery), other_codes[0], NOW, LIMITS)
    assert out.result == BAD_CODE
    assert len(out.record.recovery_hashes) == 4


def test_wrong_recovery_code_is_bad(recovery):
    codes, _salt, _hashes = recovery
    near = codes[0][:-1] + ("a" if codes[0][-1] != "a" else "b")
    out = attempt(with_recovery(recovery), near, NOW, LIMITS)
    assert out.result == BAD_CODE
    assert len(out.record.recovery_hashes) == 4


def test_empty_code_never_matches_an_empty_code_hash():
    # even a record holding the hash of the placeholder used for empty input refuses ""
    salt = b"0123456789abcdef"
    rec = enrolled(recovery_salt=salt, recovery_hashes=[auth.hash_recovery_code("-", salt)])
    for typed in ("", "-", "   ", "\x00", "１２３"):
        out = attempt(rec, typed, NOW, LIMITS)
        assert out.result == BAD_CODE, typed
        assert len(out.record.recovery_hashes) == 1


# --- normalize_code --------------------------------------------------------------


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("123456", "123456"),
        (" 123 456 ", "123456"),
        ("123-456", "123456"),
        ("\t123456\r\n", "123456"),
        ("ABCDE-FGHJK", "abcdefghjk"),
        ("", ""),
        ("   ", ""),
        ("-", ""),
        ("１２３４５６", ""),  # full-width digits
        ("١٢٣٤٥٦", ""),  # Arabic-Indic digits
        ("۱۲۳۴۵۶", ""),  # Extended Arabic-Indic digits
        ("12345６", ""),
        ("²³⁴⁵⁶⁷", ""),  # superscripts: isdigit() is True for them
        ("ⅠⅡⅢ", ""),
        ("é12345", ""),
        ("123\x00456", ""),
        ("123\x1b456", ""),
        ("123\x7f456", ""),
        ("12\t3456", "123456"),  # tabs are ignored like spaces, inside too (issue 12)
        ("1\t2 3-4\t\t56", "123456"),
        ("123\n456", ""),  # a line break inside is not a blank
        ("123\u200b456", ""),  # zero-width space
        ("123\u00a0456", ""),  # no-break space
        ("123_456", ""),
        ("123.456", ""),
        ("+123456", ""),
        ("1" * 64, "1" * 64),
        ("1" * 65, ""),
        ("1" * 10_000, ""),
        ("a-" * 5_000, ""),
    ],
)
def test_normalize_code(typed, expected):
    assert normalize_code(typed) == expected


@pytest.mark.parametrize(
    "typed",
    ["", "１２３４５６", "\x00" * 6, "x" * 10_000, "1" * 10_000, "\ud800" * 6, "123456\n" * 2, "😀" * 6],
)
def test_junk_codes_are_bad_code(typed):
    out = attempt(enrolled(), typed, NOW, LIMITS)
    assert out.result == BAD_CODE
    assert out.record.failures == [NOW]
    assert out.record.last_step == -1


def test_full_width_version_of_the_right_code_is_refused():
    good = code()
    full_width = "".join(chr(ord(c) + 0xFF10 - 0x30) for c in good)
    assert attempt(enrolled(), full_width, NOW, LIMITS).result == BAD_CODE
    assert attempt(enrolled(), f" {good[:3]} {good[3:]} ", NOW, LIMITS).result == SUCCESS


def test_a_tab_inside_the_right_code_is_accepted_and_not_counted():
    out = attempt(enrolled(), f"{code()[:3]}\t{code()[3:]}", NOW, LIMITS)
    assert out.result == SUCCESS and out.record.failures == []


@settings(max_examples=100, deadline=None)
@given(typed=st.text(max_size=200) | st.text(alphabet="0123456789 -\t", max_size=12))
def test_attempt_never_raises(typed):
    rec = enrolled(failures=[NOW - 10])
    out = attempt(rec, typed, NOW, LIMITS)
    assert out.result in (SUCCESS, BAD_CODE)
    if out.result == SUCCESS:
        assert normalize_code(typed) in {code(STEP + d) for d in (-1, 0, 1)}
        assert out.record.failures == []
    else:
        assert out.record.failures == [NOW - 10, NOW]
    assert rec.failures == [NOW - 10]


@settings(max_examples=300, deadline=None)
@given(typed=st.text(max_size=300))
def test_normalize_code_property(typed):
    out = normalize_code(typed)
    assert out == "" or (out.isascii() and out.isalnum() and out == out.lower() and len(out) <= 64)


# --- emailed codes: issue_email_code, attempt_email, next_send_at -----------------

MAILED = "48213093"
SALT = b"email-salt-0123456789abcdef"
TTL = 600
PER = 3600  # email.per_seconds: the window of max_sends


def mailed(record=None, code=MAILED, now=NOW, salt=SALT) -> Record:
    """``record`` (an unenrolled alice by default) once ``code`` was mailed at ``now``."""
    return auth.issue_email_code(record or Record("alice"), code, salt, now, TTL, PER)


def attempt_email_at(rec, typed, now=NOW + 10, limits=LIMITS):
    return auth.attempt_email(rec, typed, now, limits)


def test_issue_email_code_keeps_only_a_salted_hash_and_when_it_expires():
    before = Record("alice", email_sends=[NOW - 100])
    rec = mailed(before)
    assert rec.email_code_salt == SALT
    assert rec.email_code_hash == auth.hash_recovery_code(MAILED, SALT)
    assert MAILED.encode() not in rec.email_code_hash
    assert rec.email_code_expires == NOW + TTL
    assert rec.email_sends == [NOW - 100, NOW]
    # pure: the record given is not modified
    assert before.email_code_hash == b"" and before.email_sends == [NOW - 100]


def test_issue_email_code_drops_sends_that_left_the_window():
    rec = mailed(Record("alice", email_sends=[NOW - PER - 1, NOW - PER, NOW - PER + 1]))
    assert rec.email_sends == [NOW - PER + 1, NOW]


def test_a_new_email_code_replaces_the_pending_one():
    rec = mailed(mailed(code="11111111", now=NOW - 60), code="22222222", salt=b"another-salt-0123456789")
    assert attempt_email_at(rec, "11111111").result == BAD_CODE
    assert attempt_email_at(rec, "22222222").result == SUCCESS


def test_email_code_succeeds_once_then_is_gone():
    rec = mailed(Record("alice", failures=[NOW - 5]))
    out = attempt_email_at(rec, MAILED)
    assert out.result == SUCCESS and out.ok
    assert (out.record.email_code_hash, out.record.email_code_salt, out.record.email_code_expires) == (b"", b"", 0)
    assert out.record.failures == [] and out.record.last_success_at == NOW + 10
    again = attempt_email_at(out.record, MAILED, now=NOW + 20)
    assert again.result == BAD_CODE
    assert again.record.failures == [NOW + 20]


def test_email_code_typed_with_spaces_and_dashes_is_accepted():
    assert attempt_email_at(mailed(), " 4821-3093 ").result == SUCCESS


def test_email_code_is_valid_until_one_second_before_it_expires():
    rec = mailed()
    assert attempt_email_at(rec, MAILED, now=NOW + TTL - 1).result == SUCCESS
    out = attempt_email_at(rec, MAILED, now=NOW + TTL)  # now == expires: too late
    assert out.result == auth.EXPIRED and not out.ok
    # the expired code is spent, and the try counts as a failure
    assert out.record.email_code_hash == b"" and out.record.email_code_expires == 0
    assert out.record.failures == [NOW + TTL]
    assert attempt_email_at(out.record, MAILED, now=NOW + TTL + 1).result == BAD_CODE


def test_wrong_email_code_counts_a_failure_and_keeps_the_pending_code():
    rec = mailed()
    out = attempt_email_at(rec, "48213094")
    assert out.result == BAD_CODE and not out.newly_locked
    assert out.record.failures == [NOW + 10]
    assert out.record.email_code_hash == rec.email_code_hash
    assert attempt_email_at(out.record, MAILED, now=NOW + 11).result == SUCCESS


def test_no_pending_code_refuses_everything_even_empty_input():
    for typed in ("", "-", MAILED, "00000000"):
        assert attempt_email_at(Record("alice"), typed).result == BAD_CODE, typed


def test_email_failures_lock_at_max_failures_and_the_lock_keeps_the_code():
    rec = mailed()
    results = []
    for i in range(LIMITS.max_failures):
        out = attempt_email_at(rec, "99999999", now=NOW + 10 + i)
        rec = out.record
        results.append(out.newly_locked)
    assert results == [False] * (LIMITS.max_failures - 1) + [True]
    last = NOW + 10 + LIMITS.max_failures - 1
    assert rec.locked_until == last + LIMITS.per_seconds
    locked = attempt_email_at(rec, MAILED, now=last + 1)
    assert locked.result == LOCKED
    assert locked.record.email_code_hash == rec.email_code_hash  # not spent while locked
    assert locked.record.failures == rec.failures  # and not counted


def test_expired_codes_count_toward_the_lock():
    rec = mailed(Record("alice", failures=[NOW + TTL - 2, NOW + TTL - 1]))
    out = attempt_email_at(rec, MAILED, now=NOW + TTL)
    assert out.result == auth.EXPIRED and out.newly_locked


def test_email_failures_older_than_the_window_are_pruned():
    now = NOW + 10
    old = [now - LIMITS.per_seconds - 1, now - LIMITS.per_seconds]  # t > now - per_seconds survives
    out = attempt_email_at(mailed(Record("alice", failures=old)), "99999999", now=now)
    assert out.record.failures == [now] and not out.newly_locked
    recent = [now - LIMITS.per_seconds + 1, now - 1]
    out = attempt_email_at(mailed(Record("alice", failures=recent)), "99999999", now=now)
    assert out.record.failures == [*recent, now] and out.newly_locked


def sends(*ages):
    return Record("alice", email_sends=[NOW - age for age in ages])


@pytest.mark.parametrize(
    "ages, expected",
    [
        ((), 0),
        ((100, 50), 0),  # max_sends - 1 in the window: one more may go
        ((300, 200, 100), NOW - 300 + PER),  # max_sends: when the oldest leaves the window
        ((100, 300, 200), NOW - 300 + PER),  # in any order
        ((PER, 200, 100), 0),  # a send exactly per_seconds ago has left the window
        ((PER - 1, 200, 100), NOW - PER + 1 + PER),
        ((500, 400, 300, 200, 100), NOW - 300 + PER),  # over max_sends: until only max_sends - 1 remain
    ],
)
def test_next_send_at(ages, expected):
    assert auth.next_send_at(sends(*ages), NOW, 3, PER) == expected


def test_next_send_at_max_sends_one():
    assert auth.next_send_at(sends(10), NOW, 1, PER) == NOW - 10 + PER
    assert auth.next_send_at(sends(), NOW, 1, PER) == 0
