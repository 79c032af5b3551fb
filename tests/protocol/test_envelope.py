"""Tests of protocol.envelope: e2e envelopes, padding, agent messages, sizes, the hash chain,
the integrity check, and bad input."""

from __future__ import annotations

from typing import NamedTuple

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.address import ServerAddress
from protocol.crypto import DhKey, hkdf, random_bytes, seal
from protocol.envelope import (
    AGENT_VERSION,
    E2E_VERSION,
    GENESIS_HASH,
    MAX_INFO,
    MAX_PLAINTEXT,
    MAX_SEQ,
    MAX_USER_BODY,
    PAD_BLOCK,
    AgentMessage,
    Confirmation,
    ConnInfo,
    EnvelopeContent,
    Integrity,
    IntegrityCheck,
    Invitation,
    OpenedMessage,
    QCont,
    UserMessage,
    check_integrity,
    decode_agent_message,
    e2e_key,
    encode_agent_message,
    message_hash,
    open_agent_message,
    open_envelope,
    seal_agent_message,
    seal_envelope,
)
from protocol.errors import DuplexError, EnvelopeError
from protocol.links import MAX_LINK_QUEUES, ConnectionLink, QueueAddress
from protocol.queue import MAX_BODY, QueueMode

SERVER = ServerAddress(bytes(range(32)), "relay.example.org", 5223)
LONG_SERVER = ServerAddress(bytes(32), ".".join(["a" * 63] * 4)[:253], 65535)

ALICE = DhKey.generate()  # the sender on the queue under test
BOB = DhKey.generate()  # the recipient: his public key is in the queue address
CAROL = DhKey.generate()  # someone else who learnt the address


def queue(mode: QueueMode = QueueMode.MESSAGING, server: ServerAddress = SERVER) -> QueueAddress:
    return QueueAddress.create(server, random_bytes(24), DhKey.generate().public, mode)


H1, H2, H3, H9 = (bytes([n]) * 32 for n in (1, 2, 3, 9))
REPLY_QUEUE = queue()
LINK = ConnectionLink.create(queue())
MESSAGES: dict[str, EnvelopeContent] = {
    "conf": Confirmation(REPLY_QUEUE, random_bytes(32), b"bob's profile"),
    "conf-bare": Confirmation(None, None),
    "inv": Invitation(LINK, b"carol's profile"),
    "info": AgentMessage(1, GENESIS_HASH, ConnInfo(b"alice's profile")),
    "user": AgentMessage(2, H1, UserMessage(b"hello")),
    "user-empty": AgentMessage(3, H2, UserMessage(b"")),
    "user-max": AgentMessage(4, H3, UserMessage(b"\xff" * MAX_USER_BODY)),
    "qcont": AgentMessage(MAX_SEQ, H9, QCont()),
}


def raw_queue(q: QueueAddress) -> list[object]:
    return [q.server, q.snd_id, q.dh_public, q.mode.value]


def plaintext(*content: object, version: object = AGENT_VERSION) -> bytes:
    return msgspec.msgpack.encode([version, list(content)])


def sealed_body(padded: bytes, sender: DhKey = ALICE, version: object = E2E_VERSION) -> bytes:
    """An envelope around an already padded plaintext: to test the padding rules."""
    key = e2e_key(sender, BOB.public)
    box = seal(key, padded, sender.public + BOB.public)
    return msgspec.msgpack.encode([version, sender.public, box])


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", MESSAGES)
def test_agent_message_round_trip(name: str) -> None:
    message = MESSAGES[name]
    encoded = encode_agent_message(message)
    assert decode_agent_message(encoded) == message
    assert encode_agent_message(message) == encoded  # deterministic: the sender's hash holds

    body = seal_agent_message(ALICE, BOB.public, message)
    assert len(body) <= MAX_BODY
    opened = open_agent_message(BOB, body)
    assert isinstance(opened, OpenedMessage)
    assert opened == (ALICE.public, message, message_hash(encoded))
    assert open_agent_message(BOB, body, expected_sender=ALICE.public).message == message


