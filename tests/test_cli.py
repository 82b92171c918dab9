"""pam_twofa.cli: how ``run`` turns every kind of error into one line and an exit code (docs/admin-guide.md)."""

import sys

import pytest

from pam_twofa.cli import run


def _raising(exc):
    def main(argv):
        raise exc

    return main


def test_a_missing_database_driver_names_the_packages_to_install(monkeypatch, capsys):
    """psycopg2 and cryptography are only Recommends of the package: without them, 'twofa-admin db ...'
    says what to install (exit 3, the store cannot be reached), not 'unexpected error'."""
    for name in [m for m in sys.modules if m == "pam_twofa.cli.db" or m.startswith("pam_twofa.fleet")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # the next "import psycopg2" fails as if not installed

    def main(argv):
        from pam_twofa.cli import db  # noqa: F401  (what 'twofa-admin db' imports first)

        return 0

    assert run(main, [], prog="twofa-admin") == 3
    assert capsys.readouterr().err == (
        "twofa-admin: the database backend needs psycopg2, which is not installed; nothing was changed:"
        " apt-get install python3-psycopg2 python3-cryptography\n"
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
