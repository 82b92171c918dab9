"""Command-line tools: thin adapters over the store, the policy and the core."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pam_twofa.policy import PolicyError
from pam_twofa.store import StoreError
from pam_twofa.system import log

# What the database backend (pam_twofa.fleet) imports and the rest of the package never does.
FLEET_MODULES = ("psycopg", "cryptography")


class UsageError(Exception):
    """A one-line error for the user of a command; exit code in ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a one-line UsageError (exit 1), not exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise UsageError(f"{command}: must be run as root (try: sudo {command} ...)")


def run(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run ``main(argv)``, turning expected errors into one line on stderr and an exit code."""
    prog = prog or (os.path.basename(sys.argv[0]) if sys.argv else "twofa")
    log.set_ident(prog)
    try:
        return main(sys.argv[1:] if argv is None else argv) or 0
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; nothing was changed", file=sys.stderr)
        return 130
    except EOFError:
        print(f"\n{prog}: no input (terminal closed?); nothing was changed", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        if exc.name not in FLEET_MODULES:
            return _unexpected(prog, exc)
        # The package only recommends them (debian/control): a host on the file store never needs them.
        print(
            f"{prog}: the database backend needs {exc.name}, which is not installed; nothing was changed:"
            " apt-get install python3-psycopg python3-cryptography",
            file=sys.stderr,
        )
        return 3
    except Exception as exc:  # never a traceback for the user (docs/login.md)
        return _unexpected(prog, exc)


def _unexpected(prog: str, exc: Exception) -> int:
    print(
        f"{prog}: unexpected error ({type(exc).__name__}); nothing was changed. Please report this.",
        file=sys.stderr,
    )
    return 4