def test_e2e_key_is_shared_and_per_pair() -> None:
    key = e2e_key(ALICE, BOB.public)
    assert key == e2e_key(BOB, ALICE.public)
    assert key == hkdf(ALICE.shared_secret(BOB.public), b"duplex/e2e/v1")
    assert len(key) == 32
    assert key != e2e_key(CAROL, BOB.public)
    with pytest.raises(EnvelopeError, match="X25519"):
        e2e_key(ALICE, bytes(32))  # a low-order point
    with pytest.raises(EnvelopeError, match="X25519"):
        e2e_key(ALICE, b"short")


@pytest.mark.parametrize("size", [0, 1, 253, 254, 255, 4000, MAX_PLAINTEXT])
def test_envelope_round_trip(size: int) -> None:
    data = random_bytes(size)
    body = seal_envelope(ALICE, BOB.public, data)
    assert len(body) <= MAX_BODY
    assert open_envelope(BOB, body) == (ALICE.public, data)
    assert open_envelope(BOB, body, expected_sender=ALICE.public) == (ALICE.public, data)


def test_envelope_is_randomised_and_hides_the_plaintext() -> None:
    data = b"meet me at the usual place" * 4
    first, second = (seal_envelope(ALICE, BOB.public, data) for _ in range(2))
    assert first != second  # random nonce
    assert data[:16] not in first
    assert msgspec.msgpack.decode(first)[:2] == [E2E_VERSION, ALICE.public]


def test_padding_hides_lengths_within_a_bucket() -> None:
    def length(size: int) -> int:
        return len(seal_envelope(ALICE, BOB.public, bytes(size)))

    bucket = PAD_BLOCK - 2  # the real length takes two bytes
    assert length(0) == length(1) == length(bucket)
    assert length(bucket + 1) == length(bucket) + PAD_BLOCK
    assert length(MAX_PLAINTEXT) - length(0) == MAX_PLAINTEXT // PAD_BLOCK * PAD_BLOCK


# ---------------------------------------------------------------------- keys and tampering


def test_wrong_key_cannot_open() -> None:
    body = seal_agent_message(ALICE, BOB.public, MESSAGES["user"])
    for wrong in (CAROL, ALICE):  # a third party; the sender itself
        with pytest.raises(EnvelopeError, match="does not open"):
            open_agent_message(wrong, body)


def test_every_tampered_byte_is_refused() -> None:
    body = seal_agent_message(ALICE, BOB.public, MESSAGES["user"])
    for i in range(len(body)):
        for flip in (0x01, 0x80):
            tampered = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
            with pytest.raises(EnvelopeError):
                open_agent_message(BOB, tampered)
    for cut in (0, 1, 10, len(body) - 1):
        with pytest.raises(EnvelopeError):
            open_agent_message(BOB, body[:cut])
    with pytest.raises(EnvelopeError):
        open_agent_message(BOB, body + b"\x00")


def test_sender_swap_is_refused() -> None:
    body = seal_agent_message(ALICE, BOB.public, MESSAGES["user"])
    version, _, box = msgspec.msgpack.decode(body)
    swapped = msgspec.msgpack.encode([version, CAROL.public, box])
    with pytest.raises(EnvelopeError, match="peer key"):  # refused before decryption
        open_agent_message(BOB, swapped, expected_sender=ALICE.public)
    with pytest.raises(EnvelopeError, match="does not open"):  # the AD binds the header key
        open_agent_message(BOB, swapped)
    # Carol's own, genuine envelope on Bob's queue: fine for a new queue, not for Alice's
    from_carol = seal_agent_message(CAROL, BOB.public, MESSAGES["user"])
    assert open_agent_message(BOB, from_carol).sender_public == CAROL.public
    with pytest.raises(EnvelopeError, match="peer key"):
        open_agent_message(BOB, from_carol, expected_sender=ALICE.public)


def test_box_for_another_recipient_is_refused() -> None:
    """A box sealed to Carol, relabelled as if for Bob: the AD holds the recipient key."""
    body = seal_agent_message(ALICE, CAROL.public, MESSAGES["user"])
    with pytest.raises(EnvelopeError, match="does not open"):
        open_agent_message(BOB, body)


