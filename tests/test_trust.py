"""Trusted clients (trust.seconds): the pure parts (trust, decision) with an injected clock, and the login flow
(login.Login with a scripted conversation, a real file store and the clock overridden by the test)."""

from __future__ import annotations

import pytest
from support.conversation import Conv

from pam_twofa.core import totp, trust
from pam_twofa.core.decision import DENY, EMAIL, SKIP, TOTP, TRUSTED, TRUSTED_CLIENT, Facts, decide
from pam_twofa.core.record import MAX_TRUSTED, Record, dumps, loads
from pam_twofa.login.flow import FAIL, IGNORE, PASS, Login, Options
from pam_twofa.policy import Policy
from pam_twofa.store.files import FileStore
from pam_twofa.system import accounts
from pam_twofa.system.accounts import Account

NOW = 1_700_000_015.0
HOUR = 3600
A = "203.0.113.9"
B = "198.51.100.4"


# -- client_key: only IP addresses, one canonical text each ------------------------------


@pytest.mark.parametrize(
    "rhost, key",
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),  # IPv4-mapped: the IPv4 entry
        ("::FFFF:cb00:7109", "203.0.113.9"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("2001:0db8::0001", "2001:db8::1"),
        ("::1", "::1"),
        ("fe00::1", "fe00::1"),  # just below fe80::/10
        ("fec0::1", "fec0::1"),  # just above it
    ],
)
def test_client_key_is_the_canonical_address(rhost, key):
    assert trust.client_key(rhost) == key


@pytest.mark.parametrize(
    "rhost",
    [None, "", "host.example.com", "localhost", "203.0.113.9.example.com", "203.0.113", "203.0.113.9 ", "fe80::1%a b"],
)
def test_no_client_key_without_an_ip_address(rhost):
    assert trust.client_key(rhost) is None


@pytest.mark.parametrize(
    "rhost",
    [
        "fe80::1%eth0",  # as sshd reports a link-local client
        "fe80::1%25",
        "FE80::1%eth0",
        "fe80::1",  # link-local without its zone: which link is unknown
        "febf:ffff::1",  # the last of fe80::/10
        "fe80::1%eth0.1",
        "2001:db8::1%eth0",  # a zone on a global address: not a plain address either
        "::ffff:203.0.113.9%eth0",
    ],
)
def test_link_local_and_zoned_addresses_are_never_trusted(rhost):
    # fe80::1%eth0 used to be stored as fe80::1: trusted on every link of every host of the fleet
    assert trust.client_key(rhost) is None
    record = Record("alice", trusted={"fe80::1": int(NOW) + 600, "2001:db8::1": int(NOW) + 600})
    assert trust.until(record, rhost) == 0  # not even an entry stored by an older version matches
    trust.renew(record, rhost, NOW, HOUR)
    assert record.trusted == {"fe80::1": int(NOW) + 600, "2001:db8::1": int(NOW) + 600}  # nothing granted


def test_every_client_key_is_storable_in_a_record():
    record = Record("alice")
    for rhost in ("203.0.113.9", "2001:db8::1", "fec0::1", "::ffff:10.0.0.1", "::", "::1.2.3.4"):
        key = trust.client_key(rhost)
        assert key is not None, rhost
        record.trusted[key] = int(NOW)
    assert loads(dumps(record), "alice").trusted == record.trusted


# -- applies: within trust.seconds, never longer than the policy now allows ----------------


@pytest.mark.parametrize(
    "until, seconds, now, expected",
    [
        (NOW + 10, HOUR, NOW, True),
        (NOW + HOUR, HOUR, NOW, True),
        (NOW, HOUR, NOW, False),  # ends now
        (NOW - 1, HOUR, NOW, False),  # expired
        (0, HOUR, NOW, False),  # none
        (NOW + 10, 0, NOW, False),  # trust.seconds: 0 turns it off at once
        (NOW + HOUR + 1, HOUR, NOW, False),  # granted under a longer trust.seconds, or the clock went back
        (NOW + 600, 300, NOW, False),
    ],
)
def test_applies(until, seconds, now, expected):
    assert trust.applies(int(until), seconds, now) is expected


# -- renew: after a correct code ---------------------------------------------------------------


def test_renew_trusts_the_address_for_trust_seconds():
    record = Record("alice")
    trust.renew(record, "::ffff:203.0.113.9", NOW, HOUR)
    assert record.trusted == {A: int(NOW) + HOUR}


def test_renew_extends_an_entry_and_replaces_a_stale_one():
    record = Record("alice", trusted={A: int(NOW) + 10, B: int(NOW) - 5})
    trust.renew(record, A, NOW + 100, HOUR)
    assert record.trusted == {A: int(NOW) + 100 + HOUR}  # B had expired: dropped
    record.trusted = {A: int(NOW) - 1}
    trust.renew(record, A, NOW, HOUR)
    assert record.trusted == {A: int(NOW) + HOUR}  # a stale entry never blocks a new one


