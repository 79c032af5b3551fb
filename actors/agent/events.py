"""What the agent tells the program above it (the chat, a bot, a test): typed events.

Every event names its connection; the completion of an async command also carries the
command's `corr_id`. Completions are msgspec Structs because they are stored with their
command (durable until `ack_command_event`) and re-emitted after a restart byte for byte.

    INV link        create finished: share this link
    JOINED          join / accept finished: the confirmation (or invitation) was sent
    OK              allow / ack / delete finished
    ERR code        an async command ended with a permanent error (or its TTL passed)
    CONF conf_id    the peer joined our invitation; `allow_connection` to continue
    REQ inv_id      someone knocked on our contact address; `accept_contact` or reject
    INFO info       the peer's info arrived (joiner side), CON follows
    CON             the connection is ready both ways
    MSG             a user message (ack it with `ack_message`)
    SENT / MERR     a sent message was accepted by the server / failed for good
    LINK            set_link_data finished: the short link that resolves to the address
    LDATA           get_link_data finished: the connection link and user data behind it
    SWITCH          a queue rotation moved on: direction rcv|snd, phase started|confirmed|
                    secured|completed|failed, with the connection's info after the step
                    (switch_connection completes with `SWITCH rcv started`)
    DOWN / UP       a queue server stopped answering / answers again, with the connections
                    that have queues or work there (once per transition)
"""

from __future__ import annotations

import msgspec

_EVENT = {"frozen": True, "tag_field": "event", "array_like": False}


class Inv(msgspec.Struct, tag="INV", **_EVENT):
    conn_id: str
    link: str
    corr_id: str | None = None


class Joined(msgspec.Struct, tag="JOINED", **_EVENT):
    conn_id: str
    corr_id: str | None = None


class Ok(msgspec.Struct, tag="OK", **_EVENT):
    conn_id: str
    corr_id: str | None = None


class Err(msgspec.Struct, tag="ERR", **_EVENT):
    conn_id: str
    code: str
    message: str = ""
    corr_id: str | None = None


class Conf(msgspec.Struct, tag="CONF", **_EVENT):
    conn_id: str
    conf_id: str
    info: bytes


class Req(msgspec.Struct, tag="REQ", **_EVENT):
    conn_id: str
    inv_id: str
    info: bytes


class Info(msgspec.Struct, tag="INFO", **_EVENT):
    conn_id: str
    info: bytes


class Con(msgspec.Struct, tag="CON", **_EVENT):
    conn_id: str


class Msg(msgspec.Struct, tag="MSG", **_EVENT):
    conn_id: str
    msg_id: int
    body: bytes
    integrity: str = "ok"


class Sent(msgspec.Struct, tag="SENT", **_EVENT):
    conn_id: str
    msg_id: int


class MErr(msgspec.Struct, tag="MERR", **_EVENT):
    conn_id: str
    msg_id: int
    code: str


class Link(msgspec.Struct, tag="LINK", **_EVENT):
    conn_id: str
    short_link: str
    corr_id: str | None = None


class LData(msgspec.Struct, tag="LDATA", **_EVENT):
    conn_id: str
    link: str
    user_data: bytes
    corr_id: str | None = None


class QueueInfo(msgspec.Struct, frozen=True):
    """One queue of a connection: `direction` rcv|snd, its server, its status."""

    direction: str
    server: str
    status: str


class ConnectionInfo(msgspec.Struct, frozen=True):
    """Where a connection stands (`connection_info`): its queues and any queue rotation."""

    conn_id: str
    status: str
    rcv_servers: list[str]
    snd_servers: list[str]
    rcv_switch_status: str | None
    snd_switch_status: str | None
    can_abort_switch: bool
    queues: list[QueueInfo]


class Switch(msgspec.Struct, tag="SWITCH", **_EVENT):
    conn_id: str
    direction: str  # "rcv": we rotate our receive queue; "snd": the peer rotates it
    phase: str  # started | confirmed | secured | completed | failed
    info: ConnectionInfo
    corr_id: str | None = None


class Down(msgspec.Struct, tag="DOWN", **_EVENT):
    server: str
    conn_ids: list[str]


class Up(msgspec.Struct, tag="UP", **_EVENT):
    server: str
    conn_ids: list[str]


class ConnectionStatus(msgspec.Struct, frozen=True):
    """A connection's summary (`connection_status`)."""

    conn_id: str
    status: str
    error: str | None
    rcv_servers: list[str]
    snd_servers: list[str]
    rcv_switch_status: str | None
    snd_switch_status: str | None
    pending_commands: int
    pending_messages: int


AgentEvent = (
    Inv
    | Joined
    | Ok
    | Err
    | Conf
    | Req
    | Info
    | Con
    | Msg
    | Sent
    | MErr
    | Link
    | LData
    | Switch
    | Down
    | Up
)
CommandEvent = Inv | Joined | Ok | Err | Link | LData | Switch

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CommandEvent)


def encode_event(event: CommandEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> CommandEvent:
    return _decoder.decode(data)
