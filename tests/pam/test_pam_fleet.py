"""The database backend through the real pam_python.so: two agents with two policies on one database
stand in for two hosts (docs/many-hosts.md).

Host A is the test's ``scratch``; host B a second Scratch (its own policy, PAM services and agent
socket). Both policies name the same PostgreSQL database (tests/pgserver.py, started for the
session) and the same fleet key; each host has its own ``pam-twofa-agent`` of this checkout.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from pam_harness import KEY, MSG_BAD, MSG_ERROR, MSG_LOCKED, MSG_REPLAYED, PW, Scratch, current_step, oath, settle
from pgserver import Agent, Fleet


class Host:
    def __init__(self, name: str, scratch: Scratch, fleet: Fleet, agent_socket: str) -> None:
        self.name = name
        self.scratch = scratch
        self.fleet = fleet
        self.socket = agent_socket
        self.agent: Agent | None = None
        self.settings: dict = {}
        self.key_file = None
        self.dsn = None
        self.offline = None  # storage.offline (max_age, refresh); None: the defaults (offline logins on)

    def write_policy(self, **settings) -> None:
        self.settings = settings or self.settings
        self.scratch.write_policy(**self.settings)
        text = self.scratch.policy_path.read_text()
        head = text.split("storage:\n", 1)[0]
        tail = text.split("on_error:", 1)[1]
        storage = self.fleet.policy_text(socket=self.socket, key_file=self.key_file, dsn=self.dsn, offline=self.offline)
        storage = "storage:\n" + storage.split("storage:\n", 1)[1]
        storage = storage.replace(str(self.fleet.state_dir), str(self.scratch.state_dir))  # this host's own
        self.scratch.write_policy_text(head + storage + "on_error:" + tail)

    def start_agent(self):
        self.agent = self.fleet.start_agent(self.scratch.policy_path)
        return self.agent

    def login(self, user, code=None, stack=KEY, rhost=None):
        return self.scratch.login(stack, user, code, rhost=rhost)

    def db_status(self, what: str, condition, timeout: float = 30):
        """``twofa-admin db status`` on this host, asked until ``condition(result)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.scratch.cli("db", "status")
            if condition(done):
                return done
            if time.monotonic() > deadline:
                pytest.fail(f"host {self.name}: {what} within {timeout} s:\n{done}\n--- agent ---\n{self.agent_log()}")
            time.sleep(0.2)

    def agent_log(self) -> str:
        return self.agent.output()[-4000:] if self.agent else ""


def stored_step(host: Host, user: str) -> int:
    """The last used step of ``user``'s record as the database holds it (read directly, not by an agent)."""
    from support.records import stored

    return stored(host.fleet.store(), user).last_step


@pytest.fixture
def hosts(pg_server, scratch, pam_env, tmp_path):  # noqa: F811
    fleet = Fleet(pg_server, tmp_path / "fleet-db")
    scratch.sensitive.add(pg_server.password)
    b_root = tmp_path / "b"
    b_root.mkdir()
    second = Scratch(pam_env, b_root)
    second.sensitive = scratch.sensitive  # one fleet: a secret typed on A must not show on B either
    a = Host("A", scratch, fleet, str(fleet.socket))
    b = Host("B", second, fleet, str(fleet.socket) + "-b")
    for host in (a, b):
        host.write_policy(max_failures=3, exempt_users=["carol"])
        host.start_agent()
    try:
        yield a, b
    finally:
        fleet.close()


def test_enroll_on_a_log_in_on_b_and_the_code_is_refused_on_a(hosts):
    a, b = hosts
    alice = a.scratch.enroll("alice")
    assert not (a.scratch.state_dir / "users").exists()  # nothing in the file store
    settle(4)
    code = alice.code()
    first = b.login("alice", code)
    assert first.ok, first
    again = a.login("alice", code)
    assert again.denied and MSG_REPLAYED in again.output, again
    assert again.log_with("user=alice", "replayed code"), again


def test_failures_on_a_and_b_add_up_to_one_lockout(hosts):
    a, b = hosts
    alice = a.scratch.enroll("alice")
    assert a.login("alice", alice.wrong_code(1)).denied
    assert b.login("alice", alice.wrong_code(2)).denied
    third = a.login("alice", alice.wrong_code(3), stack=PW)
    assert third.denied and MSG_LOCKED in third.output, third
    locked = b.login("alice", alice.code())
    assert locked.denied and MSG_LOCKED in locked.output, locked