# ---------------------------------------------------------------------- versions and shapes


def test_envelope_version_and_shape() -> None:
    padded = (5).to_bytes(2, "big") + b"hello" + bytes(PAD_BLOCK - 7)
    assert open_envelope(BOB, sealed_body(padded)) == (ALICE.public, b"hello")
    with pytest.raises(EnvelopeError, match="version 2; this client reads version 1"):
        open_envelope(BOB, sealed_body(padded, version=2))
    for bad in (
        b"",
        b"\xc1",
        msgspec.msgpack.encode([1, ALICE.public]),
        msgspec.msgpack.encode([1, ALICE.public[:31], bytes(40)]),
        msgspec.msgpack.encode([1, ALICE.public, bytes(27)]),  # shorter than nonce + tag
        msgspec.msgpack.encode([1, bytes(32), bytes(40)]),  # a low-order sender key
        msgspec.msgpack.encode(["1", ALICE.public, bytes(40)]),
        msgspec.msgpack.encode({"version": 1}),
        bytes(MAX_BODY + 1),
    ):
        with pytest.raises(EnvelopeError):
            open_envelope(BOB, bad)


@pytest.mark.parametrize(
    "padded",
    [
        b"",
        b"\x00",
        (5).to_bytes(2, "big") + b"hello" + bytes(2 * PAD_BLOCK - 7),  # a needless extra block
        (5).to_bytes(2, "big") + b"hello" + bytes(PAD_BLOCK - 8),  # not a whole block
        (5).to_bytes(2, "big") + b"hello" + b"\x01" + bytes(PAD_BLOCK - 8),  # padding not zero
        (300).to_bytes(2, "big") + bytes(PAD_BLOCK - 2),  # longer than the box
    ],
    ids=["empty", "one", "extra-block", "partial", "nonzero", "overlong"],
)
def test_non_canonical_padding_is_refused(padded: bytes) -> None:
    with pytest.raises(EnvelopeError, match="padd"):
        open_envelope(BOB, sealed_body(padded))


def test_seal_envelope_refuses_bad_arguments() -> None:
    with pytest.raises(EnvelopeError, match="at most"):
        seal_envelope(ALICE, BOB.public, bytes(MAX_PLAINTEXT + 1))
    with pytest.raises(EnvelopeError, match="bytes"):
        seal_envelope(ALICE, BOB.public, "text")  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match="X25519"):
        seal_envelope(ALICE, bytes(32), b"")
    with pytest.raises(EnvelopeError):
        open_envelope(BOB, "text")  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError):
        open_envelope(BOB.public, b"")  # type: ignore[arg-type]


def test_agent_version_is_checked_first() -> None:
    valid = AgentMessage(1, GENESIS_HASH, UserMessage(b"x"))
    assert decode_agent_message(plaintext("AMSG", 1, GENESIS_HASH, ["MSG", b"x"])) == valid
    with pytest.raises(EnvelopeError, match="version 2; this client reads version 1"):
        decode_agent_message(plaintext("AMSG", 1, GENESIS_HASH, ["MSG", b"x"], version=2))
    with pytest.raises(EnvelopeError, match="malformed"):
        decode_agent_message(plaintext("AMSG", 1, GENESIS_HASH, ["MSG", b"x"], version="1"))


