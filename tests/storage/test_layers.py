"""A database is opened for named layers and holds only their tables.

Importing a layer's module registers nothing; an agent database never gets the queue
server's tables (and loses them if an older duplex put them there); a program that knows
only the agent opens a file whose other layers it does not know.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.errors import MigrationError
from storage import Database, Layer, Migration, open_database
from storage.agent import AGENT_LAYER, AGENT_MIGRATIONS
from storage.server import SERVER_LAYER, ServerStore

AGENT_TABLES = {
    "agent_connection",
    "agent_rcv_queue",
    "agent_snd_queue",
    "agent_command",
    "agent_snd_message",
    "agent_rcv_message",
    "agent_contact_request",
}
SERVER_TABLES = {"server_queue", "server_message", "server_identity"}
CHILD_TIMEOUT_S = 60


@pytest.fixture
def opened() -> Iterator[list[Database]]:
    databases: list[Database] = []
    yield databases
    for database in databases:
        database.close()


def tables(database: Database) -> set[str]:
    """Every table in the database, as its own connection lists them."""
    with database.transaction(read_only=True) as db:
        return set(db.get_tables())


def versions(database: Database) -> list[int]:
    with database.transaction(read_only=True) as db:
        rows = db.execute_sql("SELECT version FROM schema_migrations ORDER BY version")
        return [row[0] for row in rows.fetchall()]


def test_an_agent_database_holds_only_the_agents_tables(
    database_url: str, opened: list[Database]
) -> None:
    database = open_database(database_url, layers=[AGENT_LAYER])
    opened.append(database)
    assert database.layers == ("agent",)
    assert tables(database) == AGENT_TABLES | {"schema_migrations"}
    assert versions(database) == [step.version for step in AGENT_MIGRATIONS]


def test_a_server_database_holds_only_the_servers_tables(
    database_url: str, opened: list[Database]
) -> None:
    database = open_database(database_url, layers=[SERVER_LAYER])
    opened.append(database)
    assert tables(database) == SERVER_TABLES | {"schema_migrations"}
    assert versions(database) == [300]
    assert ServerStore(database).stats() == {"queues": 0, "messages": 0}


def test_importing_a_layer_registers_nothing(tmp_path: Path, opened: list[Database]) -> None:
    # Both layer modules are imported by this test module: a raw open still makes no table.
    database = open_database(f"sqlite:///{tmp_path / 'raw.db'}")
    opened.append(database)
    assert database.layers == ()
    assert tables(database) == set()


def test_an_agent_file_with_the_servers_tables_opens_and_loses_them(
    database_url: str, opened: list[Database]
) -> None:
    # What an older duplex made: every imported layer's migrations, agent and server alike.
    both = open_database(database_url, layers=[AGENT_LAYER, SERVER_LAYER])
    assert tables(both) >= SERVER_TABLES
    with both.transaction() as db:  # as it was before migration 102 existed
        db.execute_sql("DELETE FROM schema_migrations WHERE version = 102")
    both.close()

    database = open_database(database_url, layers=[AGENT_LAYER])
    opened.append(database)
    assert tables(database) == AGENT_TABLES | {"schema_migrations"}
    assert versions(database) == [step.version for step in AGENT_LAYER.migrations]


def test_server_tables_with_rows_in_an_agent_database_are_kept(
    database_url: str, opened: list[Database]
) -> None:
    # A server that shares the database on purpose: the agent's migration must not drop it.
    both = open_database(database_url, layers=[AGENT_LAYER, SERVER_LAYER])
    ServerStore(both).save_identity(b"certificate", b"key")
    with both.transaction() as db:
        db.execute_sql("DELETE FROM schema_migrations WHERE version = 102")
    both.close()

    agent = open_database(database_url, layers=[AGENT_LAYER])
    opened.append(agent)
    assert tables(agent) >= SERVER_TABLES
    assert 300 in versions(agent) and 102 in versions(agent)
    server = open_database(database_url, layers=[SERVER_LAYER])
    opened.append(server)
    assert ServerStore(server).load_identity() == (b"certificate", b"key")


def test_unknown_versions_are_refused_only_inside_the_opened_layers_blocks(
    database_url: str, opened: list[Database]
) -> None:
    later = Layer("agent", AGENT_LAYER.versions, [*AGENT_MIGRATIONS, Migration(150, "l", print)])
    open_database(database_url, layers=[later]).close()
    with pytest.raises(MigrationError, match=r"\[150\] of agent") as info:
        open_database(database_url, layers=[AGENT_LAYER])
    assert info.value.code == "MIGRATION"

    # A version of a layer this program did not open (the chat's) is someone else's table.
    chat = Layer("chat", range(200, 300), [Migration(200, "chat", lambda db: None)])
    open_database(database_url, layers=[chat]).close()
    with pytest.raises(MigrationError):
        open_database(database_url, layers=[AGENT_LAYER])  # 150 is still unknown
    server = open_database(database_url, layers=[SERVER_LAYER])
    opened.append(server)
    assert {150, 200, 300} <= set(versions(server))


CHILD = textwrap.dedent(
    """
    import json, sys
    from storage.agent import AGENT_LAYER, AgentStore
    from storage.database import open_database

    database = open_database(sys.argv[1], layers=[AGENT_LAYER])
    with database.transaction(read_only=True) as db:
        found = sorted(db.get_tables())
    AgentStore(database).connections_with_work()
    database.close()
    print(json.dumps({"tables": found, "server_imported": "storage.server" in sys.modules}))
    """
)


def test_a_file_made_by_one_process_opens_in_another_that_knows_only_the_agent(
    tmp_path: Path,
) -> None:
    """The kill -9 tests' situation: the test process (which imports the queue server too)
    made the client's file; a child that imports only the agent store opens it."""
    url = f"sqlite:///{tmp_path / 'alice.db'}"
    both = open_database(url, layers=[AGENT_LAYER, SERVER_LAYER])
    with both.transaction() as db:
        db.execute_sql("DELETE FROM schema_migrations WHERE version = 102")
    both.close()

    done = subprocess.run(
        [sys.executable, "-c", CHILD, url],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["server_imported"] is False
    assert set(seen["tables"]) == AGENT_TABLES | {"schema_migrations"}
