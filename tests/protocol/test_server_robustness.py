"""The queue server under bad input, bad signatures, a disk scan and kill -9.

* Fuzz: hypothesis generates the structured frames (and seeded mutants of each) for more than
  10,000 malformed or random transmissions, pipelined into one live server over a few raw
  sessions. Every reply is checked against the sans-io codec (what the server must answer
  while its store is empty), the server keeps serving, and every table of its database holds
  the same rows afterwards.
* Authorisation: every signed command with a missing or wrong signature is refused with the
  documented error and changes nothing; the correctly signed command right after is accepted.
  Keys of small order, under which signatures verify without any private key, are refused.
* At rest: no plaintext of any message (nor of link data) is in the SQLite files.
* kill -9: `duplex server` killed and restarted on its database keeps its certificate, its
  queues and every acknowledged message, and delivers the unacknowledged one again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import ssl
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from protocol import crypto
from protocol.address import ServerAddress
from protocol.errors import ServerError
from protocol.queue import (
    ID_SIZE,
    KEY_SIZE,
    MAX_BODY,
    PROTOCOL_VERSION,
    SIGNATURE_SIZE,
    WEBSOCKET_MAX_MESSAGE,
    Ack,
    ClientHello,
    Command,
    Del,
    Err,
    ErrorCode,
    Get,
    Ids,
    Key,
    LDel,
    LGet,
    Lnk,
    LSet,
    Msg,
    New,
    Off,
    Ok,
    Ping,
    Pong,
    QueueMode,
    Reply,
    Send,
    SKey,
    Sub,
    Transmission,
    WireError,
    decode_client_hello,
    decode_command,
    decode_server_hello,
    decode_transmission,
    encode,
    encode_transmission,
    signed_payload,
)
from protocol.server import QueueServer, ServerConfig
from tests.protocol.queues import QueueOwner, RawSession

ROOT = Path(__file__).resolve().parents[2]

# What garbage may be answered with (protocol/queue.py, ErrorCode); never OK, IDS, MSG, LNK.
GARBAGE_ERRORS = frozenset(
    {
        ErrorCode.CMD_SYNTAX,
        ErrorCode.CMD_UNKNOWN,
        ErrorCode.CMD_NO_AUTH,
        ErrorCode.CMD_HAS_AUTH,
        ErrorCode.CMD_NO_ENTITY,
        ErrorCode.AUTH,
        ErrorCode.LARGE_MSG,
    }
)


# Ed25519 public keys of small order (the identity, the point of order 2, one of order 4).
# They need no private key: under the identity point, R = identity and S = 0 verifies as the
# signature of every message; under the order-4 point the all-zero signature verifies about
# one message in four. A command "signed" this way is signed by nobody.
IDENTITY_POINT = (1).to_bytes(32, "little")
IDENTITY_FORGERY = IDENTITY_POINT + bytes(32)
SMALL_ORDER_KEYS = (IDENTITY_POINT, b"\xec" + b"\xff" * 30 + b"\x7f", bytes(32))

# ---------------------------------------------------------------------- database helpers


def table_contents(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite file, in a stable order (read while it runs)."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            for table in tables
        }


def row_counts(contents: dict[str, list[tuple[Any, ...]]]) -> dict[str, int]:
    return {table: len(rows) for table, rows in contents.items()}


# ---------------------------------------------------------------------- the oracle


@dataclass(frozen=True, slots=True)
class Expected:
    """The reply the server owes a frame while its store holds no queue at all."""

    corr_id: bytes
    entity_id: bytes
    replies: tuple[Reply, ...]  # one of these
    malformed: bool  # refused by decoding (counts towards closing an abusive session)


def expected_reply(frame: bytes | str) -> Expected:
    """Decode like the server does (text frames are UTF-8 encoded by it first).

    With an empty store a well-formed command can only be answered `AUTH` (unknown entity,
    unknown link id, or a signature that is not over this session), except `PING`; a `NEW`
    may also be refused as `CMD SYNTAX` for its keys (a degenerate DH or signing key).
    """
    data = frame.encode("utf-8", "replace") if isinstance(frame, str) else frame
    try:
        transmission = decode_transmission(data)
        command = decode_command(transmission)
    except WireError as exc:
        return Expected(exc.corr_id, b"", (Err(exc.code),), malformed=True)
    corr_id, entity_id = transmission.corr_id, transmission.entity_id
    if isinstance(command, Ping):
        return Expected(corr_id, b"", (Pong(),), malformed=False)
    if isinstance(command, New):
        refusals = (Err(ErrorCode.AUTH), Err(ErrorCode.CMD_SYNTAX))
        return Expected(corr_id, entity_id, refusals, malformed=False)
    return Expected(corr_id, entity_id, (Err(ErrorCode.AUTH),), malformed=False)


# ---------------------------------------------------------------------- hypothesis strategies

_ids = st.binary(min_size=ID_SIZE, max_size=ID_SIZE)
_keys = st.one_of(
    st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE), st.sampled_from(SMALL_ORDER_KEYS)
)
_corr_ids = st.one_of(st.binary(min_size=1, max_size=24), st.binary(max_size=40))
_entities = st.one_of(st.just(b""), _ids, st.binary(max_size=40))
_signatures = st.one_of(
    st.just(b""),
    st.binary(min_size=SIGNATURE_SIZE, max_size=SIGNATURE_SIZE),
    st.binary(max_size=80),
    st.just(IDENTITY_FORGERY),
)
_FUZZ_KEYS = tuple(crypto.SigningKey.from_private(bytes([i]) * 32) for i in range(1, 4))

_commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(New, _keys, _keys, st.sampled_from(QueueMode), st.booleans()),
    st.just(Sub()),
    st.builds(Key, _keys),
    st.builds(SKey, _keys),
    st.builds(Ack, _ids),
    st.just(Get()),
    st.just(Off()),
    st.just(Del()),
    st.builds(LSet, _ids, st.binary(max_size=64)),
    st.just(LDel()),
    st.builds(Send, st.integers(0, 255), st.binary(max_size=64)),
    st.builds(LGet, _ids),
    st.just(Ping()),
)
_command_bytes = _commands.map(encode)


def random_value(rng: random.Random, depth: int = 0) -> object:
    """Any MessagePack-encodable value, nested up to three levels (cheap, seeded)."""
    kind = rng.randrange(9 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-40, 300)
    if kind == 3:
        return rng.randint(-(2**63), 2**64 - 1)
    if kind == 4:
        return rng.choice((0.0, -1.5, float("inf"), float("nan"), rng.random() * 1e300))
    if kind == 5:
        return (
            "".join(
                chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x20000))))
                for _ in range(rng.randrange(12))
            )
            .encode("utf-8", "replace")
            .decode("utf-8")
        )
    if kind == 6:
        return rng.randbytes(rng.choice((0, 1, 23, 24, 25, 31, 32, 33, 64, rng.randrange(80))))
    if kind == 7:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(7))]
    return {
        rng.choice(("t", "", "corr_id", rng.randrange(9))): random_value(rng, depth + 1)
        for _ in range(rng.randrange(5))
    }


# Hypothesis picks the structure around these; the values themselves come from a seed, which
# is much cheaper than a recursive strategy for thousands of frames.
_msgpack_values = st.integers(0, 2**32 - 1).map(lambda seed: random_value(random.Random(seed)))

_TAGS = (
    *("NEW", "SUB", "KEY", "SKEY", "ACK", "GET", "OFF", "DEL", "LSET", "LDEL", "SEND", "LGET"),
    *("PING", "IDS", "OK", "MSG", "END", "LNK", "PONG", "ERR", "HELLO", "new", "send"),
)

# MessagePack headers that declare far more than the frame holds: bin, str, array, map, ext.
_HUGE_HEADERS = (
    b"\xc4\xff",
    b"\xc5\xff\xff",
    b"\xc6\xff\xff\xff\xff",
    b"\xd9\xff",
    b"\xda\xff\xff",
    b"\xdb\xff\xff\xff\xff",
    b"\xdc\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\xde\xff\xff",
    b"\xdf\xff\xff\xff\xff",
    b"\xc8\xff\xff\x05",
    b"\xc9\xff\xff\xff\xff\x05",
    b"\xd7\xff",  # fixext 8 with the timestamp type and nothing after it
)


def _pack(value: object) -> bytes:
    return msgspec.msgpack.encode(value)


@st.composite
def _mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """`base` with bit flips, truncations, insertions, deletions and huge length headers."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "truncate", "insert", "delete", "set", "huge")))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "set" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "huge":
            data[pos:pos] = draw(st.sampled_from(_HUGE_HEADERS))
    return bytes(data)


