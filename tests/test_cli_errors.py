"""What a new user reads when something fails: each error's code once, a link's defect in
words, a one-line refusal of every bad `duplex server` option."""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import pytest

from actors.client import Client
from protocol.address import ServerAddress
from protocol.errors import AgentError, LinkError, NetworkError, message_of
from protocol.links import parse_link
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


def _link_of(content: object) -> str:
    encoded = base64.urlsafe_b64encode(msgspec.msgpack.encode(content)).rstrip(b"=")
    return f"duplex:/invitation#{encoded.decode()}"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (5, "the link is a number where a list belongs"),
        ([1, 1, 5], "the queue list is a number where a list belongs"),
        ([1, 1, [[1, b"", b"", ""]]], "queue 1, the server address is a number where text"),
        ([1, 1], "the link has 2 fields where at least 3 belong"),
        ([1, 1, [["s", b"", b"", "x"]]], "queue 1, the sender id should be bytes of length"),
    ],
)
def test_a_corrupt_link_says_what_is_wrong_in_words(content: object, words: str) -> None:
    with pytest.raises(LinkError) as caught:
        parse_link(_link_of(content))
    message = str(caught.value)
    assert message.startswith("LINK: malformed invitation link: "), message
    assert words in message
    assert "`" not in message and "$[" not in message, message  # none of msgspec's own words


def test_a_cut_short_link_says_so() -> None:
    with pytest.raises(LinkError, match="ends too early"):
        parse_link(_link_of([1, 1, [["s", b"x" * 24, b"y" * 32, "m"]]])[:-20])
