"""Read-only transactions do not queue behind a writer (SQLite WAL, DEFERRED begin)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from storage.database import open_database


def test_a_reader_is_not_blocked_by_an_open_write_transaction(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'r.db'}", migrations=())
    try:
        with db.transaction() as conn:
            conn.execute_sql("CREATE TABLE t (x INTEGER)")
            conn.execute_sql("INSERT INTO t VALUES (1)")
        writing, release = threading.Event(), threading.Event()

        def writer() -> None:
            with db.transaction() as conn:
                conn.execute_sql("INSERT INTO t VALUES (2)")
                writing.set()
                release.wait(10)

        thread = threading.Thread(target=writer)
        thread.start()
        assert writing.wait(5)
        started = time.monotonic()
        with db.transaction(read_only=True) as conn:
            rows = conn.execute_sql("SELECT count(*) FROM t").fetchone()[0]
        waited = time.monotonic() - started
        release.set()
        thread.join(5)
        assert rows == 1  # the writer's row is not committed yet: not seen
        assert waited < 1.0  # an IMMEDIATE begin would wait for the writer (busy timeout)
        with db.transaction(read_only=True) as conn:
            assert conn.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 2
    finally:
        db.close()


def test_the_pool_gate_serves_waiters_first_come_first_served() -> None:
    from storage.database import _FairGate

    gate = _FairGate(1)
    assert gate.acquire(timeout=1)
    order: list[int] = []
    threads = []
    for i in range(5):
        thread = threading.Thread(
            target=lambda i=i: gate.acquire(10) and (order.append(i), gate.release())
        )
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5  # let each one queue before the next arrives
        while len(gate._waiters) < i + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert not gate.acquire(timeout=0.01)  # full, and a newcomer does not barge in
    gate.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]
