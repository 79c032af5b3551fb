"""Agent-to-agent messages and their end-to-end envelope: what a queue message body holds; pure.

Owns the bytes one agent hands another through a queue (the body of `SEND`, the body inside a
`MSG`'s server→recipient box): the end-to-end envelope, the padding, the agent messages of
the connection handshake and after it, the per-connection hash chain and its integrity check.
Must not: do I/O, keep state between calls (the caller stores keys, sequence numbers and
hashes), or know what the chat puts in `info` or a user message's `body`.

Theory of operation
-------------------
**Layers.** A queue message body is built, from the inside out, as::

    encoded   = msgpack([AGENT_VERSION, content])          encode_agent_message
    padded    = u16 len(encoded) ‖ encoded ‖ zeros         up to a multiple of PAD_BLOCK
    sealed    = seal(key, padded, ad=sender_public ‖ recipient_public)   random nonce inside
    body      = msgpack([E2E_VERSION, sender_public, sealed])           seal_envelope

`content` is one of the `EnvelopeContent` structs (tagged MessagePack arrays). Each layer has
its own version: `E2E_VERSION` versions the envelope and its cryptography (the double ratchet
will be version 2), `AGENT_VERSION` the messages inside, so either can change alone. A reader
checks the version first and refuses one it does not speak with a message saying so.

**Keys (first version).** Each queue has the recipient's X25519 key pair, whose public half
travels in the queue's address (`QueueAddress.dh_public`), and the sender's X25519 key pair
for that queue. Both ends derive the same key, ``HKDF-SHA256(DH(own, peer), "duplex/e2e/v1")``
(`e2e_key`). The sender's public key is in *every* header: the first message teaches it to the
recipient, later ones repeat it (32 bytes, and no "first message or not" rule). The associated
data binds both public keys in order, so a box cannot be replayed under a swapped header. Once
the recipient knows its peer's key it passes it as `expected_sender`: a known peer must not
change its key silently, and anyone else who learnt the queue address cannot speak for it.

**Padding.** Plaintexts are padded to a multiple of `PAD_BLOCK` (256) bytes, with the real
length in front, so the server sees lengths only to the nearest bucket. The largest padded
plaintext is `MAX_PADDED`, chosen so that every envelope fits in one queue message
(`protocol.queue.MAX_BODY`); `MAX_USER_BODY` is the largest user message body that still fits
once every layer above is around it.

**Messages and the chain.** `Confirmation` (joiner → inviter's queue) and `Invitation`
(anyone → a contact address) are sent before the peer is known and stand alone. Every message
an agent sends on a connection's send queue after that is an `AgentMessage` in the connection's
chain, whatever its payload (`ConnInfo`, `UserMessage`, `QCont`, the queue rotation messages
`QAdd`/`QKey`/`QUse`/`QTest`/`QErr`): it carries `seq`, this
direction's sequential id (1, 2, 3 …), and `prev_hash`, the `message_hash` of the previous
message of the chain (`GENESIS_HASH` for seq 1). Each direction of a connection has its own
chain; it belongs to the connection, not to a queue, so it continues across a queue switch.
The inviter's first chain message is its `ConnInfo`; the joiner's is whatever it sends first
after its confirmation. `message_hash` is the SHA-256 of the exact `encode_agent_message` bytes,
so the receiver hashes what it received and never re-encodes. `check_integrity` compares a
received message with the receiver's stored ``(last_seq, last_hash)`` and says what to report
(OK, DUPLICATE, SKIPPED, BAD_ID, BAD_HASH) and what to store next.

**Bad input.** Every reader (`open_envelope`, `decode_agent_message`, `open_agent_message`)
returns a valid value or raises `EnvelopeError`, whatever the bytes; never another exception.
Writers (`encode_agent_message`, `seal_*`) check what they produce against the same rules, so
nothing this module sends is refused by a peer running it.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from typing import Annotated, Final, NamedTuple

import msgspec

from protocol.crypto import NONCE_SIZE, TAG_SIZE, CryptoError, DhKey, hkdf, open_sealed, seal
from protocol.errors import EnvelopeError, LinkError
from protocol.links import ConnectionLink, QueueAddress
from protocol.queue import KEY_SIZE, MAX_BODY, Id, PublicKey, QueueMode

__all__ = [
    "AGENT_VERSION",
    "E2E_VERSION",
    "GENESIS_HASH",
    "HASH_SIZE",
    "MAX_INFO",
    "MAX_PADDED",
    "MAX_PLAINTEXT",
    "MAX_SEQ",
    "MAX_USER_BODY",
    "PAD_BLOCK",
    "AgentMessage",
    "ChainPayload",
    "Confirmation",
    "ConnInfo",
    "EnvelopeContent",
    "Integrity",
    "IntegrityCheck",
    "Invitation",
    "OpenedMessage",
    "QAdd",
    "QCont",
    "QErr",
    "QKey",
    "QTest",
    "QUse",
    "UserMessage",
    "check_integrity",
    "decode_agent_message",
    "e2e_key",
    "encode_agent_message",
    "message_hash",
    "open_agent_message",
    "open_envelope",
    "open_own_envelope",
    "seal_agent_message",
    "seal_envelope",
]

E2E_VERSION: Final = 1
AGENT_VERSION: Final = 1
_E2E_INFO: Final = b"duplex/e2e/v1"

PAD_BLOCK: Final = 256
_LENGTH: Final = struct.Struct(">H")  # the real length in front of a padded plaintext
# The envelope around a padded plaintext, in MessagePack: fixarray(3) 1, version (fixint) 1,
# sender key (bin8) 2 + 32, sealed (bin16) 3 + nonce 12 + tag 16 = 67 bytes.
_ENVELOPE_OVERHEAD: Final = 1 + 1 + (2 + KEY_SIZE) + 3 + NONCE_SIZE + TAG_SIZE
MAX_PADDED: Final = (MAX_BODY - _ENVELOPE_OVERHEAD) // PAD_BLOCK * PAD_BLOCK  # 16,128
MAX_PLAINTEXT: Final = MAX_PADDED - _LENGTH.size  # the longest `seal_envelope` accepts

HASH_SIZE: Final = 32
GENESIS_HASH: Final = bytes(HASH_SIZE)  # `prev_hash` of a chain's first message (seq 1)
MAX_SEQ: Final = 2**63 - 1  # what a signed 64-bit column holds; above it a seq is absurd
MAX_INFO: Final = 8 * 1024
# An AgentMessage with a UserMessage around the body: fixarray(2) 1, version 1, fixarray(4) 1,
# "AMSG" 5, seq up to 9, prev_hash (bin8) 2 + 32, fixarray(2) 1, "MSG" 4, body (bin16) 3 = 59
# bytes at worst; 64 leaves a margin.
_USER_MESSAGE_OVERHEAD: Final = 64
MAX_USER_BODY: Final = MAX_PLAINTEXT - _USER_MESSAGE_OVERHEAD  # 16,062

Info = Annotated[bytes, msgspec.Meta(max_length=MAX_INFO)]
Hash = Annotated[bytes, msgspec.Meta(min_length=HASH_SIZE, max_length=HASH_SIZE)]

_STRUCT = {"frozen": True, "array_like": True, "tag_field": "t"}

# ---------------------------------------------------------------------- messages


class Confirmation(msgspec.Struct, tag="CONF", **_STRUCT):
    """The joiner's answer to an invitation, sent to the inviter's queue (outside the chain).

    `reply_queue` is the joiner's receive queue, where the inviter is to send (a messaging
    queue); `sender_auth_public` the joiner's Ed25519 sender key for the inviter's queue when
    the inviter should `KEY` it (None when the joiner secured it with `SKEY`); `info` the
    joiner's chat-level info, opaque here. The joiner's e2e key is the envelope's sender key.
    """

    reply_queue: QueueAddress | None
    sender_auth_public: PublicKey | None
    info: Info = b""

    def __post_init__(self) -> None:
        if isinstance(self.reply_queue, QueueAddress) and (
            self.reply_queue.mode is not QueueMode.MESSAGING
        ):
            raise EnvelopeError("a confirmation's reply queue is a messaging queue")


class Invitation(msgspec.Struct, tag="INV", **_STRUCT):
    """Sent to a contact address (outside the chain): "connect to me via this invitation".

    `link` is the sender's one-time invitation (messaging mode); `info` its chat-level info.
    """

    link: ConnectionLink
    info: Info = b""

    def __post_init__(self) -> None:
        if isinstance(self.link, ConnectionLink) and self.link.mode is not QueueMode.MESSAGING:
            raise EnvelopeError("an invitation message carries a one-time invitation link")


class ConnInfo(msgspec.Struct, tag="INFO", **_STRUCT):
    """The inviter's chat-level info, its first chain message, on the joiner's reply queue."""

    info: Info = b""


class UserMessage(msgspec.Struct, tag="MSG", **_STRUCT):
    """A message of the chat layer; `body` is opaque here, at most `MAX_USER_BODY` bytes."""

    body: Annotated[bytes, msgspec.Meta(max_length=MAX_USER_BODY)]


class QCont(msgspec.Struct, tag="QCONT", **_STRUCT):
    """The recipient drained its queue past a quota marker: the sender may continue."""


# Queue rotation ("switch"). The recipient of a queue replaces it with a new one; the five
# messages below travel in the connection's chain like any other. `replaces` and `snd_id`
# name queues by their sender id, which both ends know.


class QAdd(msgspec.Struct, tag="QADD", **_STRUCT):
    """Recipient → sender: "send to `new_queue` instead of the queue `replaces`"."""

    new_queue: QueueAddress
    replaces: Id

    def __post_init__(self) -> None:
        if isinstance(self.new_queue, QueueAddress) and (
            self.new_queue.mode is not QueueMode.MESSAGING
        ):
            raise EnvelopeError("a switch moves to a messaging queue")


class QKey(msgspec.Struct, tag="QKEY", **_STRUCT):
    """Sender → recipient, on the old queue: the sender's auth key for the new queue."""

    snd_id: Id
    sender_auth_public: PublicKey