@pytest.mark.parametrize("rhost", [None, "", "gateway.example.com"])
def test_renew_grants_nothing_without_an_ip_address(rhost):
    record = Record("alice", trusted={A: int(NOW) + 10, B: int(NOW) - 5})
    trust.renew(record, rhost, NOW, HOUR)
    assert record.trusted == {A: int(NOW) + 10}


def test_renew_with_trust_off_drops_every_entry():
    record = Record("alice", trusted={A: int(NOW) + 10})
    trust.renew(record, A, NOW, 0)
    assert record.trusted == {}


def test_renew_drops_entries_longer_than_the_policy_now_allows():
    record = Record("alice", trusted={B: int(NOW) + 7 * 86400})
    trust.renew(record, A, NOW, HOUR)
    assert record.trusted == {A: int(NOW) + HOUR}


def test_full_record_drops_expired_entries_first():
    trusted = {f"10.0.0.{i}": int(NOW) + 100 + i for i in range(MAX_TRUSTED)}
    trusted["10.0.0.5"] = int(NOW) - 1  # expired
    record = Record("alice", trusted=dict(trusted))
    trust.renew(record, A, NOW, HOUR)
    assert len(record.trusted) == MAX_TRUSTED
    assert "10.0.0.5" not in record.trusted and "10.0.0.0" in record.trusted and A in record.trusted


def test_full_record_drops_the_entry_that_expires_soonest():
    trusted = {f"10.0.0.{i}": int(NOW) + 1000 - i for i in range(MAX_TRUSTED)}  # 10.0.0.15 ends first
    record = Record("alice", trusted=dict(trusted))
    trust.renew(record, A, NOW, HOUR)
    assert len(record.trusted) == MAX_TRUSTED
    assert "10.0.0.15" not in record.trusted and A in record.trusted
    assert loads(dumps(record), "alice").trusted == record.trusted  # still a valid record


def test_renewing_an_address_of_a_full_record_drops_nothing_else():
    trusted = {f"10.0.0.{i}": int(NOW) + 1000 - i for i in range(MAX_TRUSTED)}
    record = Record("alice", trusted=dict(trusted))
    trust.renew(record, "10.0.0.3", NOW, HOUR)
    assert set(record.trusted) == set(trusted) and record.trusted["10.0.0.3"] == int(NOW) + HOUR


# -- decide: where trust sits in the order ------------------------------------------------------


def facts(rhost=A, enrolled=True, trusted_until=int(NOW) + 600, locked_until=0, now=NOW, user="alice", gids=None):
    return Facts(user, 100, gids or {100}, {"ops": 50}, rhost, enrolled, trusted_until, locked_until, now)


def policy(**values):
    values.setdefault("trust_seconds", HOUR)
    return Policy("/etc/pam-twofa/policy.yaml", **values)


def test_trusted_client_of_an_enrolled_user_is_not_asked():
    decision = decide(policy(), facts())
    assert (decision.action, decision.kind, decision.exempt) == (TRUSTED, TRUSTED_CLIENT, False)
    assert decision.rule == (
        f"trusted client: a code was accepted from {A} within trust.seconds (3600 s); not asked for 600 s more"
        " (otherwise asked: enrolled in TOTP (enrolled users are always asked))"
    )


def test_trusted_client_of_an_emailed_code_user_is_not_asked():
    decision = decide(policy(mode="all"), facts(enrolled=False))
    assert decision.action == TRUSTED
    assert decision.rule.endswith("(enforce.unenrolled: email))")


@pytest.mark.parametrize(
    "change, expected",
    [
        (dict(trusted_until=0), TOTP),
        (dict(trusted_until=int(NOW) - 1), TOTP),  # expired
        (dict(now=NOW + 600), TOTP),  # the clock reached the end
        (dict(locked_until=int(NOW) + 1), TOTP),  # locked: asked (and the code is refused)
        (dict(now=0.0), TOTP),  # no clock given (twofa-admin status): never trusted
    ],
)
def test_no_trust_is_asked(change, expected):
    assert decide(policy(), facts(**change)).action == expected


def test_trust_seconds_zero_or_lowered_stops_the_trust_at_once():
    assert decide(policy(trust_seconds=0), facts()).action == TOTP
    assert decide(policy(trust_seconds=300), facts()).action == TOTP  # 600 s left > 300
    assert decide(policy(trust_seconds=600), facts()).action == TRUSTED


def test_exemptions_come_before_trust_and_deny_stays_a_refusal():
    assert decide(policy(exempt_users=("alice",)), facts()).action == SKIP
    assert decide(policy(exempt_networks=("203.0.113.0/24",)), facts()).kind == "exempt network"
    assert decide(policy(mode="all", unenrolled="deny"), facts(enrolled=False)).action == DENY
    assert decide(policy(mode="off"), facts(enrolled=False)).action == SKIP
    assert decide(policy(mode="all"), facts(enrolled=False, trusted_until=0)).action == EMAIL


# -- the login flow: real file store, the test's clock --------------------------------------------

KEY = bytes.fromhex("8f3a52c4e1d07b69a2f5c8e3b1d4a6f09e7c2b58")
USERS = {
    "alice": Account("alice", 1001, 1001, {1001}, "/home/alice"),
    "bob": Account("bob", 1002, 1002, {1002}, "/home/bob"),
}