def test_unlock_and_disable_on_b_take_effect_on_a_at_once(hosts):
    a, b = hosts
    alice = a.scratch.enroll("alice")
    for salt in range(3):
        a.login("alice", alice.wrong_code(salt))
    assert MSG_LOCKED in a.login("alice", alice.code()).output
    unlocked = b.scratch.cli("unlock", "alice")
    assert unlocked.rc == 0, unlocked
    settle(4)
    assert a.login("alice", alice.code()).ok
    disabled = b.scratch.cli("disable", "alice", "--yes")
    assert disabled.rc == 0, disabled
    after = a.login("alice")  # enforce.mode off: not enrolled any more, so not asked
    assert after.ok and not after.prompted, after
    status = a.scratch.cli("status", "alice")
    assert status.rc == 0 and "alice" in status.output and " no " in status.output, status


def test_database_down_with_offline_logins_off_fails_closed_exempt_user_gets_in_and_back_without_restarts(
    hosts,
    pg_server,  # noqa: F811
):
    a, b = hosts
    a.agent.stop()
    a.offline = (0, 60)  # storage.offline.max_age: 0: no copy, the database or nothing
    a.write_policy()
    a.start_agent()
    alice = a.scratch.enroll("alice")
    off = a.db_status("the agent's state", lambda done: done.rc == 0)
    assert "offline logins: off (storage.offline.max_age: 0)" in off.output and "cached records: 0" in off.output, off
    pg_server.stop()
    try:
        down = a.login("alice", alice.code())
        assert down.denied and MSG_ERROR in down.output, down
        assert down.log_with("user=alice", "error: store", "database", "cannot connect"), down
        exempt = a.login("carol", stack=PW)
        assert exempt.ok and not exempt.prompted, exempt
        assert exempt.log_with("user=carol", "exempt", "the store is failing"), exempt
        assert "pam-twofa-agent: offline:" not in a.agent.output(), a.agent_log()  # it never went offline
    finally:
        pg_server.start()
    settle(4)
    back = b.login("alice", alice.code())
    assert back.ok, back


def test_database_down_logins_go_on_from_the_copy_a_replay_is_refused_and_the_journal_merges(
    hosts,
    pg_server,  # noqa: F811
):
    """Issue 23: the agent's offline copy (storage.offline, on by default) serves whole PAM logins while
    the database is down; the replay memory is this host's journal, merged into the database on return."""
    a, b = hosts
    for host in hosts:  # the replay and the wrong code count as failures: no lockout in this test
        host.write_policy(max_failures=10, exempt_users=["carol"])
    alice = a.scratch.enroll("alice")
    # alice's row reached A's copy (the NOTIFY of her enrollment), and a whole sync confirmed the copy.
    ready = a.db_status(
        "a confirmed copy holding alice's row",
        lambda done: "cached records: 1" in done.output and "confirmed by the database: never" not in done.output,
    )
    assert ready.rc == 0 and "offline logins: on" in ready.output, ready
    settle(10)
    step = current_step()
    code = oath(alice.secret, step)
    assert stored_step(a, "alice") < step
    pg_server.stop()
    try:
        first = a.login("alice", code)
        assert first.ok, first
        assert first.log_with("user=alice", "success"), first
        output = a.agent.output()
        assert "pam-twofa-agent: offline: database: cannot connect" in output, a.agent_log()
        assert "logins are served from this host's copy" in output, a.agent_log()
        again = a.login("alice", code)
        assert again.denied and MSG_REPLAYED in again.output, again
        assert again.log_with("user=alice", "replayed code"), again
        wrong = a.login("alice", alice.wrong_code())
        assert wrong.denied and MSG_BAD in wrong.output, wrong
        assert wrong.log_with("user=alice", "bad code", "failure 2 of 10"), wrong
        offline = a.scratch.cli("db", "status")
        assert offline.rc == 1 and "database: OFFLINE since" in offline.output, offline
        assert "journal: 3 pending entries of 1 user(s)" in offline.output, offline
    finally:
        pg_server.start()
    online = a.db_status("back online with the journal merged", lambda done: done.rc == 0)
    assert "database: connected since" in online.output and "journal: 0 pending" in online.output, online
    assert "reconciled user=alice: 3 offline change(s) merged into version" in a.agent.output(), a.agent_log()
    assert stored_step(a, "alice") == step, a.agent_log()  # the step used offline is in the database's record
    # The code stays used: on B, which never saw it (it reads the database), and on A, online now.
    on_b = b.login("alice", code)
    assert on_b.denied and MSG_REPLAYED in on_b.output, on_b
    assert on_b.log_with("user=alice", "replayed code"), on_b
    on_a = a.login("alice", code)
    assert on_a.denied and MSG_REPLAYED in on_a.output, on_a


