"""pam_twofa.cli: how ``run`` turns every kind of error into one line and an exit code (docs/admin-guide.md)."""

import os
import subprocess
import sys

import pytest

from pam_twofa.cli import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raising(exc):
    def main(argv):
        raise exc

    return main


def test_a_missing_database_driver_names_the_packages_to_install():
    """psycopg and cryptography are only Recommends of the package: without them, 'twofa-admin db ...'
    says what to install (exit 3, the store cannot be reached), not 'unexpected error'. In a process of
    its own, where psycopg cannot be imported (None in sys.modules) and nothing of the fleet is loaded."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from pam_twofa.cli import run\n"
        "def main(argv):\n"
        "    from pam_twofa.cli import db  # what 'twofa-admin db' imports first\n"
        "    return 0\n"
        "raise SystemExit(run(main, [], prog='twofa-admin'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert (done.returncode, done.stdout) == (3, ""), done.stderr
    assert done.stderr == (
        "twofa-admin: the database backend needs psycopg, which is not installed; nothing was changed:"
        " apt-get install python3-psycopg python3-cryptography\n"
    )


def test_any_other_missing_module_is_an_unexpected_error(capsys):
    assert run(_raising(ModuleNotFoundError("No module named 'yaml'", name="yaml")), [], prog="twofa-admin") == 4
    assert capsys.readouterr().err == (
        "twofa-admin: unexpected error (ModuleNotFoundError); nothing was changed. Please report this.\n"
    )


@pytest.mark.parametrize(
    "exc, code",
    [(RuntimeError("boom"), 4), (KeyboardInterrupt(), 130), (EOFError(), 130)],
)
def test_exit_codes(exc, code, capsys):
    assert run(_raising(exc), [], prog="twofa-admin") == code
    err = capsys.readouterr().err
    assert err.count("\n") <= 2 and "Traceback" not in err and "boom" not in err
