"""The debug endpoint's messages: typed msgspec Structs, one tagged union each way, JSON.

A console connects, proves it holds the endpoint's token (in the URL path, or as its first
message, `Hello`), is told `Welcome`, and from then on receives a `Snapshot` of the
supervision tree a few times a second. It may send commands at any time; each carries an
`id` of the console's choosing, and its answer (`Done`, `Inspection` or `Refused`) carries
the same id. Anything that does not decode as a command is answered `Refused` with code
`BAD_REQUEST` (and id 0 when none could be read); the connection stays open.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from actors.kernel import TreeNode

# The close code of a connection whose token was wrong or missing: 1008, "policy violation".
POLICY_VIOLATION = 1008
MAX_MESSAGE_BYTES = 64 * 1024


class _Message(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    pass


# ---------------------------------------------------------------------- console → endpoint


class Hello(_Message, tag="hello"):
    token: str


class InspectActor(_Message, tag="inspect"):
    """What the actor says of itself (state, mailbox, restarts, last error, pending work)."""

    id: int
    address: str


class CrashActor(_Message, tag="crash"):
    """Crash the live actor as an exception in its handler would; its supervisor restarts it."""

    id: int
    address: str


class RestartActor(_Message, tag="restart"):
    """Stop the actor cleanly and start a fresh activation of it."""

    id: int
    address: str


class PassivateActor(_Message, tag="passivate"):
    """Ask a virtual actor to passivate (it stays while it has work)."""

    id: int
    address: str


class DropSession(_Message, tag="drop_session"):
    """Drop the queue-server session of this session actor as a network failure would; with
    `pause`, keep it down until `ResumeSession`."""

    id: int
    address: str
    pause: bool = False


class ResumeSession(_Message, tag="resume_session"):
    id: int
    address: str


Command = InspectActor | CrashActor | RestartActor | PassivateActor | DropSession | ResumeSession
ConsoleMessage = Hello | Command


# ---------------------------------------------------------------------- endpoint → console


class Welcome(_Message, tag="welcome"):
    runtime: str
    interval: float


class Snapshot(_Message, tag="snapshot"):
    """The target's tree (a runtime's supervision tree, passivated virtual actors included,
    or a queue server and its sessions) and its counters, by name, in the order to show."""

    seq: int
    taken_at: float  # seconds since the epoch
    tree: TreeNode
    counters: dict[str, int]


class Done(_Message, tag="done"):
    id: int
    address: str
    detail: str


class Inspection(_Message, tag="inspection"):
    id: int
    address: str
    status: str
    description: dict[str, Any]


class RefusalCode(enum.Enum):
    BAD_REQUEST = "BAD_REQUEST"  # not a command of this protocol
    NO_ACTOR = "NO_ACTOR"  # no such (live) actor
    NOT_APPLICABLE = "NOT_APPLICABLE"  # e.g. crashing the root, passivating a supervised actor
    BUSY = "BUSY"  # the actor did not answer an inspection in time
    FAILED = "FAILED"  # the command raised: see the detail


class Refused(_Message, tag="refused"):
    id: int
    code: RefusalCode
    detail: str


EndpointMessage = Welcome | Snapshot | Done | Inspection | Refused

_encoder = msgspec.json.Encoder(enc_hook=str)  # an odd value in a summary: its str()
_console_decoder = msgspec.json.Decoder(ConsoleMessage)
_endpoint_decoder = msgspec.json.Decoder(EndpointMessage)


def encode(message: _Message) -> str:
    return _encoder.encode(message).decode()


def decode_console_message(data: str | bytes) -> ConsoleMessage:
    """A console's message; `msgspec.ValidationError` / `DecodeError` if it is none."""
    return _console_decoder.decode(data)


def decode_endpoint_message(data: str | bytes) -> EndpointMessage:
    return _endpoint_decoder.decode(data)


def command_id(data: str | bytes) -> int:
    """The `id` of a message that did not decode, if one can be read (for its `Refused`)."""
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return 0
    if isinstance(value, dict) and isinstance(value.get("id"), int):
        return value["id"]
    return 0