@pytest.fixture(autouse=True)
def fake_accounts(monkeypatch):
    monkeypatch.setattr(accounts, "lookup", lambda name: USERS.get(name))
    monkeypatch.setattr(accounts, "group_ids", lambda names: dict.fromkeys(names))


@pytest.fixture
def store(state_dir):
    return FileStore(state_dir)


@pytest.fixture
def policy_path(make_policy):
    return make_policy(f"trust:\n  seconds: {HOUR}\nrate_limit:\n  max_failures: 3\n  per_seconds: 900\n")


def login(policy_path, user="alice", answers=(), rhost=A, now=NOW):
    conv = Conv(answers)
    flow = Login(conv, user, rhost, "sshd", Options(["policy=" + policy_path]), clock=lambda: now)
    return flow.run(), conv


def enroll(store, user="alice", **fields):
    store.update(user, lambda old: Record(user, key=KEY, enrolled_at=int(NOW) - 86400, **fields))


def test_login_after_a_correct_code_from_the_same_address_is_not_asked(policy_path, store, logs):
    enroll(store)
    assert login(policy_path, answers=[totp.totp(KEY, NOW)])[0] == PASS
    record = store.load("alice")
    assert record.trusted == {A: int(NOW) + HOUR}
    before = record.last_success_at

    result, conv = login(policy_path, rhost="::ffff:" + A, now=NOW + HOUR - 1)
    assert result == PASS and conv.prompts == [] and conv.errors == []
    assert logs[-1].startswith(f"pam_twofa(sshd:auth): user=alice rhost=::ffff:{A} result=trusted client (")
    after = store.load("alice")
    assert after == record and after.last_success_at == before  # a trusted login writes nothing

    result, conv = login(policy_path, now=NOW + HOUR, answers=[None])
    assert result == FAIL and conv.prompts  # the period is over: asked again


def test_trust_renews_only_on_a_login_that_was_asked(policy_path, store):
    enroll(store)
    assert login(policy_path, answers=[totp.totp(KEY, NOW)])[0] == PASS
    assert login(policy_path, now=NOW + 1000)[0] == PASS  # trusted: no renewal
    assert store.load("alice").trusted == {A: int(NOW) + HOUR}
    later = NOW + HOUR + 45
    assert login(policy_path, now=later, answers=[totp.totp(KEY, later)])[0] == PASS
    assert store.load("alice").trusted == {A: int(later) + HOUR}


def test_code_from_a_zoned_link_local_address_grants_nothing_and_is_asked_again(policy_path, store, logs):
    enroll(store)
    zoned = "fe80::1%eth0"
    assert login(policy_path, rhost=zoned, answers=[totp.totp(KEY, NOW)])[0] == PASS
    assert store.load("alice").trusted == {}
    for rhost in (zoned, "fe80::1%eth1", "fe80::1"):  # the same link, another link, no link
        result, conv = login(policy_path, rhost=rhost, now=NOW + 60, answers=[None])
        assert result == FAIL and conv.prompts, rhost
    assert not any("trusted client" in line for line in logs)


def test_other_address_no_address_and_hostname_are_asked(policy_path, store):
    enroll(store, trusted={A: int(NOW) + 600})
    for rhost in (B, None, "", "client.example.com"):
        result, conv = login(policy_path, rhost=rhost)
        assert result == FAIL and conv.prompts, rhost


def test_code_from_no_address_or_a_hostname_grants_nothing(policy_path, store):
    enroll(store)
    for step, rhost in enumerate((None, "client.example.com")):
        now = NOW + 30 * step
        assert login(policy_path, rhost=rhost, now=now, answers=[totp.totp(KEY, now)])[0] == PASS
        assert store.load("alice").trusted == {}


def test_locked_user_is_asked_and_refused_from_a_trusted_address(policy_path, store, logs):
    enroll(store, trusted={A: int(NOW) + 600}, locked_until=int(NOW) + 300)
    result, conv = login(policy_path, answers=[totp.totp(KEY, NOW)])
    assert result == FAIL and conv.prompts
    assert "result=locked" in logs[-1]


def test_wrong_code_keeps_the_trust_of_other_addresses_and_grants_none(policy_path, store):
    enroll(store, trusted={A: int(NOW) + 600})
    assert login(policy_path, rhost=B, answers=["000000" if totp.totp(KEY, NOW) != "000000" else "111111"])[0] == FAIL
    assert store.load("alice").trusted == {A: int(NOW) + 600}


def test_recovery_code_grants_trust(policy_path, store):
    from pam_twofa.core import recovery

    codes, salt, hashes = recovery.new_codes()
    enroll(store, recovery_salt=salt, recovery_hashes=hashes)
    assert login(policy_path, answers=[codes[0]])[0] == PASS
    assert store.load("alice").trusted == {A: int(NOW) + HOUR}


def test_not_asked_user_is_ignored_not_trusted(policy_path, store):
    store.update("bob", lambda old: Record("bob", trusted={A: int(NOW) + 600}))
    assert login(policy_path, user="bob")[0] == IGNORE
