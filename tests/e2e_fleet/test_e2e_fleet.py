"""The fleet scenarios of issue 15 over real SSH (paramiko keyboard-interactive, and the OpenSSH client
on a terminal for self-service enrollment), see fleet_harness.py."""

from __future__ import annotations

import json
import re
import time

from e2e_harness import (
    MAILED_CODE,
    PASSWORDS,
    current_code,
    email_settings,
    mail_prompt,
    running_smtp_server,
    totp_at,
    wait_for_fresh_step,
    wrong_code,
)
from e2e_harness import ssh_login as _ssh_login
from e2e_terminal import CODE_PROMPT as ENROLL_CODE_PROMPT
from e2e_terminal import PASSWORD_PROMPT, SHELL_PROMPT, parse_screen, ssh_terminal, wait_no_enroll_process
from fleet_harness import DEAD_PORT, DSN, OFFLINE_OFF, OFFLINE_ON, PG_PORT, POLICY, enroll_user, syslog_since

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


def test_database_stopped_logins_go_on_with_codes_on_two_hosts_and_the_journals_merge(fleet_hosts):
    """Issue 23 over SSH: the PostgreSQL container stopped, alice logs in with codes on A and on B from
    their agents' copies (the same code on both: each host knows only its own replays), a replay on A
    is refused; C keeps no copy (``storage.offline.max_age: 0``): alice is refused there, the exempt bob
    gets in. The database back, the journals merge, the code used twice is a WARNING naming A and B,
    and a code used offline on B is refused on A and on C, where the failures of both add up; nothing
    restarted."""
    hosts, db = fleet_hosts
    a, b, c = hosts["A"], hosts["B"], hosts["C"]
    c.kill_agent()
    c.write_policy(POLICY.format(dsn=DSN).replace(OFFLINE_ON, OFFLINE_OFF))
    c.start_agent()
    try:
        enroll_user(a, "alice", ALICE)
        enrolled = time.time()
        for host in (a, b):  # alice's row as enrolled is in the copy, which may serve logins
            ready = host.wait_confirmed_after(enrolled)
            assert ready.returncode == 0 and "offline logins: on" in ready.stdout, ready
        marks = {host.service: host.syslog_mark() for host in (a, b, c)}  # (a Host is not hashable)
        wait_for_fresh_step(15)  # this step's code and the next one's stay in the window while the test runs
        now = time.time()
        step = int(now // 30)
        code, following = totp_at(ALICE, 0, now), totp_at(ALICE, 1, now)
        db.stop()
        try:
            assert login(a, "alice", code).ok
            replay = login(a, "alice", code)
            assert not replay.ok and "already used" in replay.text, replay
            assert login(b, "alice", code).ok  # B cannot know: one code used twice, told after the merge
            assert login(b, "alice", following).ok
            down = login(c, "alice", following)
            assert not down.ok and ERROR in down.text, down
            assert login(c, "bob").ok  # exempt: in during the outage
            assert login(a, "bob").ok
            for host in (a, b):
                log = syslog_since(host, marks[host.service])
                assert "pam-twofa-agent: offline: database: cannot connect" in log, log
                assert "logins are served from this host's copy" in log, log
                assert host.db_status().returncode == 1  # offline
            a_log = syslog_since(a, marks[a.service])
            assert "user=alice" in a_log and "replayed code" in a_log, a_log
            c_log = syslog_since(c, marks[c.service])
            assert "cannot connect" in c_log and "logins are served" not in c_log, c_log
            assert "user=bob" in c_log and "the store is failing" in c_log, c_log
        finally:
            db.start()
        for host in (a, b):
            back = host.wait_status("back online with the journal merged", lambda done: done.returncode == 0)
            assert "journal: 0 pending" in back.stdout, back
        logs = {host.service: syslog_since(host, marks[host.service]) for host in (a, b)}
        for name, log in logs.items():
            assert "reconciled user=alice: 2 offline change(s) merged into version" in log, (name, log)
        twice = re.findall(
            rf"user=alice: TOTP step {step} was accepted on ([ABC]) and on ([ABC]) while both were cut off"
            " from the database: one code used twice",
            logs["A"] + logs["B"],
        )
        # Told by the host that merged second, or by both if each recorded its steps before the other looked.
        assert twice and all(sorted(pair) == ["A", "B"] for pair in twice), logs
        # The step used offline on B (and only there) is used everywhere now: refused on A (failure 2 of 3,
        # the replay refused offline on A being the first), then on C, where that replay is the third
        # failure: alice is locked, so C (nothing restarted) reads the merged record from the database.
        on_a = login(a, "alice", following)
        assert not on_a.ok and "already used" in on_a.text, on_a
        mark = c.syslog_mark()
        on_c = login(c, "alice", following)
        assert not on_c.ok and "Too many wrong codes" in on_c.text, on_c
        assert "replayed code, now locked" in syslog_since(c, mark), syslog_since(c, mark)
    finally:
        c.kill_agent()
        c.write_policy(POLICY.format(dsn=DSN))
        c.start_agent()


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


def test_self_service_enrollment_on_a_then_log_in_on_b_with_its_codes(fleet_hosts):
    """twofa-enroll typed by the user at a shell on A (sudo runs enroll-self as root, which uses the
    agent): B and C see the enrollment at once, and B asks for and accepts the new secret's codes."""
    hosts, _db = fleet_hosts
    a, b, c = hosts["A"], hosts["B"], hosts["C"]
    assert login(b, "dave").ok  # no enforced group and not enrolled: the password alone
    term = ssh_terminal(a.port, "dave", PASSWORDS["dave"])
    try:
        term.send_line("twofa-enroll")
        term.expect(PASSWORD_PROMPT.format(user="dave"))
        term.send_line(PASSWORDS["dave"])
        term.expect(ENROLL_CODE_PROMPT)
        secret = parse_screen(term.transcript).secret
        wait_for_fresh_step()
        term.send_line(totp_at(secret, -1))
        term.expect("Two-factor authentication is now on for dave.")
        term.expect(SHELL_PROMPT)
        term.send_line("exit")
        assert term.wait_exit() == 0
    finally:
        term.close()
    wait_no_enroll_process(a)
    [row] = json.loads(c.run(["twofa-admin", "status", "dave", "--json"]).stdout)["users"]
    assert row["enrolled"] and row["recovery_codes_left"] == 10, row
    assert not login(b, "dave").ok  # enrolled now: the password alone no longer does
    wait_for_fresh_step(6)
    code = current_code(secret)
    assert login(b, "dave", code).ok
    replay = login(c, "dave", code)
    assert not replay.ok and "already used" in replay.text, replay


def email_policy(smtp) -> str:
    """The fleet policy with ``unenrolled: email`` and mail to the test's SMTP server (2 sends an hour)."""
    text = POLICY.format(dsn=DSN)
    assert "unenrolled: deny" in text and "email:\n  max_sends: 2\n" in text
    return text.replace("unenrolled: deny", "unenrolled: email").replace(
        "email:\n  max_sends: 2\n", "email:\n  max_sends: 2\n" + email_settings(smtp)
    )


def mail_login(host, smtp, user):
    """A login answered with the code the mail brought; returns (the login, the mails it caused)."""
    smtp.clear()

    def read_the_mail(prompt):
        if not mail_prompt(prompt):
            return None
        found = MAILED_CODE.search(smtp.wait_for(1)[0].get_content())
        return found.group(1) if found else "no-code-in-the-mail"

    result = _ssh_login(host.port, user, password=PASSWORDS[user], answer=read_the_mail)
    return result, list(smtp.messages)


def test_the_emailed_code_quota_is_fleet_wide(fleet_hosts):
    """erin (enforced, not enrolled) may be sent 2 codes an hour: one on A, one on B, none on C."""
    hosts, _db = fleet_hosts
    a, b, c = hosts["A"], hosts["B"], hosts["C"]
    with running_smtp_server() as smtp:
        try:
            for host in hosts.values():
                host.write_policy(email_policy(smtp))
                host.run(["twofa-admin", "check"])
            first, mails = mail_login(a, smtp, "erin")
            assert first.ok and len(mails) == 1, first
            second, mails = mail_login(b, smtp, "erin")
            assert second.ok and len(mails) == 1, second
            third, mails = mail_login(c, smtp, "erin")
            assert not third.ok and "Too many codes were emailed" in third.text, third
            assert mails == []
        finally:
            for host in hosts.values():
                host.write_policy(POLICY.format(dsn=DSN))
