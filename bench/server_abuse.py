"""The queue server under attack: memory, existence oracle, limits, and a legitimate client.

What it measures (its row in the README's Performance table). Three processes
on loopback: the queue server (`bench._queue_server`: TLS, SQLite, default `ServerConfig`),
a legitimate client (`bench._legit_client`: SEND→GET→ACK on its own queue every 20 ms, timed),
and this process, which attacks. Phases, one after the other:

1. **idle** — the baseline: the server's RSS and the legitimate client's p99 with no attack.
2. **non-readers** — `NON_READERS` (40) sessions each subscribe to a queue holding a 16 KiB
   message, pipeline `GETS` GETs of it in one write, and never read a byte. Figures: the
   server's peak RSS above idle (target ≤ 64 MiB), how many of them the server dropped
   and how long that took (a client that does not read for `send_timeout` is reset).
3. **oracle** — refusal times of GET signed with a wrong key, for a queue that exists (and
   is in use) and for ids that do not (a fresh random one each time), interleaved in a
   random order, ≥ 400 each, one at a time over fresh sessions (a prober gets 100 AUTH
   refusals per session per minute before the server closes it). Figures: both medians and
   the Mann-Whitney z of the two samples (target |z| < 4: the server does not tell them
   apart).
4. **queue flood** — one session sends NEW (pipelined, 64 at a time) until refused; figure:
   the queues it got (bounded by `new_queues` per window).

Throughout, the legitimate client's p99 per phase (target < 500 ms), as a ratio to idle too.

Run: ``python -m bench.server_abuse [--quick] [--json]``; ``--quick`` shrinks the counts.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from bench._report import Report, machine, note, parse_args, stopwatch
from bench.server import CHILD_START_TIMEOUT, ServerChild, _read_line, _stop, queue_server
from protocol import crypto
from protocol.address import ServerAddress
from protocol.queue import (
    MAX_BODY,
    PROTOCOL_VERSION,
    ClientHello,
    Get,
    Ids,
    New,
    QueueMode,
    Send,
    Sub,
    decode_server_frame,
    decode_server_hello,
    encode,
    encode_transmission,
    signed_payload,
)
from protocol.server.limits import DEFAULT_AUTH_FAILURES, DEFAULT_NEW_QUEUES
from protocol.transport import encode_frames

HOST = "127.0.0.1"
RSS_TARGET_MIB = 64
Z_TARGET = 4.0
P99_TARGET_S = 0.5


@dataclass(frozen=True, slots=True)
class Sizes:
    non_readers: int
    gets: int  # GETs each non-reader pipelines
    probes: int  # refusal-time samples of each kind
    idle_seconds: float


FULL = Sizes(non_readers=40, gets=3000, probes=500, idle_seconds=3.0)
QUICK = Sizes(non_readers=10, gets=1000, probes=120, idle_seconds=1.0)


# ---------------------------------------------------------------------------- children


class Legit:
    """The `bench._legit_client` child."""

    def __init__(self, address: str) -> None:
        self.child = subprocess.Popen(
            [sys.executable, "-m", "bench._legit_client", address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._buffer = bytearray()
        json.loads(_read_line(self.child, self._buffer, "the legit client", CHILD_START_TIMEOUT))

    def report(self) -> dict[str, float]:
        assert self.child.stdin is not None
        os.write(self.child.stdin.fileno(), b"report\n")
        return json.loads(_read_line(self.child, self._buffer, "the legit client", 60))


@contextmanager
def legit_client(address: str) -> Iterator[Legit]:
    legit = Legit(address)
    try:
        yield legit
    finally:
        _stop(legit.child, terminate=False)


def _rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


# ---------------------------------------------------------------------------- sessions


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the bench talks to its own server only
    return context


class Codec:
    """Frames signed for one session."""

    def __init__(self, session_id: bytes) -> None:
        self.session_id = session_id
        self._corr = 0

    def frame(self, command: Any, entity: bytes = b"", key: crypto.SigningKey | None = None):
        self._corr += 1
        corr = self._corr.to_bytes(4, "big")
        body = encode(command)
        signature = key.sign(signed_payload(self.session_id, corr, entity, body)) if key else b""
        return encode_transmission(corr, entity, body, signature)


async def non_reader(address: ServerAddress) -> tuple[trio.SSLStream, Codec]:
    """A session that reads the hello and never reads again (the handshake done by hand)."""
    tcp = await trio.open_tcp_stream(address.host, address.port)
    stream = trio.SSLStream(tcp, _context(), server_hostname=address.host)
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        b"GET / HTTP/1.1\r\nHost: queue\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
        data = data.partition(b"\r\n\r\n")[2]
        while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
            data += await stream.receive_some()
    hello = decode_server_hello(data[2 : 2 + data[1]])
    await stream.send_all(encode_frames([encode(ClientHello(PROTOCOL_VERSION))], mask=True))
    return stream, Codec(hello.session_id)


class Session:
    """A reading session (trio-websocket), strict request/response."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, codec: Codec) -> None:
        self.ws, self.codec = ws, codec

    @classmethod
    async def open(cls, nursery: trio.Nursery, address: ServerAddress) -> Session:
        tcp = await trio.open_tcp_stream(address.host, address.port)
        stream = trio.SSLStream(tcp, _context(), server_hostname=address.host)
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, address.host, "/", max_message_size=1 << 20
        )
        hello = decode_server_hello(await ws.get_message())
        await ws.send_message(encode(ClientHello(PROTOCOL_VERSION)))
        return cls(ws, Codec(hello.session_id))

    async def exchange(self, frame: bytes) -> Any:
        await self.ws.send_message(frame)
        return decode_server_frame(await self.ws.get_message())[1]


