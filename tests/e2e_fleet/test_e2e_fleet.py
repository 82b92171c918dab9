"""The fleet scenarios of issue 15 over real SSH (paramiko keyboard-interactive), see conftest.py."""

from __future__ import annotations

import pytest
from e2e_harness import PASSWORDS, current_code, totp_at, wait_for_fresh_step, wrong_code
from e2e_harness import ssh_login as _ssh_login
from fleet_harness import DEAD_PORT, DSN, PG_PORT, POLICY, enroll_user

pytestmark = pytest.mark.e2e

ALICE = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
ERROR = "not working on this host"


def login(host, user, code=None):
    return _ssh_login(host.port, user, password=PASSWORDS[user], code=code)


def test_enroll_on_a_then_b_and_c_and_a_code_used_on_a_is_refused_on_b(fleet_hosts):
    hosts, _db = fleet_hosts
    a, b, c = hosts["A"], hosts["B"], hosts["C"]
    enroll_user(a, "alice", ALICE)
    assert b.run(["twofa-admin", "status", "alice"]).stdout.count("alice") >= 1
    wait_for_fresh_step(6)
    code = current_code(ALICE)
    assert login(a, "alice", code).ok
    replay = login(b, "alice", code)
    assert not replay.ok and "already used" in replay.text, replay
    assert login(c, "alice", totp_at(ALICE, 1)).ok  # the next step, on the third host


def test_failures_on_a_b_and_c_add_up_to_one_lockout_and_unlock_on_c_frees_a(fleet_hosts):
    hosts, _db = fleet_hosts
    a, b, c = hosts["A"], hosts["B"], hosts["C"]
    enroll_user(a, "alice", ALICE)
    for host in (a, b, c):
        assert not login(host, "alice", wrong_code(ALICE)).ok
    wait_for_fresh_step(6)
    locked = login(a, "alice", current_code(ALICE))
    assert not locked.ok and "Too many wrong codes" in locked.text, locked
    c.run(["twofa-admin", "unlock", "alice"])
    assert login(a, "alice", current_code(ALICE)).ok


def test_disable_on_c_takes_effect_on_a_at_once(fleet_hosts):
    hosts, _db = fleet_hosts
    a, c = hosts["A"], hosts["C"]
    enroll_user(a, "alice", ALICE)
    c.run(["twofa-admin", "disable", "alice", "--yes"])
    refused = login(a, "alice")  # enforced (group twofa) and no longer enrolled: unenrolled: deny
    assert not refused.ok and "has none set up" in refused.text, refused


def test_database_stopped_fails_closed_exempt_user_gets_in_and_back_without_restarts(fleet_hosts):
    hosts, db = fleet_hosts
    a, b = hosts["A"], hosts["B"]
    enroll_user(a, "alice", ALICE)
    mark = len(a.syslog())
    db.stop()
    try:
        down = login(a, "alice", current_code(ALICE))
        assert not down.ok and ERROR in down.text, down
        assert "cannot connect" in a.syslog()[mark:]
        assert login(a, "bob").ok  # exempt: in during the outage
    finally:
        db.start()
    wait_for_fresh_step(6)
    assert login(b, "alice", current_code(ALICE)).ok  # nothing restarted


def test_agent_killed_fails_closed_then_restarted_works(fleet_hosts):
    hosts, _db = fleet_hosts
    a = hosts["A"]
    enroll_user(a, "alice", ALICE)
    a.kill_agent()
    try:
        dead = login(a, "alice", current_code(ALICE))
        assert not dead.ok and ERROR in dead.text, dead
        assert login(a, "bob").ok
    finally:
        a.start_agent()
    wait_for_fresh_step(6)
    assert login(a, "alice", current_code(ALICE)).ok


def test_a_dsn_whose_first_host_is_dead_and_second_alive(fleet_hosts):
    hosts, _db = fleet_hosts
    c = hosts["C"]
    enroll_user(hosts["A"], "alice", ALICE)
    failover = DSN.replace("host=127.0.0.1 port=%d" % PG_PORT, f"host=127.0.0.1,127.0.0.1 port={DEAD_PORT},{PG_PORT}")
    assert failover != DSN
    c.kill_agent()
    c.write_policy(POLICY.format(dsn=failover))
    c.start_agent()
    try:
        wait_for_fresh_step(6)
        assert login(c, "alice", current_code(ALICE)).ok
    finally:
        c.kill_agent()
        c.write_policy(POLICY.format(dsn=DSN))
        c.start_agent()
