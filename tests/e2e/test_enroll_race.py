"""The enrollment race of issue 24, end to end: two people on real terminals in one container.

The attacker knows the victim's password but not their phone. In their own SSH session they
``su`` to the victim (the setup of the su takeover in test_enroll.py) and start ``twofa-enroll``
while the victim is not enrolled: no current code is asked, as there is none. They leave it at
the code prompt. The victim, in an SSH session of their own, enrolls their phone. Then the
attacker types a code from THEIR app at the parked prompt. Before the fix the victim's secret was
replaced (and syslog said ``enrolled``); now the parked session compares, under the store's lock,
the enrollment with the one it started from, refuses, and stores nothing (docs/enrollment.md).
"""

from __future__ import annotations

import pytest
from e2e_harness import PASSWORD_PORT, current_code, ssh_login, totp_at, wait_for_fresh_step
from e2e_terminal import (
    CODE_PROMPT,
    PASSWORD_PROMPT,
    SHELL_PROMPT,
    parse_screen,
    record_fingerprint,
    ssh_terminal,
)
from test_enroll import CURRENT_PROMPT, ENROLLED, exit_status, su_shell

pytestmark = pytest.mark.e2e

REFUSED = "someone enrolled {user} while this session was open; nothing was stored: start twofa-enroll again"


def shell_exit_status(term) -> int:
    """The exit status of the command just run at an ``ssh_terminal`` shell."""
    term.expect(SHELL_PROMPT)
    term.send_line('echo "enroll""-exit=$?"')  # the echoed command line does not match
    term.expect("enroll-exit=")
    status = term.child.readline().strip()
    term.expect(SHELL_PROMPT)
    return int(status)


def test_a_parked_enrollment_cannot_replace_what_the_owner_enrolled_meanwhile(password_host, make_user):
    host = password_host
    attacker, attacker_password = make_user(host)
    victim, victim_password = make_user(host)
    mark = host.syslog_mark()

    # 1. The attacker, as the victim through su, parks a first enrollment at the code prompt.
    parked = su_shell(host, attacker, attacker_password, victim, victim_password)
    owner = None
    try:
        start = len(parked.transcript)
        parked.send_line("twofa-enroll")
        parked.expect(PASSWORD_PROMPT.format(user=victim))
        parked.send_line(victim_password)
        parked.expect(CODE_PROMPT)
        assert CURRENT_PROMPT not in parked.transcript[start:], "not enrolled yet: no current code to ask"
        attacker_secret = parse_screen(parked.transcript).secret
        assert record_fingerprint(host, victim) is None

        # 2. Meanwhile the owner, in their own SSH session, enrolls their phone.
        owner = ssh_terminal(PASSWORD_PORT, victim, victim_password)
        owner.send_line("twofa-enroll")
        owner.expect(PASSWORD_PROMPT.format(user=victim))
        owner.send_line(victim_password)
        owner.expect(CODE_PROMPT)
        owner_secret = parse_screen(owner.transcript).secret
        assert owner_secret != attacker_secret
        wait_for_fresh_step()
        owner.send_line(totp_at(owner_secret, -1))  # the current step stays free for the login below
        owner.expect(ENROLLED.format(user=victim))
        assert shell_exit_status(owner) == 0, owner.transcript[-2000:]
        assert "The previous secret no longer works." not in owner.transcript
        enrolled = record_fingerprint(host, victim)
        assert enrolled is not None

        # 3. The attacker types a valid code of their own secret at the parked prompt: refused.
        parked.send_line(current_code(attacker_secret))
        parked.expect(REFUSED.format(user=victim))
        assert exit_status(parked) == 1
        assert "now on for" not in parked.transcript[start:]
    finally:
        parked.close()
        if owner is not None:
            owner.close()

    # Nothing was written: the owner's enrollment is the one stored, and it is theirs that logs in.
    assert record_fingerprint(host, victim) == enrolled, "the owner's record must be untouched"
    intruder = ssh_login(PASSWORD_PORT, victim, password=victim_password, code=current_code(attacker_secret))
    assert not intruder.ok and intruder.asked_code, intruder
    login = ssh_login(PASSWORD_PORT, victim, password=victim_password, code=lambda: current_code(owner_secret))
    assert login.ok and login.asked_code, login

    # syslog tells what happened: one enrollment (the owner's), the parked session refused, no replacement.
    syslog = host.syslog()[mark:]
    lines = [line for line in syslog.splitlines() if f"twofa-enroll: user={victim} result=" in line]
    assert [line for line in lines if "result=refused: enrolled meanwhile (while this session was open" in line], lines
    assert len([line for line in lines if "result=enrolled" in line]) == 1, lines
    assert not [line for line in lines if "replacing" in line], lines
