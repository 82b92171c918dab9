"""The pure core: codes, records, decisions and state transitions, with no I/O and no clock.

Every function here takes ``now`` from its caller. Nothing in ``core`` imports
anything outside ``core`` (tests/test_layers.py checks it), so the core can be
read, tested and reused without PAM, files or a database.
"""
