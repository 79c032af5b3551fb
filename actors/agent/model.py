"""The agent's typed contracts: statuses, kinds, lanes and the payloads of persisted commands.

Whatever one part of the agent tells another, and whatever it persists, is a value of a type
defined here, never a dict key, a bare string or a name prefix:

* statuses of a connection and of its queues (`ConnStatus`, `RcvQueueStatus`,
  `SndQueueStatus`), the kind of a stored outgoing message (`MessageKind`);
* a command's kind (`CommandKind`), who waits for it (`CommandOrigin`) and its payload, a
  msgspec Struct per kind (`CommandPayload`), stored in the command's row;
* `Lane`: what a network step holds while it is in flight, so that the steps of one lane run
  one at a time, in order.

Statuses are `StrEnum`s: their values are what the rows hold, so a status read back from the
database compares equal to the enum member.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import msgspec

from protocol.links import QueueAddress
from protocol.queue import QueueMode


class ConnStatus(enum.StrEnum):
    NEW = "new"  # created or joining: nothing confirmed yet
    JOINED = "joined"  # the joiner sent its confirmation and may send
    CONFIRMED = "confirmed"  # the inviter holds the joiner's confirmation: allow it
    READY = "ready"  # both ways work (CON was told)
    FAILED = "failed"  # a create or join ended with a permanent error


class ConnMode(enum.StrEnum):
    INVITATION = "invitation"  # a one-time invitation (or a connection made from one)
    CONTACT = "contact"  # a reusable contact address


class RcvQueueStatus(enum.StrEnum):
    NEW = "new"  # keys stored, NEW not answered yet
    ACTIVE = "active"
    DELETING = "deleting"  # a switch is done with it (or undone): its DEL is queued


class SndQueueStatus(enum.StrEnum):
    NEW = "new"  # recorded, not secured yet
    SECURED = "secured"  # SKEY answered, or QUSE said the recipient KEYed it
    RETIRING = "retiring"  # a switch replaced it: it only drains what was queued on it


class MessageKind(enum.StrEnum):
    """What a stored outgoing message is, so its delivery outcome reaches the right part."""

    USER = "user"
    INTERNAL = "internal"  # connection info, QCONT, resealed rotation messages
    QADD = "qadd"
    QKEY = "qkey"
    QUSE = "quse"
    QTEST = "qtest"
    QERR = "qerr"


class CommandKind(enum.StrEnum):
    CREATE = "create"
    JOIN = "join"
    ALLOW = "allow"
    ACK = "ack"
    DELETE = "delete"
    SET_LINK = "set_link"
    GET_LINK = "get_link"
    SWITCH = "switch"  # the user's: NEW the new queue, queue QADD
    SWITCH_SECURE = "switch_secure"  # internal: KEY the new queue, queue QUSE
    SWITCH_DELETE = "switch_delete"  # internal: DEL a receive queue the switch is done with
    SEND = "send"  # a user message sent with a corr id: OK once it is stored for delivery


class CommandOrigin(enum.StrEnum):
    """Who learns a command's outcome, and so whether its event is stored."""

    ASYNC = "async"  # the caller's corr id: the event is stored until ack_command_event
    SYNC = "sync"  # a caller in this process waits for it; nothing is stored
    INTERNAL = "internal"  # the agent's own step: no event at all