class QUse(msgspec.Struct, tag="QUSE", **_STRUCT):
    """Recipient → sender: the new queue is secured with that key; use it from now on."""

    snd_id: Id


class QTest(msgspec.Struct, tag="QTEST", **_STRUCT):
    """Sender → recipient, the first message on the new queue: the old one gets no more."""

    snd_id: Id


class QErr(msgspec.Struct, tag="QERR", **_STRUCT):
    """Sender → recipient, on the old queue: the new queue failed; the switch is off."""

    snd_id: Id


ChainPayload = ConnInfo | UserMessage | QCont | QAdd | QKey | QUse | QTest | QErr


class AgentMessage(msgspec.Struct, tag="AMSG", **_STRUCT):
    """A message in a connection's chain: `seq` is this direction's sequential id (from 1),
    `prev_hash` the `message_hash` of the previous one (`GENESIS_HASH` before seq 1).

    `seq` decodes as any MessagePack integer so that a bad one reaches `check_integrity` and
    is reported as BAD_ID with the message, rather than dropped as undecodable.
    """

    seq: int
    prev_hash: Hash
    payload: ChainPayload


EnvelopeContent = Confirmation | Invitation | AgentMessage
_CONTENT_TYPES: Final = (Confirmation, Invitation, AgentMessage)


