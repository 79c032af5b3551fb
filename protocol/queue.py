"""The queue protocol on the wire: commands, replies, errors, transmissions; sans-io.

Theory of operation
-------------------
One websocket binary message carries one `Transmission`: a MessagePack array
``[version, signature, corr_id, entity_id, command]`` where `command` is itself the
MessagePack encoding of one command or reply struct, kept as bytes because the signature
covers exactly those bytes. A signed transmission signs

    signed_payload(session_id, corr_id, entity_id, command) =
        len‖session_id ‖ len‖corr_id ‖ len‖entity_id ‖ command

so a command captured on one session does not verify on another (`AUTH`).

The session opens with the server's `ServerHello` (version range, random session id) and the
client's `ClientHello` (the version it speaks). Everything after is transmissions: the client
sends commands with a fresh `corr_id` each, the server answers with the same `corr_id` and
pushes `MSG`/`END` with an empty one.

Decoding never raises anything but `WireError`, which carries the `ErrorCode` to answer with
and the corr id when one could be read; callers answer `ERR <code>` and keep the session.
Nothing here does I/O or knows storage; the server and client shells use these functions.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final

import msgspec

from protocol.errors import WireError

PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = (1, 1)

ID_SIZE: Final = 24
KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
MAX_CORR_ID: Final = 24
MAX_BODY: Final = 16 * 1024
MAX_LINK_DATA: Final = 8 * 1024
# A frame may exceed MAX_BODY by the envelope around it; a bigger frame is LARGE_MSG, and the
# websocket itself refuses anything above WEBSOCKET_MAX_MESSAGE before we see it.
MAX_FRAME: Final = MAX_BODY + 1024
WEBSOCKET_MAX_MESSAGE: Final = 4 * MAX_FRAME

Id = Annotated[bytes, msgspec.Meta(min_length=ID_SIZE, max_length=ID_SIZE)]
PublicKey = Annotated[bytes, msgspec.Meta(min_length=KEY_SIZE, max_length=KEY_SIZE)]
Flags = Annotated[int, msgspec.Meta(ge=0, le=255)]


class QueueMode(enum.Enum):
    MESSAGING = "m"
    CONTACT = "c"


class ErrorCode(enum.Enum):
    """Every `ERR` the server sends. `AUTH` covers both an unknown entity and a
    bad signature, so a prober cannot tell which."""

    AUTH = "AUTH"
    CMD_SYNTAX = "CMD SYNTAX"
    CMD_PROHIBITED = "CMD PROHIBITED"
    CMD_NO_AUTH = "CMD NO_AUTH"
    CMD_HAS_AUTH = "CMD HAS_AUTH"
    CMD_NO_ENTITY = "CMD NO_ENTITY"
    CMD_UNKNOWN = "CMD UNKNOWN"
    QUOTA = "QUOTA"
    LARGE_MSG = "LARGE_MSG"
    NO_MSG = "NO_MSG"
    INTERNAL = "INTERNAL"


class MsgFlag(enum.IntFlag):
    """Flags of a message as the recipient sees them (inside the server→recipient box)."""

    NONE = 0
    QUOTA_MARKER = 1  # set by the server: the sender hit the quota after this point


# ---------------------------------------------------------------------- commands (client → server)

_STRUCT = {"frozen": True, "array_like": True, "tag_field": "t"}


class New(msgspec.Struct, tag="NEW", **_STRUCT):
    rcv_auth_key: PublicKey
    rcv_dh_key: PublicKey
    mode: QueueMode = QueueMode.MESSAGING
    subscribe: bool = False


class Sub(msgspec.Struct, tag="SUB", **_STRUCT):
    pass


class Key(msgspec.Struct, tag="KEY", **_STRUCT):
    snd_auth_key: PublicKey


class SKey(msgspec.Struct, tag="SKEY", **_STRUCT):
    snd_auth_key: PublicKey


class Ack(msgspec.Struct, tag="ACK", **_STRUCT):
    msg_id: Id


class Get(msgspec.Struct, tag="GET", **_STRUCT):
    pass


class Off(msgspec.Struct, tag="OFF", **_STRUCT):
    pass


class Del(msgspec.Struct, tag="DEL", **_STRUCT):
    pass


class LSet(msgspec.Struct, tag="LSET", **_STRUCT):
    link_id: Id
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_LINK_DATA)]


class LDel(msgspec.Struct, tag="LDEL", **_STRUCT):
    pass


class Send(msgspec.Struct, tag="SEND", **_STRUCT):
    flags: Flags
    body: bytes  # size checked after decoding: too long is LARGE_MSG, not CMD SYNTAX


class LGet(msgspec.Struct, tag="LGET", **_STRUCT):
    link_id: Id


class Ping(msgspec.Struct, tag="PING", **_STRUCT):
    pass


Command = New | Sub | Key | SKey | Ack | Get | Off | Del | LSet | LDel | Send | LGet | Ping

RECIPIENT_COMMANDS: Final = (Sub, Key, Ack, Get, Off, Del, LSet, LDel)
SENDER_COMMANDS: Final = (SKey, Send)
ANONYMOUS_COMMANDS: Final = (LGet, Ping)  # no entity, never signed

# ---------------------------------------------------------------------- replies (server → client)


class Ids(msgspec.Struct, tag="IDS", **_STRUCT):
    rcv_id: Id
    snd_id: Id
    srv_dh_key: PublicKey


class Ok(msgspec.Struct, tag="OK", **_STRUCT):
    pass


class Msg(msgspec.Struct, tag="MSG", **_STRUCT):
    """A delivery: `enc_body` opens with the queue's server↔recipient secret and `msg_id`
    and holds `MessageContent`."""

    msg_id: Id
    enc_body: bytes


class End(msgspec.Struct, tag="END", **_STRUCT):
    pass


class Lnk(msgspec.Struct, tag="LNK", **_STRUCT):
    snd_id: Id
    data: bytes


class Pong(msgspec.Struct, tag="PONG", **_STRUCT):
    pass


class Err(msgspec.Struct, tag="ERR", **_STRUCT):
    code: ErrorCode


Reply = Ids | Ok | Msg | End | Lnk | Pong | Err


class MessageContent(msgspec.Struct, frozen=True, array_like=True):
    """What the server→recipient box of a `MSG` holds: server timestamp (ms), flags, body."""

    ts: int
    flags: int
    body: bytes


# ---------------------------------------------------------------------- the envelope


class Transmission(msgspec.Struct, frozen=True, array_like=True):
    version: int
    signature: bytes
    corr_id: bytes
    entity_id: bytes
    command: bytes


class ServerHello(msgspec.Struct, frozen=True, array_like=True, tag="HELLO", tag_field="t"):
    min_version: int
    max_version: int
    session_id: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class ClientHello(msgspec.Struct, frozen=True, array_like=True, tag="HELLO", tag_field="t"):
    version: int


# msgspec raises these two besides its own errors: UnicodeDecodeError for a string that is
# not UTF-8, RecursionError for arrays nested deeper than Python's limit.
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)

_encoder = msgspec.msgpack.Encoder()
_transmission_decoder = msgspec.msgpack.Decoder(Transmission)
_command_decoder = msgspec.msgpack.Decoder(Command)
_reply_decoder = msgspec.msgpack.Decoder(Reply)
_loose_decoder = msgspec.msgpack.Decoder()
_content_decoder = msgspec.msgpack.Decoder(MessageContent)
_server_hello_decoder = msgspec.msgpack.Decoder(ServerHello)
_client_hello_decoder = msgspec.msgpack.Decoder(ClientHello)
_COMMAND_TAGS: Final = frozenset(c.__struct_config__.tag for c in Command.__args__)


def encode(value: msgspec.Struct) -> bytes:
    return _encoder.encode(value)


def signed_payload(session_id: bytes, corr_id: bytes, entity_id: bytes, command: bytes) -> bytes:
    """The bytes a signature covers; length prefixes make the concatenation unambiguous."""
    return b"".join(
        (
            len(session_id).to_bytes(1, "big"),
            session_id,
            len(corr_id).to_bytes(1, "big"),
            corr_id,
            len(entity_id).to_bytes(1, "big"),
            entity_id,
            command,
        )
    )


def encode_transmission(
    corr_id: bytes, entity_id: bytes, command: bytes, signature: bytes = b""
) -> bytes:
    return _encoder.encode(Transmission(PROTOCOL_VERSION, signature, corr_id, entity_id, command))


def encode_reply(corr_id: bytes, entity_id: bytes, reply: Reply) -> bytes:
    return encode_transmission(corr_id, entity_id, _encoder.encode(reply))


def decode_transmission(frame: bytes) -> Transmission:
    """Check the envelope; raises WireError(CMD SYNTAX | LARGE_MSG) with the corr id if read."""
    try:
        transmission = _transmission_decoder.decode(frame)
    except _DECODE_ERRORS as exc:
        raise WireError(ErrorCode.CMD_SYNTAX, _salvage_corr_id(frame), str(exc)) from None
    corr_id = transmission.corr_id
    if not 0 < len(corr_id) <= MAX_CORR_ID:
        raise WireError(ErrorCode.CMD_SYNTAX, b"", "corr id of 1..24 bytes")
    if transmission.version != PROTOCOL_VERSION:
        raise WireError(ErrorCode.CMD_SYNTAX, corr_id, "unsupported version")
    if len(transmission.signature) not in (0, SIGNATURE_SIZE):
        raise WireError(ErrorCode.CMD_SYNTAX, corr_id, "signature length")
    if len(transmission.entity_id) not in (0, ID_SIZE):
        raise WireError(ErrorCode.CMD_SYNTAX, corr_id, "entity id length")
    if len(frame) > MAX_FRAME:
        raise WireError(ErrorCode.LARGE_MSG, corr_id, "frame too large")
    return transmission


def decode_server_frame(frame: bytes) -> tuple[Transmission, Reply]:
    """A frame from the server: a reply (with the request's corr id) or a push (empty one)."""
    try:
        transmission = _transmission_decoder.decode(frame)
    except _DECODE_ERRORS as exc:
        raise WireError(ErrorCode.CMD_SYNTAX, b"", f"bad frame from server: {exc}") from None
    return transmission, decode_reply(transmission.command)


def decode_command(transmission: Transmission) -> Command:
    """Decode and check the command of a transmission; WireError says what is wrong."""
    corr_id = transmission.corr_id
    try:
        command = _command_decoder.decode(transmission.command)
    except _DECODE_ERRORS as exc:
        code = (
            ErrorCode.CMD_SYNTAX if _has_known_tag(transmission.command) else ErrorCode.CMD_UNKNOWN
        )
        raise WireError(code, corr_id, str(exc)) from None
    if isinstance(command, Send) and len(command.body) > MAX_BODY:
        raise WireError(ErrorCode.LARGE_MSG, corr_id, "body above 16 KiB")
    signed = bool(transmission.signature)
    has_entity = bool(transmission.entity_id)
    if isinstance(command, ANONYMOUS_COMMANDS):
        if signed:
            raise WireError(ErrorCode.CMD_HAS_AUTH, corr_id)
        if has_entity:
            raise WireError(ErrorCode.CMD_SYNTAX, corr_id, "no entity expected")
    elif isinstance(command, New):
        if not signed:
            raise WireError(ErrorCode.CMD_NO_AUTH, corr_id)
        if has_entity:
            raise WireError(ErrorCode.CMD_SYNTAX, corr_id, "NEW takes no entity")
    else:
        if not has_entity:
            raise WireError(ErrorCode.CMD_NO_ENTITY, corr_id)
        if not signed and not isinstance(command, Send):
            raise WireError(ErrorCode.CMD_NO_AUTH, corr_id)
    return command


def decode_reply(command: bytes) -> Reply:
    try:
        return _reply_decoder.decode(command)
    except _DECODE_ERRORS as exc:
        raise WireError(ErrorCode.CMD_SYNTAX, b"", f"bad reply from server: {exc}") from None


def encode_content(content: MessageContent) -> bytes:
    return _encoder.encode(content)


def decode_content(data: bytes) -> MessageContent:
    try:
        return _content_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise WireError(ErrorCode.CMD_SYNTAX, b"", f"bad message content: {exc}") from None


def decode_server_hello(frame: bytes) -> ServerHello:
    try:
        return _server_hello_decoder.decode(frame)
    except _DECODE_ERRORS as exc:
        raise WireError(ErrorCode.CMD_SYNTAX, b"", f"bad server hello: {exc}") from None


def decode_client_hello(frame: bytes) -> ClientHello:
    try:
        return _client_hello_decoder.decode(frame)
    except _DECODE_ERRORS as exc:
        raise WireError(ErrorCode.CMD_SYNTAX, b"", f"bad client hello: {exc}") from None


def _salvage_corr_id(frame: bytes) -> bytes:
    """The corr id of a malformed transmission, when its envelope is readable that far."""
    try:
        loose = _loose_decoder.decode(frame)
    except _DECODE_ERRORS:
        return b""
    if isinstance(loose, list) and len(loose) > 2:
        corr_id = loose[2]
        if isinstance(corr_id, bytes) and 0 < len(corr_id) <= MAX_CORR_ID:
            return corr_id
    return b""


def _has_known_tag(command: bytes) -> bool:
    try:
        loose = _loose_decoder.decode(command)
    except _DECODE_ERRORS:
        return True  # not even MessagePack: a syntax error, not an unknown command
    if isinstance(loose, list) and loose and isinstance(loose[0], str):
        return loose[0] in _COMMAND_TAGS
    return True