@pytest.mark.parametrize(
    "data",
    [
        plaintext("MSG", b"x"),  # a chain payload on its own
        plaintext("QCONT"),
        plaintext("INFO", b"x"),
        plaintext("NOPE", b"x"),
        plaintext("AMSG", 1, GENESIS_HASH, ["CONF", None, None, b""]),  # not a chain payload
        plaintext("AMSG", 1, H1[:31], ["MSG", b"x"]),
        plaintext("AMSG", 1, None, ["MSG", b"x"]),
        plaintext("AMSG", 1.5, H1, ["MSG", b"x"]),
        plaintext("AMSG", True, H1, ["MSG", b"x"]),
        plaintext("AMSG", 1, H1, ["MSG", "text"]),
        plaintext("AMSG", 1, H1, ["MSG", bytes(MAX_USER_BODY + 1)]),
        plaintext("AMSG", 1, H1, ["INFO", bytes(MAX_INFO + 1)]),
        plaintext("CONF", raw_queue(queue(QueueMode.CONTACT)), None, b""),
        plaintext("CONF", raw_queue(REPLY_QUEUE)[:3], None, b""),
        plaintext("CONF", None, bytes(31), b""),
        plaintext("CONF", None, None, bytes(MAX_INFO + 1)),
        plaintext("INV", [1, 1, [raw_queue(queue(QueueMode.CONTACT))]], b""),
        plaintext("INV", [2, 3, [raw_queue(REPLY_QUEUE)]], b""),  # versions we do not speak
        plaintext("INV", [1, 1, []], b""),
        msgspec.msgpack.encode([AGENT_VERSION]),
        msgspec.msgpack.encode(AGENT_VERSION),
        b"",
        b"\xc1",
        b"\x92\x01" + b"\x91" * 5000,  # nested deep
        bytes(MAX_PLAINTEXT + 1),
    ],
)
def test_malformed_agent_messages_are_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_agent_message(data)
    body = seal_envelope(ALICE, BOB.public, data) if len(data) <= MAX_PLAINTEXT else data
    with pytest.raises(EnvelopeError):
        open_agent_message(BOB, body)


def test_odd_seqs_decode_so_they_can_be_reported() -> None:
    for seq in (0, -1, -(2**63), MAX_SEQ + 1, 2**64 - 1):
        message = decode_agent_message(plaintext("AMSG", seq, H1, ["QCONT"]))
        assert isinstance(message, AgentMessage) and message.seq == seq
        assert check_integrity(0, None, message, H2).integrity is Integrity.BAD_ID


def test_later_fields_are_ignored() -> None:
    """A later agent version may append fields; this one reads what it knows."""
    data = plaintext("AMSG", 1, GENESIS_HASH, ["MSG", b"x", "future"], "future")
    assert decode_agent_message(data) == AgentMessage(1, GENESIS_HASH, UserMessage(b"x"))


def test_structs_check_their_modes() -> None:
    with pytest.raises(EnvelopeError, match="messaging"):
        Confirmation(queue(QueueMode.CONTACT), None, b"")
    with pytest.raises(EnvelopeError, match="one-time"):
        Invitation(ConnectionLink.create(queue(QueueMode.CONTACT)), b"")