class _Versioned(msgspec.Struct, frozen=True, array_like=True):
    """The plaintext inside an envelope: ``[AGENT_VERSION, content]``."""

    version: int
    content: EnvelopeContent


class _Envelope(msgspec.Struct, frozen=True, array_like=True):
    """A queue message body: ``[E2E_VERSION, sender_public, sealed]``."""

    version: int
    sender_public: PublicKey
    sealed: Annotated[bytes, msgspec.Meta(min_length=NONCE_SIZE + TAG_SIZE)]


class _Version(msgspec.Struct, frozen=True, array_like=True):
    """The head of either layer, read first so a future layout fails on its version."""

    version: int


# msgspec raises these besides DecodeError (ValidationError is one): UnicodeDecodeError for a
# str that is not UTF-8, RecursionError for arrays nested past the interpreter's limit (even in
# skipped fields); LinkError comes from the __post_init__ of a QueueAddress or ConnectionLink.
_DECODE_ERRORS: Final = (
    msgspec.DecodeError,
    UnicodeDecodeError,
    RecursionError,
    LinkError,
)

_encoder = msgspec.msgpack.Encoder()
_version_decoder = msgspec.msgpack.Decoder(_Version)
_versioned_decoder = msgspec.msgpack.Decoder(_Versioned)
_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)


