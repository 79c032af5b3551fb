"""Fixtures for queue-protocol tests: real queue servers on loopback with SQLite files."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from protocol.client import ClientConfig, QueueClient
from protocol.server import QueueServer, ServerConfig
from tests.protocol.queues import Inbox

FAST_CLIENT = ClientConfig(command_timeout=5.0, backoff_initial=0.01, backoff_max=0.2)


@pytest.fixture
def server(start_server: Callable[..., QueueServer]) -> QueueServer:
    return start_server(config=ServerConfig(quota=4))


@pytest.fixture
async def open_client(nursery: trio.Nursery):
    """Open QueueClients on the test's trio loop; each with an Inbox of its pushes."""
    clients: list[QueueClient] = []

    def open_one(server: QueueServer, config: ClientConfig = FAST_CLIENT):
        inbox = Inbox()
        client = QueueClient(server.address, nursery, on_push=inbox.push, config=config)
        clients.append(client)
        return client, inbox

    yield open_one
    for client in clients:
        await client.aclose()
