"""A wrong code must not tell whether the account exists, is enrolled or is locked.

Measured as RATIOS of median times taken in one run, interleaved (never as
absolute times): ``Login.run`` with a wrong code for an enrolled user (the
reference), an enrolled user with recovery codes, an unknown user, a name
the store refuses, and a locked user. Every one of them must see the same
prompts (one ``Verification code:``), and cost about the same: the failure
path always does exactly one PBKDF2 (auth.RECOVERY_ITERATIONS), which
dominates the cost of a refused code.

(What a user is TOLD still differs where the policy says so: a locked
account is told it is locked, so its owner knows to wait or call an admin.
An unenrolled user whom the policy does not ask, or asks by email, gets a
different conversation by design: docs/policy.md.)
"""

from __future__ import annotations

import statistics
import time

from hardening_helpers import KEY, WRONG, T, World, login

from pam_twofa.core import recovery

ROUNDS = 15
BAND = (0.5, 2.0)


def _scenarios(world: World):
    salt = b"r" * 16
    hashes = recovery.hashes_for([f"abcde-fg{n:03d}" for n in range(10)], salt)

    def enrolled():
        world.enroll("alice")
        return "alice"

    def with_recovery_codes():
        world.enroll("bob", recovery_salt=salt, recovery_hashes=list(hashes))
        return "bob"

    def unknown():
        return "nosuchuser"

    def unstorable():
        # Any name NSS returns is stored (encoded); only control characters cannot be.
        world.accounts["bad\x1bname"] = world.accounts["alice"].__class__("bad\x1bname", 1009, 1009, {1009}, "/x")
        return "bad\x1bname"

    def locked():
        world.enroll("carol", key=KEY, failures=[int(T)] * 3, locked_until=int(T) + 900)
        return "carol"

    return {
        "enrolled": enrolled,
        "recovery-codes": with_recovery_codes,
        "unknown": unknown,
        "unstorable-name": unstorable,
        "locked": locked,
    }


def test_wrong_code_costs_the_same_whoever_the_account_is(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch, max_failures=3)
    scenarios = _scenarios(world)
    times: dict[str, list[float]] = {name: [] for name in scenarios}
    prompts: dict[str, list[str]] = {}
    for round_ in range(ROUNDS + 2):
        for name, setup in scenarios.items():
            user = setup()
            start = time.perf_counter()
            result, conv = world.run(user, [WRONG])
            elapsed = time.perf_counter() - start
            assert result == login.FAIL, (name, conv.transcript)
            prompts.setdefault(name, conv.prompts)
            assert conv.prompts == prompts[name]
            if round_ >= 2:  # warm-up rounds (imports, caches) are not counted
                times[name].append(elapsed)
    # same prompts for everyone
    assert all(p == [login.PROMPT] for p in prompts.values()), prompts
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = medians["enrolled"]
    ratios = {name: round(value / reference, 2) for name, value in medians.items()}
    report = ", ".join(f"{name} {ratio}x" for name, ratio in ratios.items()) + f" (enrolled {reference * 1000:.1f} ms)"
    for name, ratio in ratios.items():
        assert BAND[0] <= ratio <= BAND[1], (
            f"{name}: a wrong code takes {ratio}x the time of an enrolled user's: {report}"
        )


def test_locked_and_unknown_refusals_do_the_hash(tmp_path, monkeypatch):
    """The cause, counted rather than timed: every refused code runs exactly one PBKDF2."""
    from pam_twofa.core import auth

    world = World(tmp_path, monkeypatch, max_failures=3)
    calls = []
    real = auth.hash_recovery_code

    def counted(code: str, salt: bytes) -> bytes:
        calls.append(1)
        return real(code, salt)

    monkeypatch.setattr(auth, "hash_recovery_code", counted)
    for name, setup in _scenarios(world).items():
        user = setup()
        calls.clear()
        result, _conv = world.run(user, [WRONG])
        assert result == login.FAIL
        assert len(calls) == 1, f"{name}: {len(calls)} PBKDF2 computations for a wrong code (expected 1)"
