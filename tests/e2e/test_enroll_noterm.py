"""twofa-enroll run by a user without a terminal: one clear line, exit 1, nothing stored.

``docker exec -i`` without ``-t`` gives the command pipes, as cron, a script or
``ssh HOST twofa-enroll`` (no ``-t``) would. Without the check, getpass printed
Python's ``GetPassWarning`` and read the password from the pipe.
"""

from __future__ import annotations

import pytest
from e2e_terminal import store_entries


@pytest.mark.parametrize("stdin", ["", "pw-wrong\n123456\n"])
def test_enroll_without_a_terminal_is_one_line_and_changes_nothing(password_host, make_user, stdin):
    user, password = make_user(password_host)
    done = password_host.run(["twofa-enroll"], user=user, input=stdin, check=False)
    assert done.returncode == 1, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "needs a terminal" in lines[0] and "ssh -t" in lines[0], lines[0]
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr
    assert "Password" not in done.stdout + done.stderr  # it did not ask
    assert f"for {user} on " in done.stdout  # and it said for whom
    assert store_entries(password_host, user) == []