@st.composite
def _envelopes(draw: st.DrawFn, commands: st.SearchStrategy[bytes]) -> bytes:
    """A well-formed envelope around `commands`, with random corr id, entity and signature."""
    return encode_transmission(draw(_corr_ids), draw(_entities), draw(commands), draw(_signatures))


_plain_frames = _envelopes(_command_bytes)  # real commands, random ids and signatures

# Commands with a known or unknown tag and fields of any type, count and length.
_wrong_commands = st.builds(
    lambda tag, fields: _pack([tag, *fields]),
    st.one_of(st.sampled_from(_TAGS), st.text(max_size=8), st.integers(-(2**63), 2**63), st.none()),
    st.lists(st.one_of(_msgpack_values, _ids, _keys, st.binary(max_size=40)), max_size=5),
)


@st.composite
def _odd_envelopes(draw: st.DrawFn) -> bytes:
    """Arrays of 0..7 items where any of the envelope's five fields may have another type."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    right = draw(st.integers(0, 2**7 - 1))  # which fields have the right type and size
    fields = [
        PROTOCOL_VERSION,
        rng.randbytes(SIGNATURE_SIZE),
        rng.randbytes(rng.randint(1, 24)),
        rng.randbytes(ID_SIZE),
        encode(draw(_commands)),
        random_value(rng),
        random_value(rng),
    ]
    fields = [field if right >> i & 1 else random_value(rng) for i, field in enumerate(fields)]
    return _pack(fields[: draw(st.integers(0, 7))])


@st.composite
def _wrong_versions(draw: st.DrawFn) -> bytes:
    version = draw(
        st.one_of(
            st.integers(-(2**63), PROTOCOL_VERSION - 1),
            st.integers(PROTOCOL_VERSION + 1, 2**64 - 1),
        )
    )
    return _pack(
        Transmission(
            version, draw(_signatures), draw(_corr_ids), draw(_entities), draw(_command_bytes)
        )
    )


@st.composite
def _huge_lengths(draw: st.DrawFn) -> bytes:
    """A length header declaring up to 4 GiB, at the places a decoder trusts it."""
    header = draw(st.sampled_from(_HUGE_HEADERS)) + draw(st.binary(max_size=32))
    corr, entity, sig = draw(_corr_ids), draw(_entities), draw(_signatures)
    head = b"\x95" + _pack(PROTOCOL_VERSION) + _pack(sig) + _pack(corr) + _pack(entity)
    where = draw(st.sampled_from(("frame", "field", "command item", "command", "command field")))
    if where == "frame":
        return header
    if where == "field":
        return b"\x95" + _pack(PROTOCOL_VERSION) + header
    if where == "command item":
        return head + header
    if where == "command":
        return encode_transmission(corr, entity, header, sig)
    tag = draw(st.sampled_from(_TAGS))
    return encode_transmission(corr, entity, b"\x93" + _pack(tag) + header, sig)


@st.composite
def _signed_elsewhere(draw: st.DrawFn) -> bytes:
    """A correctly signed command, but over another session id: a replay from elsewhere."""
    key = draw(st.sampled_from(_FUZZ_KEYS))
    command = draw(_commands)
    if isinstance(command, New):  # signed by the very key it registers
        command = New(key.public, command.rcv_dh_key, command.mode, command.subscribe)
    body = encode(command)
    corr = draw(st.binary(min_size=1, max_size=24))
    entity = b"" if isinstance(command, New | Ping | LGet) else draw(_ids)
    session_id = draw(st.binary(min_size=32, max_size=32))
    signature = key.sign(signed_payload(session_id, corr, entity, body))
    return encode_transmission(corr, entity, body, signature)


@st.composite
def _forged(draw: st.DrawFn) -> bytes:
    """Commands "signed" under a small-order key: signatures that need no private key."""
    key = draw(st.sampled_from(SMALL_ORDER_KEYS))
    command = draw(
        st.one_of(
            st.builds(New, st.just(key), _keys, st.sampled_from(QueueMode), st.booleans()),
            st.builds(SKey, st.just(key)),
            _commands,
        )
    )
    entity = b"" if isinstance(command, New | Ping | LGet) else draw(_ids)
    corr = draw(st.binary(min_size=1, max_size=24))
    signature = draw(st.sampled_from((IDENTITY_FORGERY, bytes(SIGNATURE_SIZE))))
    return encode_transmission(corr, entity, encode(command), signature)


@st.composite
def _oversized(draw: st.DrawFn) -> bytes:
    """Bodies and frames around and above the 16 KiB limit, below the websocket's own."""
    size = draw(st.integers(MAX_BODY - 64, WEBSOCKET_MAX_MESSAGE - 256))
    filler = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    corr, entity, sig = draw(_corr_ids), draw(_entities), draw(_signatures)
    kind = draw(st.sampled_from(("send", "command", "raw")))
    if kind == "send":
        return encode_transmission(corr, entity, encode(Send(0, filler)), sig)
    if kind == "command":
        return encode_transmission(corr, entity, filler, sig)
    return filler