def test_encode_refuses_what_a_receiver_would_refuse() -> None:
    for bad in (
        UserMessage(b"x"),  # a bare payload: it travels in an AgentMessage
        "text",
        None,
        AgentMessage(1, b"short", UserMessage(b"x")),
        AgentMessage(1, GENESIS_HASH, UserMessage("text")),  # type: ignore[arg-type]
        AgentMessage(1, GENESIS_HASH, ConnInfo(bytes(MAX_INFO + 1))),
        AgentMessage(2**64, GENESIS_HASH, QCont()),  # does not even encode
        AgentMessage(1, GENESIS_HASH, object()),  # type: ignore[arg-type]
        Confirmation(None, b"short"),
        Confirmation(None, None, bytes(MAX_INFO + 1)),
        Invitation(LINK, bytes(MAX_INFO + 1)),
    ):
        with pytest.raises(EnvelopeError):
            encode_agent_message(bad)  # type: ignore[arg-type]
        with pytest.raises(EnvelopeError):
            seal_agent_message(ALICE, BOB.public, bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- sizes


@pytest.mark.parametrize("seq", [1, 2**32, MAX_SEQ, 2**64 - 1, -(2**63)])
def test_max_user_body_fits_one_queue_message(seq: int) -> None:
    message = AgentMessage(seq, H1, UserMessage(random_bytes(MAX_USER_BODY)))
    body = seal_agent_message(ALICE, BOB.public, message)
    assert len(body) <= MAX_BODY
    assert open_agent_message(BOB, body).message == message

    too_big = AgentMessage(seq, H1, UserMessage(bytes(MAX_USER_BODY + 1)))
    with pytest.raises(EnvelopeError, match="16062"):
        encode_agent_message(too_big)
    with pytest.raises(EnvelopeError):
        seal_agent_message(ALICE, BOB.public, too_big)


def test_max_user_body_value() -> None:
    # 16 KiB, less the envelope (67) rounded to whole pad blocks (16,128), the length (2) and a
    # bound of 64 on the message's own overhead (59 at worst).
    assert MAX_USER_BODY == 16062
    worst = encode_agent_message(AgentMessage(2**64 - 1, H1, UserMessage(b"")))
    assert len(worst) <= 64
    assert len(worst) + MAX_USER_BODY <= MAX_PLAINTEXT


def test_largest_handshake_messages_fit() -> None:
    long_queue = queue(server=LONG_SERVER)
    assert len(long_queue.server) > 300
    link = ConnectionLink.create(*(queue(server=LONG_SERVER) for _ in range(MAX_LINK_QUEUES)))
    for message in (
        Confirmation(long_queue, random_bytes(32), bytes(MAX_INFO)),
        Invitation(link, bytes(MAX_INFO)),
        AgentMessage(MAX_SEQ, H1, ConnInfo(bytes(MAX_INFO))),
    ):
        body = seal_agent_message(ALICE, BOB.public, message)
        assert len(body) <= MAX_BODY
        assert open_agent_message(BOB, body).message == message


# ---------------------------------------------------------------------- integrity


class Row(NamedTuple):
    """The receiver's state, the message received, and what check_integrity must say."""

    last_seq: int
    last_hash: bytes | None
    seq: int
    prev_hash: bytes
    received_hash: bytes
    integrity: Integrity
    skipped: int
    after: tuple[int, bytes | None]  # the state to store


_ROWS = {
    "first": Row(0, None, 1, GENESIS_HASH, H1, Integrity.OK, 0, (1, H1)),
    "first-genesis": Row(0, GENESIS_HASH, 1, GENESIS_HASH, H1, Integrity.OK, 0, (1, H1)),
    "next": Row(1, H1, 2, H1, H2, Integrity.OK, 0, (2, H2)),
    "max-seq": Row(MAX_SEQ - 1, H1, MAX_SEQ, H1, H2, Integrity.OK, 0, (MAX_SEQ, H2)),
    "first-bad-hash": Row(0, None, 1, H9, H1, Integrity.BAD_HASH, 0, (1, H1)),
    "bad-hash": Row(1, H1, 2, H9, H2, Integrity.BAD_HASH, 0, (2, H2)),
    "resent": Row(2, H2, 2, H1, H2, Integrity.DUPLICATE, 0, (2, H2)),
    "older": Row(5, H3, 3, H2, H9, Integrity.DUPLICATE, 0, (5, H3)),
    "first-again": Row(5, H3, 1, GENESIS_HASH, H1, Integrity.DUPLICATE, 0, (5, H3)),
    "same-id-other-content": Row(2, H2, 2, H1, H9, Integrity.BAD_ID, 0, (2, H2)),
    "skipped-one": Row(1, H1, 3, H2, H3, Integrity.SKIPPED, 1, (3, H3)),
    "skipped-many": Row(1, H1, 1001, H9, H3, Integrity.SKIPPED, 999, (1001, H3)),
    "skipped-first": Row(0, None, 3, H2, H3, Integrity.SKIPPED, 2, (3, H3)),
    "zero": Row(0, None, 0, GENESIS_HASH, H1, Integrity.BAD_ID, 0, (0, None)),
    "negative": Row(4, H2, -1, H2, H1, Integrity.BAD_ID, 0, (4, H2)),
    "absurd": Row(4, H2, MAX_SEQ + 1, H2, H1, Integrity.BAD_ID, 0, (4, H2)),
    "absurd-u64": Row(4, H2, 2**64 - 1, H2, H1, Integrity.BAD_ID, 0, (4, H2)),
    "bool": Row(0, None, True, GENESIS_HASH, H1, Integrity.BAD_ID, 0, (0, None)),
}


@pytest.mark.parametrize("name", _ROWS)
def test_check_integrity(name: str) -> None:
    row = _ROWS[name]
    received = AgentMessage(row.seq, row.prev_hash, UserMessage(b"x"))
    check = check_integrity(row.last_seq, row.last_hash, received, row.received_hash)
    assert check == IntegrityCheck(row.integrity, *row.after, skipped=row.skipped)
    assert check.ok is (row.integrity is Integrity.OK)


def test_integrity_table_covers_every_verdict() -> None:
    assert {row.integrity for row in _ROWS.values()} == set(Integrity)


class _Sender:
    """One direction of a connection as the sending agent keeps it."""

    def __init__(self) -> None:
        self.seq = 0
        self.last_hash = GENESIS_HASH

    def send(self, payload: UserMessage | ConnInfo | QCont) -> bytes:
        self.seq += 1
        message = AgentMessage(self.seq, self.last_hash, payload)
        self.last_hash = message_hash(encode_agent_message(message))
        return seal_agent_message(ALICE, BOB.public, message)


class _Receiver:
    def __init__(self) -> None:
        self.last_seq = 0
        self.last_hash: bytes | None = None
        self.peer: bytes | None = None

    def receive(self, body: bytes) -> IntegrityCheck:
        sender, message, hash_ = open_agent_message(BOB, body, self.peer)
        self.peer = sender  # learnt from the first message, required from then on
        assert isinstance(message, AgentMessage)
        check = check_integrity(self.last_seq, self.last_hash, message, hash_)
        self.last_seq, self.last_hash = check.last_seq, check.last_hash
        return check


def test_hash_chain_over_a_conversation() -> None:
    alice, bob = _Sender(), _Receiver()
    payloads = [ConnInfo(b"alice"), *(UserMessage(b"m%d" % i) for i in range(20)), QCont()]
    bodies = [alice.send(p) for p in payloads]
    assert [bob.receive(b).integrity for b in bodies] == [Integrity.OK] * len(bodies)
    assert bob.last_seq == len(bodies)
    assert bob.last_hash == alice.last_hash

    # a re-sent SEND (same body after a crash) is a duplicate and changes nothing
    assert bob.receive(bodies[-1]).integrity is Integrity.DUPLICATE
    assert bob.receive(bodies[3]).integrity is Integrity.DUPLICATE
    assert (bob.last_seq, bob.last_hash) == (len(bodies), alice.last_hash)

    # a lost message: the next one is SKIPPED, and the chain goes on from it
    alice.send(UserMessage(b"lost"))
    check = bob.receive(alice.send(UserMessage(b"after the loss")))
    assert (check.integrity, check.skipped) == (Integrity.SKIPPED, 1)
    assert bob.receive(alice.send(UserMessage(b"and on"))).ok

    # a sender that forgot its last hash (a bug, a restored backup): BAD_HASH, then OK again
    alice.last_hash = H9
    assert bob.receive(alice.send(UserMessage(b"forked"))).integrity is Integrity.BAD_HASH
    assert bob.receive(alice.send(UserMessage(b"back on track"))).ok


def test_chain_hash_is_of_the_received_bytes() -> None:
    """The receiver hashes what arrived, so fields a later version appends are covered."""
    data = plaintext("AMSG", 1, GENESIS_HASH, ["MSG", b"x"], "appended")
    opened = open_agent_message(BOB, seal_envelope(ALICE, BOB.public, data))
    assert opened.hash == message_hash(data)
    assert opened.hash != message_hash(encode_agent_message(opened.message))


# ---------------------------------------------------------------------- bad input, at random

_VALID_PLAINTEXTS = [
    encode_agent_message(m) for m in MESSAGES.values() if m != MESSAGES["user-max"]
]
_VALID_BODIES = [seal_envelope(ALICE, BOB.public, p) for p in _VALID_PLAINTEXTS]
_TAGS = st.sampled_from(["CONF", "INV", "AMSG", "MSG", "INFO", "QCONT", "", "X", 1])
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.binary(max_size=40)
    | st.text(max_size=10)
    | st.sampled_from([0, 1, 2, "m", "c", bytes(24), bytes(32), H1, ALICE.public, str(SERVER)])
)
_MSGPACK = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(["", "t"]), inner, max_size=3)
    ),
    max_leaves=8,
)
_NEAR_FIELDS = st.lists(
    _SCALARS
    | st.sampled_from(
        [
            raw_queue(REPLY_QUEUE),
            raw_queue(queue(QueueMode.CONTACT)),
            [1, 1, [raw_queue(REPLY_QUEUE)]],
            [1, 1, [raw_queue(queue(QueueMode.CONTACT))]],
            ["MSG", b"x"],
            ["INFO", b""],
            ["QCONT"],
            ["CONF", None, None, b""],
        ]
    ),
    max_size=4,
)
_NEAR_PLAINTEXTS = st.builds(
    lambda v, tag, fields: msgspec.msgpack.encode([v, [tag, *fields]]),
    st.sampled_from([1, 1, 1, 0, 2, "1", None, True]),
    _TAGS,
    _NEAR_FIELDS,
)


