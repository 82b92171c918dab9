"""(10) Failover: seconds from the primary's death to the first successful login after the promote.

A real PostgreSQL 15 primary and synchronous streaming standby (tests/pgreplica.py), one agent whose
dsn names both with ``target_session_attrs=read-write``; offline logins off (``max_age: 0``), so
that a login succeeds only through a database: the figure is the failover's, not the copy's. The
bench kills the primary (SIGKILL, all its processes), promotes the standby at once, and tries a
login (a load and a section, as the module does) every 50 ms until one succeeds. Budget: 5 s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

BUDGET = 5.0


def failover_figure() -> tuple[str, bool]:
    from pgreplica import Pair
    from pgserver import Fleet

    from pam_twofa.core.record import Record
    from pam_twofa.store import StoreError
    from pam_twofa.store.agent import AgentStore

    pair = Pair(synchronous=True).start()
    root = Path(tempfile.mkdtemp(prefix="pam-twofa-failover-"))
    root.chmod(0o755)
    fleet = None
    try:
        fleet = Fleet(pair.primary, root)
        fleet.write_policy(dsn=pair.dsn(fleet.dbname), offline=(0, 60))
        fleet.start_agent()
        store = AgentStore(str(fleet.socket), 5.0)
        store.update("alice", lambda old: Record("alice", key=b"k" * 20, enrolled_at=1))

        def login(step: int) -> bool:
            try:
                store.load("alice")
                with store.locked("alice") as section:
                    record = section.record
                    assert record is not None
                    record.last_step = step
                    section.save(record)
            except StoreError:
                return False
            return True

        assert login(1)
        killed = pair.kill_primary()
        pair.promote()
        promoted = time.monotonic() - killed
        step = 2
        while not login(step):
            step += 1
            if time.monotonic() - killed > 60:
                return "(10) failover: no login succeeded within 60 s of the primary's death: OVER", False
            time.sleep(0.05)
        seconds = time.monotonic() - killed
        ok = seconds <= BUDGET
        return (
            f"(10) failover to a synchronous standby: {seconds:.2f} s from the primary's death to the first "
            f"login through the promoted standby (promote returned after {promoted:.2f} s; budget <= {BUDGET:g} s) "
            + ("ok" if ok else "OVER"),
            ok,
        )
    finally:
        if fleet is not None:
            fleet.close()
        pair.destroy()