# ---------------------------------------------------------------------- end-to-end envelope


def e2e_key(own: DhKey, peer_public: bytes) -> bytes:
    """The 32-byte key both ends of a queue derive: HKDF-SHA256(DH(own, peer), e2e/v1)."""
    if not isinstance(own, DhKey):
        raise EnvelopeError("e2e_key takes a DhKey")
    try:
        secret = own.shared_secret(peer_public)
    except (CryptoError, ValueError) as exc:  # OpenSSL itself refuses some low-order points
        raise EnvelopeError(f"not a usable X25519 public key: {exc.args[0]}") from None
    return hkdf(secret, _E2E_INFO)


def seal_envelope(sender: DhKey, recipient_public: bytes, plaintext: bytes) -> bytes:
    """A queue message body: `plaintext` (at most `MAX_PLAINTEXT` bytes) padded and sealed
    from `sender` to `recipient_public`; at most `MAX_BODY` bytes, by construction."""
    if not isinstance(plaintext, bytes):
        raise EnvelopeError("a plaintext is bytes")
    if len(plaintext) > MAX_PLAINTEXT:
        raise EnvelopeError(
            f"a plaintext of {len(plaintext)} bytes; an envelope holds at most {MAX_PLAINTEXT}"
        )
    key = e2e_key(sender, recipient_public)
    sealed = seal(key, _pad(plaintext), sender.public + recipient_public)
    body = _encoder.encode(_Envelope(E2E_VERSION, sender.public, sealed))
    if len(body) > MAX_BODY:  # cannot happen: MAX_PADDED leaves room for the envelope
        raise EnvelopeError(f"an envelope of {len(body)} bytes; the limit is {MAX_BODY}")
    return body


def open_envelope(
    recipient: DhKey, data: bytes, expected_sender: bytes | None = None
) -> tuple[bytes, bytes]:
    """``(sender_public, plaintext)`` of a queue message body sealed to `recipient`.

    `expected_sender` is the peer's key once known; a body under any other key is refused
    before decryption. `EnvelopeError` if the body is malformed, of another version, too
    large, does not open, or its padding is not canonical.
    """
    if not isinstance(recipient, DhKey):
        raise EnvelopeError("open_envelope takes a DhKey")
    if not isinstance(data, bytes):
        raise EnvelopeError("an envelope is bytes")
    if len(data) > MAX_BODY:
        raise EnvelopeError(f"an envelope of {len(data)} bytes; the limit is {MAX_BODY}")
    try:
        version = _version_decoder.decode(data).version
    except _DECODE_ERRORS as exc:
        raise EnvelopeError(f"malformed envelope: {exc}") from None
    if version != E2E_VERSION:
        raise EnvelopeError(
            f"an envelope of version {version}; this client reads version {E2E_VERSION}"
        )
    try:
        envelope = _envelope_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise EnvelopeError(f"malformed envelope: {exc}") from None
    sender_public = envelope.sender_public
    if expected_sender is not None and sender_public != expected_sender:
        raise EnvelopeError("the envelope's sender key is not this connection's peer key")
    key = e2e_key(recipient, sender_public)
    try:
        padded = open_sealed(key, envelope.sealed, sender_public + recipient.public)
    except CryptoError:
        raise EnvelopeError("the envelope does not open with this queue's key") from None
    return sender_public, _unpad(padded)


