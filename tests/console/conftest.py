"""Console fixtures: a real agent client on a SQLite file, serving its debug endpoint, with a
queue server on loopback and one connection (so a connection actor and a server-session
actor are in its tree)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.client import Client
from actors.debug import DebugEndpoint
from protocol.server import QueueServer
from tests.scenarios.agents import FAST


@dataclass
class DebuggedClient:
    client: Client
    conn_id: str
    server: QueueServer

    @property
    def endpoint(self) -> DebugEndpoint:
        assert self.client.debug_endpoint is not None
        return self.client.debug_endpoint

    @property
    def conn_address(self) -> str:
        return f"client/agent/conns/{self.conn_id}"

    @property
    def session_address(self) -> str:
        return f"client/agent/servers/{str(self.server.address).removeprefix('duplex://')}"


@pytest.fixture
def debugged(tmp_path: Path, start_server: Callable[..., QueueServer]) -> Iterator[DebuggedClient]:
    server = start_server()
    client = Client.open(
        f"sqlite:///{tmp_path / 'alice.db'}", [str(server.address)], config=FAST, debug=True
    )
    try:
        conn_id, _ = client.create_connection()
        yield DebuggedClient(client, conn_id, server)
    finally:
        client.close()