def test_agent_killed_fails_closed_then_restarted_works(hosts):
    a, _b = hosts
    alice = a.scratch.enroll("alice")
    a.agent.kill()
    dead = a.login("alice", alice.code())
    assert dead.denied and MSG_ERROR in dead.output, dead
    assert dead.log_with("user=alice", "error: store", "pam-twofa-agent running"), dead
    assert a.login("carol").ok  # exempt: still in
    a.start_agent()
    settle(4)
    assert a.login("alice", alice.code()).ok


def test_a_host_with_the_wrong_key_fails_closed(hosts, tmp_path):
    from pam_twofa.fleet import key as fleetkey

    a, b = hosts
    alice = a.scratch.enroll("alice")
    b.agent.stop()
    b.key_file = tmp_path / "other.key"
    fleetkey.write_new(str(b.key_file), fleetkey.Keyring.generate())
    b.write_policy()
    b.start_agent()
    wrong = b.login("alice", alice.code())
    assert wrong.denied and MSG_ERROR in wrong.output, wrong
    assert wrong.log_with("user=alice", "error: store", "wrong fleet key"), wrong
    settle(4)
    assert a.login("alice", alice.code()).ok


def test_a_dsn_whose_first_host_is_dead_and_second_alive(hosts, pg_server):  # noqa: F811
    from pgserver import free_port

    a, b = hosts
    alice = a.scratch.enroll("alice")
    b.agent.stop()
    b.dsn = (
        f"host=127.0.0.1,127.0.0.1 port={free_port()},{pg_server.port} dbname={b.fleet.dbname} "
        "user=twofa sslmode=disable target_session_attrs=read-write"
    )
    b.write_policy()
    b.start_agent()
    settle(4)
    assert b.login("alice", alice.code()).ok