@dataclass(slots=True)
class Owned:
    rcv_id: bytes
    snd_id: bytes
    auth: crypto.SigningKey


async def create_queue(session: Session) -> Owned:
    auth, dh = crypto.SigningKey.generate(), crypto.DhKey.generate()
    ids = await session.exchange(session.codec.frame(New(auth.public, dh.public), key=auth))
    assert isinstance(ids, Ids), ids
    return Owned(ids.rcv_id, ids.snd_id, auth)


# ---------------------------------------------------------------------------- statistics


def mann_whitney_z(a: list[float], b: list[float]) -> float:
    """The normal approximation of the Mann-Whitney U statistic (ties averaged)."""
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(pooled)
    i = 0
    ties = 0.0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    n1, n2 = len(a), len(b)
    r1 = sum(rank for rank, (_, group) in zip(ranks, pooled, strict=True) if group == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    return (u1 - n1 * n2 / 2) / sigma if sigma else 0.0


# ---------------------------------------------------------------------------- phases


async def phase_non_readers(
    address: ServerAddress, server: ServerChild, sizes: Sizes, victim: Owned
) -> dict[str, float]:
    """40 sessions that never read; returns peak RSS growth and how they ended."""
    baseline_sessions = server.stats()["sessions"]
    rss_before = _rss_mib(server.pid)
    peak = rss_before
    streams = []
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(sizes.non_readers):
            stream, codec = await non_reader(address)
            streams.append(stream)
            frames = [codec.frame(Sub(), victim.rcv_id, victim.auth)]
            frames += [codec.frame(Get(), victim.rcv_id, victim.auth)] * sizes.gets
            blob = encode_frames(frames, mask=True)

            async def blast(stream: trio.SSLStream = stream, blob: bytes = blob) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(blob)
                await trio.sleep_forever()  # and never read

            nursery.start_soon(blast)
        dropped_at = None
        with trio.move_on_after(90):
            while True:
                await trio.sleep(0.1)
                peak = max(peak, _rss_mib(server.pid))
                sessions = await trio.to_thread.run_sync(server.stats)
                if sessions["sessions"] <= baseline_sessions:
                    dropped_at = time.monotonic() - started
                    break
        remaining = server.stats()["sessions"] - baseline_sessions
        nursery.cancel_scope.cancel()
    for stream in streams:
        with contextlib.suppress(Exception):
            await trio.aclose_forcefully(stream)
    return {
        "rss_before_mb": rss_before,
        "rss_peak_mb": peak,
        "rss_growth_mb": peak - rss_before,
        "dropped": sizes.non_readers - remaining,
        "seconds_to_drop_all": dropped_at if dropped_at is not None else float("nan"),
    }


async def phase_oracle(address: ServerAddress, sizes: Sizes, known: Owned) -> dict[str, float]:
    """Refusal times, known queue with a wrong key vs unknown ids, interleaved."""
    kinds = ["known", "unknown"] * sizes.probes
    random.Random(12).shuffle(kinds)
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    wrong = crypto.SigningKey.generate()
    per_session = DEFAULT_AUTH_FAILURES - 2  # stay under the probe limit, then reconnect
    async with trio.open_nursery() as nursery:
        session: Session | None = None
        used = 0
        for kind in kinds:
            if session is None or used == per_session:
                if session is not None:
                    await session.ws.aclose()
                session, used = await Session.open(nursery, address), 0
                for _ in range(3):  # warm the session up (first frames cost more)
                    await session.exchange(session.codec.frame(Get(), os.urandom(24), wrong))
                    await session.exchange(session.codec.frame(Get(), known.rcv_id, wrong))
                used += 6
            entity = known.rcv_id if kind == "known" else os.urandom(24)
            frame = session.codec.frame(Get(), entity, wrong)
            started = time.perf_counter()
            await session.exchange(frame)
            times[kind].append(time.perf_counter() - started)
            used += 1
        nursery.cancel_scope.cancel()
    known_t, unknown_t = times["known"], times["unknown"]
    return {
        "samples_each": len(known_t),
        "known_p50_us": sorted(known_t)[len(known_t) // 2] * 1e6,
        "unknown_p50_us": sorted(unknown_t)[len(unknown_t) // 2] * 1e6,
        "z": mann_whitney_z(known_t, unknown_t),
    }


async def phase_queue_flood(address: ServerAddress) -> dict[str, float]:
    """One session creates queues, 64 in flight, until the server refuses."""
    accepted = 0
    refused_with = ""
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        session = await Session.open(nursery, address)
        window = 64
        in_flight = 0
        keys = (crypto.SigningKey.generate() for _ in range(10**9))
        dh = crypto.DhKey.generate().public

        def frame() -> bytes:
            key = next(keys)
            return session.codec.frame(New(key.public, dh, QueueMode.MESSAGING), key=key)

        for _ in range(window):
            await session.ws.send_message(frame())
            in_flight += 1
        while in_flight:
            reply = decode_server_frame(await session.ws.get_message())[1]
            in_flight -= 1
            if isinstance(reply, Ids):
                accepted += 1
                if not refused_with:
                    await session.ws.send_message(frame())
                    in_flight += 1
            else:
                code = getattr(reply, "code", None)
                refused_with = refused_with or (code.value if code is not None else repr(reply))
        nursery.cancel_scope.cancel()
    return {
        "accepted": accepted,
        "seconds": time.monotonic() - started,
        "refused_with": refused_with,
    }


async def attack(
    server: ServerChild, legit: Legit, sizes: Sizes, report: Report, *, show: bool
) -> None:
    address = ServerAddress.parse(server.address)
    async with trio.open_nursery() as nursery:
        setup = await Session.open(nursery, address)
        victim = await create_queue(setup)
        body = Send(0, os.urandom(MAX_BODY))
        await setup.exchange(setup.codec.frame(body, victim.snd_id))
        known = await create_queue(setup)
        nursery.cancel_scope.cancel()

    def legit_phase(name: str) -> dict[str, float]:
        figures = legit.report()
        report.add(f"legit_p99_ms_{name}", figures["p99"] * 1000, "ms")
        report.add(f"legit_cycles_{name}", figures["count"])
        report.add(f"legit_errors_{name}", figures["errors"])
        return figures

    legit.report()  # start clean
    await trio.sleep(sizes.idle_seconds)
    idle_rss = _rss_mib(server.pid)
    idle = legit_phase("idle")
    report.add("rss_idle_mb", idle_rss, "MiB")
    note("phase: non-reading sessions", show)
    readers = await phase_non_readers(address, server, sizes, victim)
    during = legit_phase("non_readers")
    report.add("non_readers", sizes.non_readers)
    report.add("non_reader_gets_each", sizes.gets)
    report.add("rss_peak_mb", readers["rss_peak_mb"], "MiB")
    report.add("rss_growth_mb", readers["rss_growth_mb"], "MiB")
    report.add("non_readers_dropped", readers["dropped"])
    report.add("seconds_to_drop_all", readers["seconds_to_drop_all"], "s")
    note("phase: refusal times", show)
    oracle = await phase_oracle(address, sizes, known)
    probing = legit_phase("oracle")
    report.add("refusal_samples_each", oracle["samples_each"])
    report.add("refusal_known_p50_us", oracle["known_p50_us"], "us")
    report.add("refusal_unknown_p50_us", oracle["unknown_p50_us"], "us")
    report.add("refusal_z", oracle["z"])
    note("phase: queue flood", show)
    flood = await phase_queue_flood(address)
    flooding = legit_phase("queue_flood")
    report.add("queues_accepted_per_session", flood["accepted"])
    report.add("queue_limit_per_session", DEFAULT_NEW_QUEUES)
    report.add("queue_flood_refused_with", flood["refused_with"])
    report.add("queue_flood_seconds", flood["seconds"], "s")
    worst = max(during["p99"], probing["p99"], flooding["p99"])
    report.add("legit_p99_ms_worst", worst * 1000, "ms")
    report.add("legit_p99_ratio_to_idle", worst / idle["p99"] if idle["p99"] else float("nan"))
    report.add("target_rss_growth_le_64mib", readers["rss_growth_mb"] <= RSS_TARGET_MIB)
    report.add("target_all_non_readers_dropped", readers["dropped"] == sizes.non_readers)
    report.add("target_refusal_z_lt_4", abs(oracle["z"]) < Z_TARGET)
    report.add("target_queues_bounded", flood["accepted"] <= DEFAULT_NEW_QUEUES)
    report.add("target_legit_p99_lt_500ms", worst < P99_TARGET_S)


def main(argv: list[str] | None = None) -> int:
    args = parse_args("server_abuse", __doc__, argv)
    sizes = QUICK if args.quick else FULL
    report = Report("server_abuse")
    note(f"bench.server_abuse on {machine()}", not args.json)
    total = stopwatch()
    with tempfile.TemporaryDirectory(prefix="duplex-abuse-") as tmp, ExitStack() as children:
        server = children.enter_context(queue_server(Path(tmp)))
        legit = children.enter_context(legit_client(server.address))
        trio.run(functools.partial(attack, server, legit, sizes, report, show=not args.json))
    report.add("total_seconds", total(), "s")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
