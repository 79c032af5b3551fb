"""Scenario fixtures: queue servers on loopback and agent clients on SQLite files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.agent import faults
from actors.chat_client import ChatClient
from actors.client import Client
from protocol.server import QueueServer
from tests.scenarios.agents import FAST, Events
from tests.scenarios.chats import chat_events


@pytest.fixture
def server(start_server: Callable[..., QueueServer]) -> QueueServer:
    return start_server()


@pytest.fixture
def open_client(tmp_path: Path) -> Iterator[Callable[..., tuple[Client, Events]]]:
    clients: list[Client] = []

    def open_one(
        name: str, servers: list[QueueServer], config=FAST, passphrase: str | None = None
    ) -> tuple[Client, Events]:
        client = Client.open(
            f"sqlite:///{tmp_path / name}.db",
            [str(s.address) if isinstance(s, QueueServer) else s for s in servers],
            config=config,
            passphrase=passphrase,
        )
        clients.append(client)
        return client, Events(client)

    yield open_one
    faults.disarm_all()
    for client in clients:
        client.close()


@pytest.fixture
def open_chat(tmp_path: Path) -> Iterator[Callable[..., tuple[ChatClient, Events]]]:
    """Chat clients on SQLite files in tmp_path (reopen by name); all closed after the test."""
    clients: list[ChatClient] = []

    def open_one(
        name: str, servers: list[QueueServer], config=FAST, runtime_config=None
    ) -> tuple[ChatClient, Events]:
        client = ChatClient.open(
            f"sqlite:///{tmp_path / name}.db",
            [str(s.address) if isinstance(s, QueueServer) else s for s in servers],
            name=name,
            config=config,
            runtime_config=runtime_config,
        )
        clients.append(client)
        return client, chat_events(client)

    yield open_one
    for client in clients:
        client.close()