class SwitchOutcome(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


# ---------------------------------------------------------------------- command payloads

_PAYLOAD = {"frozen": True, "forbid_unknown_fields": False}


class Create(msgspec.Struct, **_PAYLOAD):
    mode: QueueMode = QueueMode.MESSAGING


class Join(msgspec.Struct, **_PAYLOAD):
    """Join (or accept, which joins the requester's invitation). `body` is the sealed
    confirmation, stored before its SEND so that a retry sends the very same bytes."""

    link: str
    info: bytes
    reply_server: str
    body: bytes | None = None


class Allow(msgspec.Struct, **_PAYLOAD):
    conf_id: str
    info: bytes
    body: bytes | None = None  # the sealed connection info, stored before its SEND


class Ack(msgspec.Struct, **_PAYLOAD):
    msg_id: int


class Send(msgspec.Struct, **_PAYLOAD):
    body: bytes


class Delete(msgspec.Struct, **_PAYLOAD):
    """Delete the connection. With `wait_delivery`, first wait until every message stored
    for delivery was sent or dropped (handshake.py); `delivered` records that this wait is
    over (stored with the deadline it gave the deletion). Rows stored before these fields
    existed decode with them False."""

    wait_delivery: bool = False
    delivered: bool = False


class SetLink(msgspec.Struct, **_PAYLOAD):
    user_data: bytes


class GetLink(msgspec.Struct, **_PAYLOAD):
    link: str


class Switch(msgspec.Struct, **_PAYLOAD):
    server: str


class SwitchSecure(msgspec.Struct, **_PAYLOAD):
    pass


class SwitchDelete(msgspec.Struct, **_PAYLOAD):
    queue_id: int
    outcome: SwitchOutcome


CommandPayload = (
    Create
    | Join
    | Allow
    | Ack
    | Send
    | Delete
    | SetLink
    | GetLink
    | Switch
    | SwitchSecure
    | SwitchDelete
)

PAYLOAD_TYPES: dict[CommandKind, type[CommandPayload]] = {
    CommandKind.CREATE: Create,
    CommandKind.JOIN: Join,
    CommandKind.ALLOW: Allow,
    CommandKind.ACK: Ack,
    CommandKind.SEND: Send,
    CommandKind.DELETE: Delete,
    CommandKind.SET_LINK: SetLink,
    CommandKind.GET_LINK: GetLink,
    CommandKind.SWITCH: Switch,
    CommandKind.SWITCH_SECURE: SwitchSecure,
    CommandKind.SWITCH_DELETE: SwitchDelete,
}
KIND_OF: dict[type[CommandPayload], CommandKind] = {t: k for k, t in PAYLOAD_TYPES.items()}
_DECODERS = {kind: msgspec.msgpack.Decoder(t) for kind, t in PAYLOAD_TYPES.items()}
_encoder = msgspec.msgpack.Encoder()


def encode_payload(payload: CommandPayload) -> bytes:
    return _encoder.encode(payload)


def decode_payload(kind: CommandKind | str, data: bytes) -> CommandPayload:
    """The payload of a stored command; `msgspec.ValidationError` if it does not fit `kind`."""
    return _DECODERS[CommandKind(kind)].decode(data)


class PendingConf(msgspec.Struct, frozen=True, array_like=True):
    """The peer's confirmation that waits for `allow_connection` (on the connection row):
    what to allow, where to reply, and the peer's info (kept so it can be told again).
    Rows written before `info` was kept decode with it empty."""

    conf_id: str
    reply_queue: QueueAddress
    info: bytes = b""


_pending_conf = msgspec.msgpack.Decoder(PendingConf)


def decode_pending_conf(data: bytes) -> PendingConf:
    return _pending_conf.decode(data)


# ---------------------------------------------------------------------- lanes


class LaneKind(enum.Enum):
    COMMANDS = "commands"  # a connection's commands on one server (key: server, or None)
    SEND = "send"  # the deliveries of one send queue (key: its id)
    ACK = "ack"  # one agent-internal ACK (key: the request id)
    DRAIN = "drain"  # a switch's GET on the queue it replaces (key: queue id)
    REDELIVER = "redeliver"  # a switch's GET on its new queue after a restart (key: queue id)


class Lane(NamedTuple):
    """What an in-flight step holds: the next step of the same lane waits for it."""

    kind: LaneKind
    key: str | int | None


def command_lane(server: str | None) -> Lane:
    """The lane of a connection's commands on `server`; None is the connection's local lane
    (commands that touch several servers in turn, like delete)."""
    return Lane(LaneKind.COMMANDS, server)


# ---------------------------------------------------------------------- told, not asked


class Tell(NamedTuple):
    """An ask-type message (send, ack …) told to a connection by an actor above the agent,
    which never waits: what the ask would have raised is logged, not a crash."""

    message: object


class Replay(NamedTuple):
    """Told (in a `Tell`) to a connection by the layer above after it restarted: tell again
    every completion event it has not acknowledged and every received message it has not
    ACKed (what it was told before may have been lost with its actor)."""