_text_frames = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=80),
    _msgpack_values.map(lambda v: json.dumps(v, default=repr)),
    _plain_frames.map(lambda frame: frame.decode("latin-1")),
)

FUZZ_FRAMES: st.SearchStrategy[bytes | str] = st.one_of(
    st.binary(max_size=256),  # random bytes
    _msgpack_values.map(_pack),  # MessagePack of the wrong shape
    _odd_envelopes(),  # envelope fields of the wrong types, too few or too many
    _wrong_versions(),
    _plain_frames,  # valid commands with random entity ids and signatures
    _signed_elsewhere(),
    _forged(),
    _envelopes(_mutated(_command_bytes)),  # mutated command bytes in a good envelope
    _envelopes(_wrong_commands),  # wrong tags, wrong field types and lengths
    _mutated(_plain_frames),  # mutated whole frames
    _huge_lengths(),
    _oversized(),
    _text_frames,  # text, not binary, websocket frames
)

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
BATCH = 60  # frames per pipelined batch; with its PING it stays under max_consecutive_errors
ABUSIVE_BATCH = 80
MIN_FUZZ_FRAMES = 10_000
FUZZ_SESSIONS = 4  # concurrent raw sessions


def mutants(frame: bytes | str, rng: random.Random, count: int) -> list[bytes | str]:
    """`count` cheap seeded mutants of a frame: flips, cuts, insertions, huge headers, repeats;
    a text frame stays a text frame."""
    data = frame.encode("utf-8") if isinstance(frame, str) else frame
    out: list[bytes | str] = []
    for _ in range(count):
        m = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randint(0, len(m))
            op = rng.randrange(6)
            if op == 0 and m:
                m[min(pos, len(m) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                del m[pos:]
            elif op == 2:
                m[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif op == 3:
                del m[pos : pos + rng.randint(1, 8)]
            elif op == 4:
                m[pos:pos] = rng.choice(_HUGE_HEADERS)
            else:
                start = rng.randint(0, len(data))
                m[pos:pos] = data[start : start + rng.randint(1, 32)]
        out.append(bytes(m).decode("utf-8", "replace") if isinstance(frame, str) else bytes(m))
    return out


SEEDS_PER_EXAMPLE = (40, 44)
MUTANTS_PER_SEED = 3


def generate_batches() -> tuple[list[list[bytes | str]], list[list[bytes]]]:
    """Normal batches (more than 10,000 frames in all) and a few batches of pure garbage.

    Hypothesis draws the structured frames; each is followed by a few seeded mutants of it.
    """
    frames: list[bytes | str] = []
    abusive: list[list[bytes]] = []

    seen: set[bytes | str] = set()

    @settings(FUZZ_SETTINGS, max_examples=72)
    @given(
        st.lists(
            FUZZ_FRAMES, min_size=SEEDS_PER_EXAMPLE[0], max_size=SEEDS_PER_EXAMPLE[1], unique=True
        ),
        st.integers(0, 2**32 - 1),
    )
    def collect(seeds: list[bytes | str], seed: int) -> None:
        rng = random.Random(seed)
        for frame in seeds:
            if frame not in seen:  # hypothesis repeats itself across examples
                seen.add(frame)
                frames.append(frame)
            frames.extend(mutants(frame, rng, MUTANTS_PER_SEED))

    @settings(FUZZ_SETTINGS, max_examples=8)
    @given(
        st.lists(
            st.binary(max_size=64).map(lambda b: b"\xc1" + b),  # 0xc1: never valid MessagePack
            min_size=ABUSIVE_BATCH,
            max_size=ABUSIVE_BATCH,
        )
    )
    def collect_abusive(batch: list[bytes]) -> None:
        abusive.append(batch)

    collect()
    collect_abusive()
    batches = [frames[i : i + BATCH] for i in range(0, len(frames), BATCH)]
    return batches, abusive


# ---------------------------------------------------------------------- fuzz plumbing


class ErrorLogs(logging.Handler):
    """Collects ERROR records of the server's loggers (a caught crash is still a bug)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def server_error_logs() -> Iterator[ErrorLogs]:
    handler = ErrorLogs()
    loggers = [logging.getLogger(name) for name in ("protocol", "storage")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def shown(frame: bytes | str) -> str:
    """A frame for an assertion message: its start and its length."""
    return f"{frame[:400]!r} ({len(frame)} {'chars' if isinstance(frame, str) else 'bytes'})"


def check_reply(frame: bytes | str, got: tuple[Transmission, Reply], seen: set[Any]) -> None:
    transmission, reply = got
    want = expected_reply(frame)
    if isinstance(reply, Err):
        seen.add(reply.code)
        assert reply.code in GARBAGE_ERRORS, (shown(frame), reply)
    else:
        # The only frame the fuzz can produce that is a valid, successful command: a PING.
        # (An IDS here is a NEW that no private key signed, accepted: see _forged.)
        assert isinstance(reply, Pong), (shown(frame), reply)
        seen.add("PONG")
    assert reply in want.replies, (shown(frame), reply, want)
    assert (transmission.corr_id, transmission.entity_id) == (want.corr_id, want.entity_id), shown(
        frame
    )


@dataclass
class FuzzTally:
    answered: int = 0
    sessions: int = 0
    abusive_closed: int = 0


async def fuzz_worker(
    nursery: trio.Nursery,
    address: ServerAddress,
    work: deque[tuple[str, list[Any]]],
    tally: FuzzTally,
    seen: set[Any],
) -> None:
    raw: RawSession | None = None
    while work:
        kind, frames = work.popleft()
        if raw is None:
            raw = await RawSession.open(nursery, address)
            tally.sessions += 1
        if kind == "normal":
            ping_corr = raw.corr_id()
            ping = raw.frame(Ping(), corr_id=ping_corr)
            for frame in frames:
                await raw.send_raw(frame)
            await raw.send_raw(ping)
            for i, frame in enumerate(frames):
                try:
                    got = await raw.receive()
                except trio_websocket.ConnectionClosed as exc:
                    message = f"session closed before the reply to frame {i}: {shown(frame)}"
                    raise AssertionError(message) from exc
                check_reply(frame, got, seen)
                tally.answered += 1
            transmission, reply = await raw.receive()
            assert (transmission.corr_id, reply) == (ping_corr, Pong())
            continue
        # Pure garbage past max_consecutive_errors: the server may close the session (it is
        # allowed to, not required); the replies it did send must still be right.
        assert all(expected_reply(frame).malformed for frame in frames)
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            for frame in frames:
                await raw.send_raw(frame)
        answered = 0
        with trio.fail_after(10):
            try:
                for frame in frames:
                    check_reply(frame, await raw.receive(), seen)
                    answered += 1
            except trio_websocket.ConnectionClosed:
                tally.abusive_closed += 1
                raw = None
        tally.answered += answered
        if raw is not None:  # not closed: it must still be serving
            assert await raw.command(Ping()) == Pong()


async def open_without_hello(
    nursery: trio.Nursery, address: ServerAddress
) -> trio_websocket.WebSocketConnection:
    """TLS and websocket up to the server's hello, before ours (as RawSession.open)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tcp = await trio.open_tcp_stream(address.host, address.port)
    stream = trio.SSLStream(tcp, context, server_hostname=address.host)
    await stream.do_handshake()
    ws = await trio_websocket.wrap_client_stream(nursery, stream, address.host, "/")
    decode_server_hello(await ws.get_message())
    return ws


def is_acceptable_hello(frame: bytes | str) -> bool:
    if not isinstance(frame, bytes):
        return False
    try:
        return decode_client_hello(frame).version == PROTOCOL_VERSION
    except WireError:
        return False


# ---------------------------------------------------------------------- 1. the fuzz


async def test_fuzzed_transmissions_get_errors_and_store_nothing(
    start_server: Callable[..., QueueServer], tmp_path: Path, nursery: trio.Nursery
) -> None:
    batches, abusive = generate_batches()
    hellos: list[bytes | str] = []

    @settings(FUZZ_SETTINGS, max_examples=24)
    @given(
        st.one_of(
            st.binary(max_size=64),
            st.integers(-(2**63), 2**64 - 1).map(lambda v: encode(ClientHello(v))),
            st.just(encode(ClientHello(PROTOCOL_VERSION)) + b"\x00"),
            _plain_frames,
            st.text(max_size=20),
        ).filter(lambda f: not is_acceptable_hello(f))
    )
    def collect_hello(frame: bytes | str) -> None:
        hellos.append(frame)

    collect_hello()
    # Most fuzzed commands are well-formed and refused AUTH: the probe limit (tested on its
    # own below) would close every fuzzing session, so here it is out of the way.
    server = start_server("fuzz", config=ServerConfig(auth_failures=1_000_000))
    db_path = tmp_path / "fuzz.db"
    limit = server.config.max_consecutive_errors
    assert limit + 1 < ABUSIVE_BATCH and limit > BATCH  # abusive batches exceed it, others not
    before = table_contents(db_path)
    assert server.store.stats() == {"queues": 0, "messages": 0}
    assert before["server_identity"], before  # the certificate is kept there

    work: deque[tuple[str, list[Any]]] = deque()
    spacing = len(batches) // len(abusive)
    for i, batch in enumerate(batches):
        work.append(("normal", batch))
        if i % spacing == spacing // 2 and abusive:
            work.append(("abusive", abusive.pop()))
    tally, seen = FuzzTally(), set()
    with server_error_logs() as errors:
        # A client that never says a valid hello is dropped without a word.
        for frame in hellos:
            ws = await open_without_hello(nursery, server.address)
            await ws.send_message(frame)
            with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed):
                unexpected = await ws.get_message()
                pytest.fail(f"answered the hello {frame!r} with {unexpected!r}")
        async with trio.open_nursery() as workers:
            for _ in range(FUZZ_SESSIONS):
                workers.start_soon(fuzz_worker, nursery, server.address, work, tally, seen)
        # A frame above the websocket's own limit closes that connection, and only that one.
        bystander = await RawSession.open(nursery, server.address)
        for size in (WEBSOCKET_MAX_MESSAGE + 1, 3 * WEBSOCKET_MAX_MESSAGE):
            raw = await RawSession.open(nursery, server.address)
            frame = encode_transmission(b"big", bytes(ID_SIZE), encode(Send(0, bytes(size))))
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await raw.send_raw(frame)
            with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed):
                await raw.receive()
        assert await bystander.command(Ping()) == Pong()

    assert tally.answered >= MIN_FUZZ_FRAMES, (tally, sum(len(b) for b in batches))
    # the mix reached every way of refusing a transmission
    assert seen >= GARBAGE_ERRORS, seen
    assert not errors.records, [r.getMessage() for r in errors.records]

    # Nothing stored, nothing changed: same counts and same rows in every table.
    assert server.store.stats() == {"queues": 0, "messages": 0}
    after = table_contents(db_path)
    assert row_counts(after) == row_counts(before)
    assert after == before

    # Still serving: a fresh session pings, and a normal NEW/SEND/GET/ACK cycle works.
    raw = await RawSession.open(nursery, server.address)
    assert await raw.command(Ping()) == Pong()
    owner = QueueOwner()
    ids = await raw.command(owner.new(), key=owner.auth)
    assert isinstance(ids, Ids)
    owner.ids = ids
    assert await raw.command(Send(0, b"after the storm"), ids.snd_id) == Ok()
    message = await raw.command(Get(), ids.rcv_id, owner.auth)
    assert isinstance(message, Msg) and owner.open(message).body == b"after the storm"
    assert await raw.command(Ack(message.msg_id), ids.rcv_id, owner.auth) == Ok()
    assert server.store.stats() == {"queues": 1, "messages": 0}


# ---------------------------------------------------------------------- 2. authorisation


@dataclass
class AuthCase:
    """A signed command, who must sign it, and what the server answers without a signature."""

    name: str
    command: Command
    entity_id: bytes
    signer: crypto.SigningKey
    other_party: crypto.SigningKey  # a key the server knows, but not for this command
    missing: ErrorCode
    accepted: Callable[[Reply], bool]  # the reply to the correctly signed command
    changes_store: bool = True
    pushes: int = 0  # pushes that follow the accepted reply


def wrongly_signed(
    raw: RawSession, other: RawSession, case: AuthCase
) -> list[tuple[str, bytes, ErrorCode]]:
    """The command unsigned and with every kind of wrong signature, as frames for `raw`."""
    body, entity = encode(case.command), case.entity_id

    def frame(signature: bytes, corr_id: bytes | None = None) -> bytes:
        return encode_transmission(corr_id or raw.corr_id(), entity, body, signature)

    def signature(key: crypto.SigningKey, corr_id: bytes, session_id: bytes) -> bytes:
        return key.sign(signed_payload(session_id, corr_id, entity, body))

    corr = [raw.corr_id() for _ in range(4)]
    good = signature(case.signer, corr[0], raw.session_id)
    return [
        ("missing", frame(b""), case.missing),
        (
            "stranger",
            frame(signature(crypto.SigningKey.generate(), corr[1], raw.session_id), corr[1]),
            ErrorCode.AUTH,
        ),
        (
            "other party",
            frame(signature(case.other_party, corr[2], raw.session_id), corr[2]),
            ErrorCode.AUTH,
        ),
        ("bit flipped", frame(good[:-1] + bytes([good[-1] ^ 0x01]), corr[0]), ErrorCode.AUTH),
        ("first bit flipped", frame(bytes([good[0] ^ 0x80]) + good[1:], corr[0]), ErrorCode.AUTH),
        ("zeros", frame(bytes(SIGNATURE_SIZE)), ErrorCode.AUTH),
        ("over another corr id", frame(good, corr[3]), ErrorCode.AUTH),
        (
            "over another session",
            frame(signature(case.signer, corr[3], other.session_id), corr[3]),
            ErrorCode.AUTH,
        ),
    ]


async def test_missing_or_wrong_signatures_are_refused_and_change_nothing(
    start_server: Callable[..., QueueServer], tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = start_server("auth")
    db_path = tmp_path / "auth.db"
    raw = await RawSession.open(nursery, server.address)
    other = await RawSession.open(nursery, server.address)

    async def create(owner: QueueOwner) -> QueueOwner:
        ids = await raw.command(owner.new(), key=owner.auth)
        assert isinstance(ids, Ids)
        owner.ids = ids
        return owner

    messaging = await create(QueueOwner())  # SUB GET ACK KEY OFF DEL
    unsecured = await create(QueueOwner())  # SKEY
    secured = await create(QueueOwner())  # SEND
    contact = await create(QueueOwner(mode=QueueMode.CONTACT))  # LSET LDEL
    sender = crypto.SigningKey.generate()
    assert await raw.command(Key(sender.public), secured.rcv_id, secured.auth) == Ok()
    assert (
        await raw.command(LSet(crypto.random_bytes(ID_SIZE), b"v1"), contact.rcv_id, contact.auth)
        == Ok()
    )
    for owner, key in ((messaging, None), (secured, sender), (contact, None)):
        for body in (b"first", b"second"):
            assert await raw.command(Send(0, body), owner.snd_id, key) == Ok()
    delivered = await raw.command(Get(), messaging.rcv_id, messaging.auth)
    assert isinstance(delivered, Msg)  # so that an ACK would delete something
    newcomer, new_sender = QueueOwner(), crypto.SigningKey.generate()

    def is_msg(reply: Reply) -> bool:
        return isinstance(reply, Msg)

    def is_ok(reply: Reply) -> bool:
        return reply == Ok()

    rcv, no_auth = messaging.rcv_id, ErrorCode.CMD_NO_AUTH
    cases = [
        AuthCase(
            "NEW",
            newcomer.new(),
            b"",
            newcomer.auth,
            secured.auth,
            no_auth,
            lambda r: isinstance(r, Ids),
        ),
        AuthCase(
            "LSET",
            LSet(crypto.random_bytes(ID_SIZE), b"v2"),
            contact.rcv_id,
            contact.auth,
            messaging.auth,
            no_auth,
            is_ok,
        ),
        AuthCase("LDEL", LDel(), contact.rcv_id, contact.auth, messaging.auth, no_auth, is_ok),
        AuthCase(
            "SKEY",
            SKey(new_sender.public),
            unsecured.snd_id,
            new_sender,
            unsecured.auth,
            no_auth,
            is_ok,
        ),
        AuthCase(
            "SEND", Send(0, b"third"), secured.snd_id, sender, secured.auth, ErrorCode.AUTH, is_ok
        ),
        AuthCase("SUB", Sub(), rcv, messaging.auth, sender, no_auth, is_ok, False, pushes=1),
        AuthCase("GET", Get(), rcv, messaging.auth, sender, no_auth, is_msg, False),
        AuthCase("ACK", Ack(delivered.msg_id), rcv, messaging.auth, sender, no_auth, is_msg),
        AuthCase("KEY", Key(new_sender.public), rcv, messaging.auth, sender, no_auth, is_ok),
        AuthCase("OFF", Off(), rcv, messaging.auth, sender, no_auth, is_ok),
        AuthCase("DEL", Del(), rcv, messaging.auth, sender, no_auth, is_ok),
    ]
    for case in cases:
        before = table_contents(db_path)
        subscribers = server.broker.subscriber_count()
        for label, frame, code in wrongly_signed(raw, other, case):
            assert await raw.exchange(frame) == Err(code), (case.name, label)
        assert table_contents(db_path) == before, case.name
        assert server.broker.subscriber_count() == subscribers, case.name
        # The same command correctly signed is accepted: the refusals were about the signature.
        reply = await raw.command(case.command, case.entity_id, case.signer)
        assert case.accepted(reply), (case.name, reply)
        for _ in range(case.pushes):
            transmission, push = await raw.receive()
            assert isinstance(push, Msg) and not transmission.corr_id, (case.name, push)
        assert (table_contents(db_path) != before) == case.changes_store, case.name
    assert server.broker.subscriber_count() == 0  # DEL ended the subscription SUB made
    assert server.store.queue_by_rcv_id(messaging.rcv_id) is None


async def test_signatures_under_small_order_keys_are_refused(
    start_server: Callable[..., QueueServer], tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A key of small order lets anyone "sign" without a private key: such keys must not
    register a queue (NEW) nor secure one (SKEY, KEY)."""
    server = start_server("weak")
    raw = await RawSession.open(nursery, server.address)
    refusals = (Err(ErrorCode.AUTH), Err(ErrorCode.CMD_SYNTAX))

    forged_new = encode(New(IDENTITY_POINT, crypto.DhKey.generate().public))
    reply = await raw.exchange(
        encode_transmission(raw.corr_id(), b"", forged_new, IDENTITY_FORGERY)
    )
    assert reply in refusals, f"NEW under the identity point, signed by nobody: {reply}"
    for _ in range(12):  # the zero key and zero signature verify one message in four
        zero_new = encode(New(bytes(KEY_SIZE), crypto.DhKey.generate().public))
        reply = await raw.exchange(encode_transmission(raw.corr_id(), b"", zero_new, bytes(64)))
        assert reply in refusals, f"NEW under the all-zero key, all-zero signature: {reply}"
    assert server.store.stats()["queues"] == 0

    victim = QueueOwner()
    ids = await raw.command(victim.new(), key=victim.auth)
    assert isinstance(ids, Ids)
    forged_skey = encode(SKey(IDENTITY_POINT))
    reply = await raw.exchange(
        encode_transmission(raw.corr_id(), ids.snd_id, forged_skey, IDENTITY_FORGERY)
    )
    assert reply in refusals, f"SKEY of the identity point, signed by nobody: {reply}"
    # nor may the recipient make its queue writable by anyone with such a sender key
    for weak in SMALL_ORDER_KEYS:
        reply = await raw.command(Key(weak), ids.rcv_id, victim.auth)
        assert reply in refusals, f"KEY of a small-order key {weak.hex()}: {reply}"
    record = server.store.queue_by_rcv_id(ids.rcv_id)
    assert record is not None and record.snd_auth_key is None


async def test_a_session_that_keeps_failing_auth_is_closed(
    start_server: Callable[..., QueueServer], nursery: trio.Nursery
) -> None:
    """`auth_failures` AUTH refusals within `auth_failure_window` seconds (a session probing
    for queues or keys) close the session after their replies. Nothing in between resets the
    count — not a PING, not a command that passes, not garbage (which is answered and not
    counted) — and failures older than the window no longer count. Other sessions are not
    touched."""
    now = [1_000_000.0]
    server = start_server("probe", config=ServerConfig(), clock=lambda: now[0])
    limit, window = server.config.auth_failures, server.config.auth_failure_window
    assert (limit, window) == (100, 60.0)  # the documented defaults
    raw = await RawSession.open(nursery, server.address)
    bystander = await RawSession.open(nursery, server.address)
    owner = QueueOwner()
    ids = await raw.command(owner.new(), key=owner.auth)
    assert isinstance(ids, Ids)
    owner.ids = ids
    stranger = crypto.SigningKey.generate()
    probes = [
        lambda: raw.frame(Sub(), owner.rcv_id, stranger),  # a known queue, the wrong key
        lambda: raw.frame(Get(), os.urandom(ID_SIZE), owner.auth),  # an unknown queue
        lambda: raw.frame(Send(0, b"x"), os.urandom(ID_SIZE), stranger),  # an unknown sender id
    ]
    garbage = encode_transmission(b"c-garbage", b"", b"\xc1\xc1")

    async def pipelined(frames: list[bytes]) -> list[Reply]:
        for frame in frames:
            await raw.send_raw(frame)
        return [(await raw.receive())[1] for _ in frames]

    def refused(count: int) -> list[bytes]:
        return [probes[i % len(probes)]() for i in range(count)]

    # Half the limit, then a minute passes: those no longer count.
    assert await pipelined(refused(limit // 2)) == [Err(ErrorCode.AUTH)] * (limit // 2)
    now[0] += window + 1
    # One short of the limit, with a PING, a command that passes and garbage in between
    # (the bypass: a PING between failures used to start the count again).
    frames = refused(limit - 1)
    for at, frame in ((10, raw.frame(Ping())), (50, raw.frame(Sub(), owner.rcv_id, owner.auth))):
        frames.insert(at, frame)
    frames.insert(70, garbage)
    replies = await pipelined(frames)
    assert replies.pop(70) == Err(ErrorCode.CMD_SYNTAX)
    assert replies.pop(50) == Ok()
    assert replies.pop(10) == Pong()
    assert replies == [Err(ErrorCode.AUTH)] * (limit - 1)
    assert await raw.command(Ping()) == Pong()  # still serving, one failure from the limit
    assert await bystander.command(Ping()) == Pong()
    # The limit-th failure within the window is answered, then the server closes the session.
    assert await raw.exchange(refused(1)[0]) == Err(ErrorCode.AUTH)
    with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed):
        unexpected = await raw.ws.get_message()
        pytest.fail(f"the session stayed open and sent {unexpected!r}")
    # Only that session: the other one and the queue are still there.
    assert await bystander.command(Ping()) == Pong()
    fresh = await RawSession.open(nursery, server.address)
    assert await fresh.command(Sub(), owner.rcv_id, owner.auth) == Ok()


# ---------------------------------------------------------------------- 3. nothing in clear at rest


async def test_no_plaintext_of_any_message_in_the_database_files(
    start_server: Callable[..., QueueServer], open_client, tmp_path: Path
) -> None:
    server = start_server("plain")
    db_path = tmp_path / "plain.db"
    client, _ = open_client(server)
    needles: list[bytes] = []

    def body(i: int, size: int = 0) -> bytes:
        marker = os.urandom(32)
        phrase = b"PLAINTEXT %02d: meet me by the old mill at dawn, bring the key" % i
        needles.extend((marker, marker.hex().encode(), phrase))
        text = phrase + marker + phrase
        return (text * (size // len(text) + 1))[:size] if size else text

    async def create(owner: QueueOwner) -> QueueOwner:
        await owner.create(client)
        return owner

    # read and acknowledged: deleted from the store
    acked = await create(QueueOwner())
    acked_bodies = [body(i) for i in range(3)]
    for b in acked_bodies:
        assert await client.request(Send(0, b), entity_id=acked.snd_id) == Ok()
    for b in acked_bodies:
        message = await client.request(Get(), entity_id=acked.rcv_id, key=acked.auth)
        assert isinstance(message, Msg) and acked.open(message).body == b
        assert (
            await client.request(Ack(message.msg_id), entity_id=acked.rcv_id, key=acked.auth)
            == Ok()
        )
    # never read, one of them as big as a body can be
    waiting = await create(QueueOwner())
    waiting_bodies = [body(10), body(11), body(12, size=MAX_BODY), body(13)]
    for b in waiting_bodies:
        assert await client.request(Send(0, b), entity_id=waiting.snd_id) == Ok()
    # secured, signed SENDs, the first delivered and not acknowledged
    secured = await create(QueueOwner())
    sender = crypto.SigningKey.generate()
    assert (
        await client.request(Key(sender.public), entity_id=secured.rcv_id, key=secured.auth) == Ok()
    )
    secured_bodies = [body(20), body(21)]
    for b in secured_bodies:
        assert await client.request(Send(0, b), entity_id=secured.snd_id, key=sender) == Ok()
    assert isinstance(await client.request(Get(), entity_id=secured.rcv_id, key=secured.auth), Msg)
    # a contact queue with knocks and link data the client encrypted itself
    contact = await create(QueueOwner(mode=QueueMode.CONTACT))
    contact_bodies = [body(30), body(31)]
    for b in contact_bodies:
        assert await client.request(Send(0, b), entity_id=contact.snd_id) == Ok()
    link_key, link_marker = os.urandom(32), os.urandom(32)
    link_plain = b"LINK DATA PLAINTEXT: the group is called Night Owls " + link_marker
    needles.extend((link_marker, link_marker.hex().encode(), b"LINK DATA PLAINTEXT"))
    link_data = crypto.seal(link_key, link_plain)
    link_id = crypto.random_bytes(ID_SIZE)
    assert (
        await client.request(LSet(link_id, link_data), entity_id=contact.rcv_id, key=contact.auth)
        == Ok()
    )

    # Every write above was answered, so it is committed: the bytes are in the files now.
    files = {
        path.name: path.read_bytes()
        for path in (
            db_path,
            db_path.with_name(db_path.name + "-wal"),
            db_path.with_name(db_path.name + "-shm"),
        )
        if path.exists()
    }
    assert {"plain.db", "plain.db-wal"} <= set(files), sorted(files)
    for name, data in files.items():
        for needle in needles:
            assert needle not in data, (name, needle)
    contents = table_contents(db_path)
    for table, rows in contents.items():
        for row in rows:
            for value in row:
                data = value.encode() if isinstance(value, str) else value
                if isinstance(data, bytes):
                    for needle in needles:
                        assert needle not in data, (table, needle)

    # Not vacuous: the bodies are there, encrypted, and open with the recipients' keys; the
    # files scanned hold those very ciphertexts.
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        stored = conn.execute(
            "SELECT rcv_id, msg_id, enc_body FROM server_message ORDER BY seq"
        ).fetchall()
        (stored_link,) = conn.execute(
            "SELECT link_data FROM server_queue WHERE rcv_id = ?", (contact.rcv_id,)
        ).fetchone()
    everything = b"".join(files.values())
    for owner, bodies in (
        (acked, []),
        (waiting, waiting_bodies),
        (secured, secured_bodies),
        (contact, contact_bodies),
    ):
        rows = [(msg_id, enc) for rcv_id, msg_id, enc in stored if rcv_id == owner.rcv_id]
        assert [owner.open(Msg(msg_id, enc)).body for msg_id, enc in rows] == bodies
        for msg_id, enc in rows:
            if len(enc) < 1024:  # small enough to sit in one page, in one piece
                assert enc in everything, msg_id
    assert stored_link == link_data and link_data in everything
    assert crypto.open_sealed(link_key, stored_link) == link_plain


# ---------------------------------------------------------------------- 4. kill -9


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    address: ServerAddress


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[Callable[[Path], Any]]:
    """Start `duplex server` processes; every one still running is killed after the test."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    async def spawn(db_path: Path) -> ServerProcess:
        log_path = tmp_path / f"server-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "actors.cli",
                    "server",
                    "--db",
                    f"sqlite:///{db_path}",
                    "--port",
                    "0",
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
            )
        started.append((process, log_path))
        assert process.stdout is not None
        with trio.fail_after(30):
            line = await trio.to_thread.run_sync(process.stdout.readline, abandon_on_cancel=True)
        if not line:
            pytest.fail(f"duplex server exited with {process.wait()}: {log_path.read_text()}")
        return ServerProcess(process, ServerAddress.parse(line.decode()))

    yield spawn
    for process, _ in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


async def test_kill_9_keeps_certificate_queues_and_every_acknowledged_message(
    spawn_server, open_client, tmp_path: Path
) -> None:
    db_path = tmp_path / "s.db"
    first = await spawn_server(db_path)
    client, inbox = open_client(first)

    backlog = QueueOwner()
    await backlog.create(client)
    backlog_bodies = [b"backlog %02d" % i for i in range(20)]
    for b in backlog_bodies:
        assert await client.request(Send(0, b), entity_id=backlog.snd_id) == Ok()  # committed

    secured = QueueOwner()
    await secured.create(client)
    sender = crypto.SigningKey.generate()
    assert (
        await client.request(Key(sender.public), entity_id=secured.rcv_id, key=secured.auth) == Ok()
    )
    assert await client.request(Send(0, b"secured"), entity_id=secured.snd_id, key=sender) == Ok()

    contact = QueueOwner(mode=QueueMode.CONTACT)
    await contact.create(client)
    link_id = crypto.random_bytes(ID_SIZE)
    assert (
        await client.request(
            LSet(link_id, b"sealed link"), entity_id=contact.rcv_id, key=contact.auth
        )
        == Ok()
    )

    subscribed = QueueOwner()
    await subscribed.create(client, subscribe=True)
    for b in (b"acked", b"unacked", b"waiting"):
        assert await client.request(Send(0, b), entity_id=subscribed.snd_id) == Ok()
    _, first_message = await inbox.next()
    assert isinstance(first_message, Msg) and subscribed.open(first_message).body == b"acked"
    unacked = await client.request(
        Ack(first_message.msg_id), entity_id=subscribed.rcv_id, key=subscribed.auth
    )
    assert isinstance(unacked, Msg) and subscribed.open(unacked).body == b"unacked"

    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(10) == -signal.SIGKILL
    await client.aclose()

    second = await spawn_server(db_path)
    assert second.address.fingerprint == first.address.fingerprint  # the certificate was kept
    client, inbox = open_client(second)

    # the unacknowledged delivery comes again, then the rest; the acknowledged one never
    await client.subscribe(subscribed.rcv_id, subscribed.auth)
    _, again = await inbox.next()
    assert isinstance(again, Msg) and again.msg_id == unacked.msg_id
    assert subscribed.open(again).body == b"unacked"
    following = await client.request(
        Ack(again.msg_id), entity_id=subscribed.rcv_id, key=subscribed.auth
    )
    assert isinstance(following, Msg) and subscribed.open(following).body == b"waiting"
    assert (
        await client.request(
            Ack(following.msg_id), entity_id=subscribed.rcv_id, key=subscribed.auth
        )
        == Ok()
    )

    # every acknowledged SEND is there, in order, and a new one goes after them
    assert await client.request(Send(0, b"after the restart"), entity_id=backlog.snd_id) == Ok()
    received = []
    while True:
        message = await client.request(Get(), entity_id=backlog.rcv_id, key=backlog.auth)
        if message == Ok():
            break
        assert isinstance(message, Msg)
        received.append(backlog.open(message).body)
        assert (
            await client.request(Ack(message.msg_id), entity_id=backlog.rcv_id, key=backlog.auth)
            == Ok()
        )
    assert received == [*backlog_bodies, b"after the restart"]

    # the sender key and the link data survived too
    with pytest.raises(ServerError) as refused:
        await client.request(Send(0, b"unsigned"), entity_id=secured.snd_id)
    assert refused.value.code == "AUTH"
    message = await client.request(Get(), entity_id=secured.rcv_id, key=secured.auth)
    assert isinstance(message, Msg) and secured.open(message).body == b"secured"
    assert await client.request(LGet(link_id)) == Lnk(contact.snd_id, b"sealed link")