def open_own_envelope(sender: DhKey, recipient_public: bytes, data: bytes) -> bytes:
    """The plaintext of a body this side sealed with `seal_envelope(sender, recipient_public,
    …)`: both ends derive the same key, so a sender can take back what it sealed (to seal it
    again for another queue). `EnvelopeError` as `open_envelope`."""
    if not isinstance(sender, DhKey):
        raise EnvelopeError("open_own_envelope takes a DhKey")
    try:
        envelope = _envelope_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise EnvelopeError(f"malformed envelope: {exc}") from None
    if envelope.version != E2E_VERSION or envelope.sender_public != sender.public:
        raise EnvelopeError("not an envelope this key sealed")
    key = e2e_key(sender, recipient_public)
    try:
        padded = open_sealed(key, envelope.sealed, sender.public + recipient_public)
    except CryptoError:
        raise EnvelopeError("the envelope does not open with this queue's key") from None
    return _unpad(padded)


def _padded_size(length: int) -> int:
    return -(-(_LENGTH.size + length) // PAD_BLOCK) * PAD_BLOCK


def _pad(plaintext: bytes) -> bytes:
    size = _padded_size(len(plaintext))
    return _LENGTH.pack(len(plaintext)) + plaintext + bytes(size - _LENGTH.size - len(plaintext))


def _unpad(padded: bytes) -> bytes:
    # Authenticated already; strictness keeps one padded form per plaintext all the same.
    if len(padded) < _LENGTH.size:
        raise EnvelopeError("padded plaintext too short")
    (length,) = _LENGTH.unpack_from(padded)
    end = _LENGTH.size + length
    if len(padded) != _padded_size(length) or padded[end:] != bytes(len(padded) - end):
        raise EnvelopeError("padding is not canonical")
    return padded[_LENGTH.size : end]


# ---------------------------------------------------------------------- agent messages


def encode_agent_message(message: EnvelopeContent) -> bytes:
    """The plaintext of `message` (``[AGENT_VERSION, message]``), checked as a receiver would
    check it: `EnvelopeError` if any field is of the wrong type or size (a body above
    `MAX_USER_BODY`, an info above `MAX_INFO` …)."""
    if not isinstance(message, _CONTENT_TYPES):
        raise EnvelopeError(f"not an agent message: {type(message).__name__}")
    try:
        data = _encoder.encode(_Versioned(AGENT_VERSION, message))
    except (TypeError, ValueError, OverflowError) as exc:
        raise EnvelopeError(f"agent message does not encode: {exc}") from None
    try:
        decode_agent_message(data)  # the receiver's checks: types, sizes, links, keys
    except EnvelopeError as exc:
        raise EnvelopeError(f"agent message would be refused: {exc.args[0]}") from None
    return data


def decode_agent_message(data: bytes) -> EnvelopeContent:
    """The message in a plaintext; `EnvelopeError` if it is malformed, too large, or of an
    agent version this client does not speak."""
    if not isinstance(data, bytes):
        raise EnvelopeError("an agent message is bytes")
    if len(data) > MAX_PLAINTEXT:
        raise EnvelopeError(f"an agent message of {len(data)} bytes; the limit is {MAX_PLAINTEXT}")
    try:
        version = _version_decoder.decode(data).version
    except _DECODE_ERRORS as exc:
        raise EnvelopeError(f"malformed agent message: {exc}") from None
    if version != AGENT_VERSION:
        raise EnvelopeError(
            f"an agent message of version {version}; this client reads version {AGENT_VERSION}"
        )
    try:  # an EnvelopeError from a struct's own checks passes through as it is
        return _versioned_decoder.decode(data).content
    except _DECODE_ERRORS as exc:
        raise EnvelopeError(f"malformed agent message: {exc}") from None


def message_hash(encoded_agent_message: bytes) -> bytes:
    """SHA-256 of a message's exact plaintext bytes: the next message's `prev_hash`."""
    return hashlib.sha256(encoded_agent_message).digest()


class OpenedMessage(NamedTuple):
    """What `open_agent_message` returns: the sender's e2e key, the message, and the
    `message_hash` of the bytes received (for `check_integrity` and the next `last_hash`)."""

    sender_public: bytes
    message: EnvelopeContent
    hash: bytes


def seal_agent_message(
    sender_dh: DhKey, recipient_public: bytes, message: EnvelopeContent
) -> bytes:
    """The `SEND` body of `message` from `sender_dh` to `recipient_public`.

    The sender's next `prev_hash` is ``message_hash(encode_agent_message(message))``:
    encoding is deterministic, so it equals the hash the receiver computes.
    """
    return seal_envelope(sender_dh, recipient_public, encode_agent_message(message))


def open_agent_message(
    recipient_dh: DhKey, body: bytes, expected_sender: bytes | None = None
) -> OpenedMessage:
    """Open and decode a queue message body (`open_envelope`, then `decode_agent_message`)."""
    sender_public, plaintext = open_envelope(recipient_dh, body, expected_sender)
    return OpenedMessage(sender_public, decode_agent_message(plaintext), message_hash(plaintext))


# ---------------------------------------------------------------------- integrity


class Integrity(enum.Enum):
    """How a received chain message relates to the previous one (reported with `MSG`)."""

    OK = "ok"
    DUPLICATE = "duplicate"  # seq <= last_seq: seen already (a re-sent SEND); drop it
    SKIPPED = "skipped"  # seq > last_seq + 1: messages are missing before this one
    BAD_ID = "bad_id"  # seq <= 0, above MAX_SEQ, or last_seq again with other content
    BAD_HASH = "bad_hash"  # the next seq, but prev_hash is not the last message's hash


@dataclass(frozen=True, slots=True)
class IntegrityCheck:
    """The verdict on one received message and the receiver's state after it.

    `skipped` is how many messages are missing (SKIPPED only, else 0): seq ``last_seq + 1``
    to ``seq - 1`` of the state before. `last_seq`/`last_hash` are what to store: advanced to
    the received message for OK, SKIPPED and BAD_HASH (it was received, the chain continues
    from it), unchanged for DUPLICATE and BAD_ID.
    """

    integrity: Integrity
    last_seq: int
    last_hash: bytes | None
    skipped: int = 0

    @property
    def ok(self) -> bool:
        return self.integrity is Integrity.OK


def check_integrity(
    last_seq: int, last_hash: bytes | None, received: AgentMessage, received_hash: bytes
) -> IntegrityCheck:
    """Compare `received` (whose `message_hash` is `received_hash`) with the receiver's state.

    `last_seq` is the seq of the last chain message received on this connection (0 before
    the first) and `last_hash` its hash (None before the first, which stands for
    `GENESIS_HASH`). The first matching rule wins:

    ==========================================  ==========  ============
    received seq                                 integrity   state after
    ==========================================  ==========  ============
    not an int, <= 0 or > MAX_SEQ                BAD_ID      unchanged
    == last_seq, received_hash != last_hash      BAD_ID      unchanged
    <= last_seq                                  DUPLICATE   unchanged
    > last_seq + 1                               SKIPPED     received
    == last_seq + 1, prev_hash != last_hash      BAD_HASH    received
    == last_seq + 1, prev_hash == last_hash      OK          received
    ==========================================  ==========  ============
    """
    seq = received.seq
    unchanged = (last_seq, last_hash)
    if type(seq) is not int or not 0 < seq <= MAX_SEQ:
        return IntegrityCheck(Integrity.BAD_ID, *unchanged)
    if seq == last_seq and received_hash != last_hash:
        return IntegrityCheck(Integrity.BAD_ID, *unchanged)
    if seq <= last_seq:
        return IntegrityCheck(Integrity.DUPLICATE, *unchanged)
    if seq > last_seq + 1:
        return IntegrityCheck(Integrity.SKIPPED, seq, received_hash, skipped=seq - last_seq - 1)
    expected = GENESIS_HASH if last_hash is None else last_hash
    if received.prev_hash != expected:
        return IntegrityCheck(Integrity.BAD_HASH, seq, received_hash)
    return IntegrityCheck(Integrity.OK, seq, received_hash)