def test_parallel_attempts_with_one_code_over_both_hosts_exactly_one_succeeds(hosts):
    a, b = hosts
    for host in hosts:  # 19 replays must not lock the account: each one is told "already used"
        host.write_policy(max_failures=100, exempt_users=["carol"])
    alice = a.scratch.enroll("alice")
    settle(12)
    code = alice.code()
    count = 20
    barrier = threading.Barrier(count)
    results = []

    def answer(proc):
        time.sleep(2)  # every pamtester has loaded the module and waits at the prompt
        barrier.wait(timeout=30)
        return code

    def attempt(host):
        results.append(host.scratch.pamtester_interactive(KEY, "alice", respond=answer))

    threads = [threading.Thread(target=attempt, args=(host,)) for host in (a, b) * (count // 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == count
    assert sum(r.ok for r in results) == 1, results
    # (syslog cannot be told apart between parallel runs; each one's own output can)
    assert sum(MSG_REPLAYED in r.output for r in results) == count - 1, results


def test_db_migrate_carries_enrollment_replay_and_lockout_to_another_host(hosts):
    a, b = hosts
    a.scratch.write_policy(max_failures=3, exempt_users=["carol"])  # host A still on its file store
    alice, bob = a.scratch.enroll("alice"), a.scratch.enroll("bob")
    settle(6)
    used = alice.code()
    assert a.login("alice", used).ok
    for salt in range(3):
        a.login("bob", bob.wrong_code(salt))
    assert (a.scratch.state_dir / "users" / "alice.rec").is_file()
    a.write_policy()  # now the database
    moved = a.scratch.cli("db", "migrate")
    assert moved.rc == 0 and "2 moved" in moved.output, moved
    again = a.scratch.cli("db", "migrate")
    assert again.rc == 0 and "0 moved, 2 already there" in again.output, again
    replayed = b.login("alice", used)
    assert replayed.denied and MSG_REPLAYED in replayed.output, replayed  # the replay step came along
    locked = b.login("bob", bob.code())
    assert locked.denied and MSG_LOCKED in locked.output, locked  # and the lockout
    settle(4)
    following = oath(alice.secret, current_step() + 1)  # the next step's code (window 1), never used
    a.scratch.sensitive.add(following)
    assert b.login("alice", following).ok  # the same secret, nobody re-enrolled


@contextlib.contextmanager
def smtp_server():
    """A real SMTP server (aiosmtpd, test_pam_email's handler) on 127.0.0.1: (port, Mailbox)."""
    from aiosmtpd.controller import Controller
    from test_pam_email import Handler, Mailbox, free_port

    box, port = Mailbox(), free_port()
    controller = Controller(Handler(box), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, box
    finally:
        controller.stop()


def test_the_emailed_code_quota_is_fleet_wide(hosts, tmp_path):
    from test_pam_email import email_policy, mail_login

    a, b = hosts
    with smtp_server() as (port, box):
        for host in hosts:
            text = email_policy(host.scratch, port, max_sends=2)
            storage = host.fleet.policy_text(socket=host.socket).split("storage:\n", 1)[1]
            host.scratch.write_policy_text(text.split("storage:\n", 1)[0] + "storage:\n" + storage + "on_error: deny\n")
        first = mail_login(a.scratch, box, "bob")
        assert first.result.ok, first
        second = mail_login(b.scratch, box, "bob")
        assert second.result.ok, second
        third = mail_login(a.scratch, box, "bob")
        assert third.result.denied and "Too many codes were emailed" in third.result.output, third
        assert not third.mails


def test_a_rolled_back_row_refuses_the_login_even_with_on_error_allow(hosts):
    """A used code written back (schema 2's versions, docs/store.md): on_error: allow lets a user in
    without a code when the store fails, never when it shows an older state than the host has seen."""
    import psycopg

    a, _b = hosts
    a.write_policy(max_failures=3, exempt_users=["carol"], on_error="allow")
    alice = a.scratch.enroll("alice")
    dsn = a.fleet.server.admin_dsn(a.fleet.dbname)

    def owner(statement, params=()):
        conn = psycopg.connect(dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    (before,) = owner("SELECT sealed, key_ids, version FROM twofa_records WHERE user_name = 'alice'")
    settle(4)
    code = alice.code()
    first = a.login("alice", code)
    assert first.ok, first
    # The attacker (the database's owner) writes the row from before the login back: the code is new again.
    owner("UPDATE twofa_records SET sealed = %s, key_ids = %s, version = %s WHERE user_name = 'alice'", before)
    replay = a.login("alice", code)
    assert replay.denied and MSG_ERROR in replay.output, replay
    assert replay.log_with("user=alice", "error: store rollback", "rollback: user=alice shown version 1"), replay
    assert not replay.log_with("allowed without a code"), replay
    assert "rollback: user=alice" in a.agent.output()
    # Deleting the row (no record: a login with the password alone) is refused the same way.
    owner("DELETE FROM twofa_records WHERE user_name = 'alice'")
    gone = a.login("alice", stack=PW)
    assert gone.denied and MSG_ERROR in gone.output, gone
    assert gone.log_with("user=alice", "rollback", "shown no row"), gone
    assert a.login("carol", stack=PW).ok  # exempt users never depend on the store


# --- issue 24, finding 2: no section is open while SMTP talks ------------------------------------

EMAIL_USERS = ("bob", "carol", "dave", "erin", "frank", "oscar", "peggy", "trent", "victor", "bgadmin")


def write_email_policy(host: Host, port: int, on_error: str, **settings) -> None:
    """test_pam_email's email policy for ``port``, on this host's database storage."""
    from test_pam_email import email_policy

    text = email_policy(host.scratch, port, **settings)
    storage = host.fleet.policy_text(socket=host.socket).split("storage:\n", 1)[1]
    host.scratch.write_policy_text(text.split("storage:\n", 1)[0] + "storage:\n" + storage + f"on_error: {on_error}\n")


def test_an_smtp_server_slower_than_the_section_timeout_counts_every_send_and_never_lets_in(hosts):
    """The agent rolls back a section held longer than ``--section-timeout``. With the mail sent inside
    the section, a server slower than that lost the count (more mails than max_sends) and turned the
    login into a store error (``on_error: allow``: in without a code). The send is recorded first."""
    from aiosmtpd.controller import Controller
    from support.records import stored
    from test_pam_email import MSG_MAIL_LIMIT, Handler, Mailbox, free_port, mail_login

    a, _b = hosts
    a.agent.stop()
    box, port = Mailbox(), free_port()
    controller = Controller(Handler(box, delay=4), hostname="127.0.0.1", port=port)  # 250 after 4 s
    controller.start()
    try:
        write_email_policy(a, port, "allow", max_sends=2, smtp=dict(timeout=10))
        a.agent = a.fleet.start_agent(a.scratch.policy_path, "--section-timeout", "2")
        for count in (1, 2):
            started = time.monotonic()
            tried = mail_login(a.scratch, box, "bob", answer=lambda code: None)  # the mail comes; no code typed
            assert time.monotonic() - started > 4, f"the server's 4 s did not happen\n{tried}"
            assert tried.message is not None and len(tried.mails) == 1, tried
            assert tried.result.denied, tried
            assert not tried.result.log_with("allowed without a code"), tried.result
            assert tried.result.log_with("user=bob", "result=code mailed"), tried.result
            assert tried.result.log_with("user=bob", "result=no answer"), tried.result
            assert len(stored(a.fleet.store(), "bob").email_sends) == count, "a mail that went out was not counted"
        over = a.login("bob")
        assert over.denied and MSG_MAIL_LIMIT in over.output, over
        assert not over.log_with("allowed without a code"), over
        assert len(box.to("bob@example.com")) == 2, "more mails than email.max_sends: 2"
        # control: the code of a slow mail logs in
        alice = mail_login(a.scratch, box, "alice")
        assert alice.result.ok and alice.result.log_with("user=alice", "result=emailed success"), alice
        assert "held longer than" not in a.agent.output(), a.agent_log()
    finally:
        controller.stop()


def test_a_totp_login_goes_through_while_20_email_logins_wait_on_a_blackholed_smtp_server(hosts):
    """During an SMTP outage, email-path logins held the agent's database connections (``--pool``, 8)
    for as long as SMTP waited, and every other guarded login on the host failed. No more."""
    from support.records import stored
    from test_pam_email import CLIENT, MSG_MAIL_FAILED, RawServer

    a, _b = hosts
    server = RawServer()  # accepts every connection, never says a word
    smtp_timeout = 20
    threads: list[threading.Thread] = []
    try:
        alice = a.scratch.enroll("alice")  # first: its notice mail must not wait on this server
        write_email_policy(a, server.port, "deny", smtp=dict(timeout=smtp_timeout))
        users = EMAIL_USERS * 2
        results: dict = {}

        def attempt(index: int, user: str) -> None:
            results[index] = a.login(user, rhost=CLIENT)

        threads += [threading.Thread(target=attempt, args=(i, user)) for i, user in enumerate(users)]
        for thread in threads:
            thread.start()
        # Until all 20 wait on SMTP, or the number waiting stays put for 1.5 s (the pool's 8, unfixed).
        seen, since = -1, time.monotonic()
        while server.accepted < len(users) and time.monotonic() - since < 1.5:
            if server.accepted != seen:
                seen, since = server.accepted, time.monotonic()
            time.sleep(0.05)
        waiting = server.accepted
        assert waiting >= 8, f"only {waiting} email logins reached the SMTP server"
        assert not results, "an email login ended before the SMTP timeout: the test proves nothing"
        started = time.monotonic()
        totp = a.login("alice", alice.code(), rhost=CLIENT)
        took = time.monotonic() - started
        assert totp.ok and totp.log_with("user=alice", "result=success"), totp
        assert took < 4, f"the TOTP login took {took:.1f} s while {waiting} email logins waited on SMTP"
        assert not results, "the email logins no longer wait on SMTP: the test proves nothing"
    finally:
        for thread in threads:
            thread.join(timeout=smtp_timeout + 60)
        server.close()
    assert server.accepted == len(users), f"{server.accepted} of {len(users)} email logins reached SMTP"
    assert len(results) == len(users)
    for result in results.values():  # (parallel runs cannot be told apart in syslog; their output can)
        assert result.denied and MSG_MAIL_FAILED in result.output and not result.prompted, result
    assert not [line for line in a.scratch.lines if "allowed without a code" in line]
    for user in EMAIL_USERS:  # the server never had a message: no send counted, no code pending
        record = stored(a.fleet.store(), user)
        assert record.email_sends == [] and record.email_code_hash == b"", user


def test_enrollment_at_login_on_a_serves_the_app_on_b(hosts):
    """``unenrolled: enroll`` with the database backend: enrolled through A's agent, the secret is
    the fleet's: B asks for the app's code and refuses the code A's enrollment used."""
    from test_pam_self_service import enroll_steps

    a, b = hosts
    with smtp_server() as (port, box):
        for host in hosts:
            write_email_policy(host, port, "deny", unenrolled="enroll")
        settle(8)
        steps, shown = enroll_steps(a.scratch, box)
        result = a.scratch.pamtester_dialog(KEY, "bob", steps, rhost="192.0.2.10")
        assert result.ok, result
        assert not (a.scratch.state_dir / "users").exists()  # in the database, not the file store
        used = b.login("bob", oath(shown["secret"], shown["step"]))
        assert used.denied and MSG_REPLAYED in used.output, used
        assert b.login("bob", shown["recovery"][0]).ok
