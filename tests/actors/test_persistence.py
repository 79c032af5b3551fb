"""A restarted actor reloads its state from the database (SQLite, and PostgreSQL on request)."""

from __future__ import annotations

from actors.demo_tally import TALLY_MIGRATIONS, Add, CrashOnPurpose, Read, Tally, TallyActor
from actors.kernel import Runtime, RuntimeConfig, virtual_supervisor_spec
from storage.database import open_database
from tests.helpers import eventually


def test_state_is_reloaded_after_a_crash_and_after_a_new_process(database_url: str) -> None:
    db = open_database(database_url, migrations=TALLY_MIGRATIONS)
    try:
        spec = virtual_supervisor_spec("tallies", TallyActor)
        with Runtime.start([spec], database=db) as runtime:
            for _ in range(5):
                runtime.tell("client/tallies/alice", Add(2))
            assert runtime.ask("client/tallies/alice", Read()) == 10

            runtime.tell("client/tallies/alice", CrashOnPurpose())
            runtime.tell("client/tallies/alice", Add(1))  # waits out the restart
            assert runtime.ask("client/tallies/alice", Read()) == 11
            node = runtime.tree().find("client/tallies/alice")
            assert node is not None and node.restarts == 1 and node.state == {"count": 11}

        # a fresh runtime on the same database: the first message activates from the row
        config = RuntimeConfig(passivate_after=0.1)
        with Runtime.start([spec], database=db, config=config) as runtime:
            assert runtime.ask("client/tallies/alice", Read()) == 11
            eventually(lambda: runtime.directory.view("client/tallies/alice") is None)
            assert runtime.ask("client/tallies/alice", Add(1)) == 12

        with db.transaction():
            assert db.bind(Tally).Tally.get_by_id("alice").count == 12
    finally:
        db.close()
