"""What a new user reads when something fails: each error's code once, a link's defect in
words, a one-line refusal of every bad `duplex server` option."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.client import Client
from protocol.address import ServerAddress
from protocol.errors import AgentError, NetworkError, message_of
from protocol.server import QueueServer


def test_an_errors_message_is_its_text_without_the_code() -> None:
    error = NetworkError("cannot connect to 127.0.0.1:1")
    assert str(error) == "NETWORK: cannot connect to 127.0.0.1:1"
    assert error.message == message_of(error) == "cannot connect to 127.0.0.1:1"
    assert message_of(ValueError("plain")) == "plain"


def _refusal(tmp_path: Path, server: str) -> AgentError:
    with (
        Client.open(f"sqlite:///{tmp_path}/client.db", [server]) as client,
        pytest.raises(AgentError) as caught,
    ):
        client.create_connection()
    return caught.value


def test_an_unreachable_server_says_network_once(tmp_path: Path) -> None:
    with QueueServer.start(f"sqlite:///{tmp_path}/server.db") as server:
        gone = str(server.address)
    error = _refusal(tmp_path, gone)
    assert error.code == "NETWORK"
    assert str(error).startswith("NETWORK: cannot connect"), str(error)
    assert str(error).count("NETWORK") == 1, str(error)


def test_a_server_with_another_certificate_says_identity_once(tmp_path: Path) -> None:
    with QueueServer.start(f"sqlite:///{tmp_path}/one.db") as one:
        other_fingerprint = one.address.fingerprint
    with QueueServer.start(f"sqlite:///{tmp_path}/two.db") as two:
        address = two.address
        impostor = ServerAddress(other_fingerprint, address.host, address.port)
        error = _refusal(tmp_path, str(impostor))
    assert error.code == "IDENTITY"
    assert str(error).count("IDENTITY") == 1, str(error)
    assert "presented a certificate" in str(error)