def _mutate(data: bytes, position: int, byte: int, op: str) -> bytes:
    i = position % (len(data) + 1)
    if op == "truncate":
        return data[:i]
    if op == "insert":
        return data[:i] + bytes([byte]) + data[i:]
    if op == "delete":
        return data[:i] + data[i + 1 :]
    if not data:
        return data
    i %= len(data)
    return data[:i] + bytes([data[i] ^ (byte or 1)]) + data[i + 1 :]


_OPS = st.sampled_from(["truncate", "insert", "delete", "flip"])
_PLAINTEXTS = st.one_of(
    st.binary(max_size=300),
    st.builds(msgspec.msgpack.encode, _MSGPACK),
    _NEAR_PLAINTEXTS,
    st.builds(
        _mutate, st.sampled_from(_VALID_PLAINTEXTS), st.integers(0), st.integers(0, 255), _OPS
    ),
    st.sampled_from(_VALID_PLAINTEXTS),
)
_BODIES = st.one_of(
    st.binary(max_size=400),
    st.builds(msgspec.msgpack.encode, _MSGPACK),
    st.builds(
        lambda v, k, box: msgspec.msgpack.encode([v, k, box]),
        st.sampled_from([1, 1, 0, 2, "1"]),
        st.sampled_from([ALICE.public, CAROL.public, bytes(32), bytes(31), None]),
        st.binary(max_size=300),
    ),
    st.builds(_mutate, st.sampled_from(_VALID_BODIES), st.integers(0), st.integers(0, 255), _OPS),
    st.builds(lambda p: seal_envelope(ALICE, BOB.public, p), _PLAINTEXTS),  # reaches decoding
    st.builds(lambda p: seal_envelope(CAROL, BOB.public, p), _PLAINTEXTS),
)


def _check_message(message: object) -> None:
    assert isinstance(message, Confirmation | Invitation | AgentMessage)
    assert decode_agent_message(encode_agent_message(message)) == message


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_PLAINTEXTS | _BODIES)
def test_readers_raise_only_envelope_error(data: bytes) -> None:
    def attempt(read, *args):  # type: ignore[no-untyped-def]
        try:
            return read(*args)
        except EnvelopeError as exc:
            assert isinstance(exc, DuplexError) and exc.code == "ENVELOPE"
            return None

    _check_message(attempt(decode_agent_message, data) or MESSAGES["conf-bare"])
    for expected in (None, ALICE.public):
        opened = attempt(open_envelope, BOB, data, expected)
        if opened is not None:
            sender, plain = opened
            assert sender in (ALICE.public, CAROL.public) and isinstance(plain, bytes)
            assert expected in (None, sender)
        message = attempt(open_agent_message, BOB, data, expected)
        if message is not None:
            assert message.hash == message_hash(opened[1])  # type: ignore[index]
            _check_message(message.message)
