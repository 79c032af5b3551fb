"""Connections/s from create to CON on both sides, against the raw queue-protocol round trips
a handshake needs, measured in the same run.

What it measures (its row in the README's Performance table; protocol/envelope.py). The
queue server runs as in production in its own process (``python -m actors.cli server``);
alice and bob are two `Client`s in this process, each on its own SQLite file:

- **agent**: M invitation handshakes at once, all async: alice issues M
  `create_connection_async`; her event thread joins bob to each INV
  (`join_connection_async`), allows each CONF (`allow_connection_async`) and acknowledges
  her completions (`ack_command_event`); bob's acknowledges his JOINED. **connections/s = M
  / (time both sides saw CON for all M - time before the first create)**. Also the time of
  one handshake alone (``one_handshake_ms``, median), and the CPU µs per connection of this
  process and of the server process;
- **baseline, in the same run**: the queue-protocol work of the same M handshakes without
  the agent, pipelined over M at once through one `protocol.client.QueueClient` session in
  this process (TLS, pinned, every command signed as the agent signs it): per handshake
  NEW (alice's queue, subscribed) → SKEY (bob secures it) → NEW (bob's reply queue) → SEND
  (the confirmation, `MESSAGE_BYTES`) → the MSG push → ACK → SKEY (alice secures bob's
  queue) → SEND (alice's info) → the MSG push → ACK: the 6 commands of the handshake plus
  the 2 ACKs with which the recipients take its messages, each step after the previous one.
  ``ratio_to_raw`` = agent connections/s / raw handshakes/s: the share of the protocol's
  pace the agent keeps (its storage, keys, e2e sealing, actors and events on top);
- **SQL per connection on each side**: the statements and transactions of alice's database
  (``inviter_*``) and of bob's (``joiner_*``) over the measured agent runs, divided by their
  connections (`Database.counters`; they do not depend on the load).

Target: ``connections_per_s ≥ 40`` now, 50 next. Agent and raw runs are
interleaved `repeats` times (fresh connections each time) after an uncounted warm-up, and
the **best** repeat is reported (noise only ever slows a run down); the median is printed
next to it as ``*_median``.

The server child is stopped on every exit path and dies with this process
(``PR_SET_PDEATHSIG``).

The machine's 1-minute load average is printed at the start and at the end
(``load_average_at_*``): on a shared machine other tenants' load moves every figure.

Run: ``python -m bench.connect [--quick] [--json]``. ``--quick`` shrinks every N so that the
whole script takes a few seconds; ``--json`` prints one JSON object instead of ``name value
unit`` lines. Progress bars go to stderr.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import trio
from rich.progress import Progress

from actors.client import Client
from bench._agents import ServerProcess, connect_all, open_client
from bench._report import (
    Report,
    best,
    load_average,
    machine,
    median,
    note,
    parse_args,
    progress,
    rate,
    stopwatch,
)
from bench.limits import MESSAGE_BYTES
from protocol import crypto
from protocol.address import ServerAddress
from protocol.client import ClientConfig, QueueClient
from protocol.queue import Ack, Ids, Msg, New, Ping, QueueMode, Reply, Send, SKey

WAIT_TIMEOUT = 180.0  # a run that takes this long is broken, not slow
TARGET_PER_S = 40.0
TARGET_NEXT_PER_S = 50.0
RAW_CONFIG = ClientConfig(command_timeout=60.0, connect_timeout=30.0, ping_interval=600.0)


@dataclass(frozen=True, slots=True)
class Sizes:
    connections: int  # handshakes at once per measured run
    warm_up: int  # handshakes of the uncounted first run
    singles: int  # single handshakes timed one at a time
    repeats: int


FULL = Sizes(100, 20, 5, 5)
QUICK = Sizes(20, 5, 2, 1)


# ---------------------------------------------------------------------------- the raw baseline


class _Inbox:
    """The MSG pushes of the raw session, by receive queue id, awaitable."""

    def __init__(self) -> None:
        self.messages: dict[bytes, Msg] = {}
        self.arrived: dict[bytes, trio.Event] = {}

    def expect(self, rcv_id: bytes) -> None:
        self.arrived.setdefault(rcv_id, trio.Event())

    def push(self, rcv_id: bytes, reply: Reply) -> None:
        if isinstance(reply, Msg):
            self.messages[rcv_id] = reply
            self.expect(rcv_id)
            self.arrived[rcv_id].set()

    async def take(self, rcv_id: bytes) -> Msg:
        await self.arrived[rcv_id].wait()
        return self.messages.pop(rcv_id)


async def _raw_handshake(client: QueueClient, inbox: _Inbox, body: bytes) -> None:
    async def new_queue() -> tuple[Ids, crypto.SigningKey]:
        auth, dh = crypto.SigningKey.generate(), crypto.DhKey.generate()
        command = New(auth.public, dh.public, QueueMode.MESSAGING, subscribe=True)
        ids = await client.request(command, key=auth)
        assert isinstance(ids, Ids)
        inbox.expect(ids.rcv_id)
        return ids, auth

    async def secure_and_send(ids: Ids) -> None:
        sender = crypto.SigningKey.generate()
        await client.request(SKey(sender.public), entity_id=ids.snd_id, key=sender)
        await client.request(Send(0, body), entity_id=ids.snd_id, key=sender)

    async def take_and_ack(ids: Ids, auth: crypto.SigningKey) -> None:
        message = await inbox.take(ids.rcv_id)
        await client.request(Ack(message.msg_id), entity_id=ids.rcv_id, key=auth)

    alice_queue, alice_auth = await new_queue()
    bob_sender = crypto.SigningKey.generate()
    await client.request(SKey(bob_sender.public), entity_id=alice_queue.snd_id, key=bob_sender)
    bob_queue, bob_auth = await new_queue()
    await client.request(Send(0, body), entity_id=alice_queue.snd_id, key=bob_sender)
    await take_and_ack(alice_queue, alice_auth)
    await secure_and_send(bob_queue)
    await take_and_ack(bob_queue, bob_auth)


def raw_handshakes(address: str, count: int) -> float:
    """`count` raw handshakes at once through one session; handshakes/s."""
    body = os.urandom(MESSAGE_BYTES)
    elapsed = 0.0

    async def run() -> None:
        nonlocal elapsed
        inbox = _Inbox()
        async with trio.open_nursery() as nursery:
            client = QueueClient(
                ServerAddress.parse(address), nursery, on_push=inbox.push, config=RAW_CONFIG
            )
            await client.request(Ping())  # connected before the clock starts
            with trio.fail_after(WAIT_TIMEOUT):
                started = time.perf_counter()
                async with trio.open_nursery() as handshakes:
                    for _ in range(count):
                        handshakes.start_soon(_raw_handshake, client, inbox, body)
                elapsed = time.perf_counter() - started
            await client.aclose()
            nursery.cancel_scope.cancel()

    trio.run(run)
    return rate(count, elapsed)


# ---------------------------------------------------------------------------- measurement


@dataclass(slots=True)
class Figures:
    agent: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    sql: dict[str, list[float]] = field(default_factory=dict)  # per connection, by side
    runs: int = 0

    def tag(self) -> str:
        self.runs += 1
        return f"r{self.runs}"


def agent_handshakes(
    alice: Client, bob: Client, count: int, figures: Figures, processes: dict[str, psutil.Process]
) -> float:
    before = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
    sides = {"inviter": alice.database.counters, "joiner": bob.database.counters}
    sql_before = {side: counters.snapshot() for side, counters in sides.items()}
    handshake = connect_all(alice, bob, count, figures.tag(), WAIT_TIMEOUT)
    for name, process in processes.items():
        used = sum(process.cpu_times()[:2]) - before[name]
        figures.cpu.setdefault(name, []).append(used / count * 1e6)
    for side, counters in sides.items():
        done = counters.snapshot() - sql_before[side]
        figures.sql.setdefault(f"{side}_sql_statements_per_connection", []).append(
            done.statements / count
        )
        figures.sql.setdefault(f"{side}_sql_transactions_per_connection", []).append(
            done.transactions / count
        )
    return rate(count, handshake.seconds())


def measure(
    report: Report,
    sizes: Sizes,
    bars: Progress,
    *,
    alice: Client,
    bob: Client,
    server: ServerProcess,
) -> float:
    processes = {"bench_process": psutil.Process(), "server": psutil.Process(server.pid)}
    figures = Figures()

    task = bars.add_task("warm-up, single handshakes", total=2 + sizes.singles)
    raw_handshakes(server.address, sizes.warm_up)
    bars.advance(task)
    connect_all(alice, bob, sizes.warm_up, figures.tag(), WAIT_TIMEOUT)
    bars.advance(task)
    singles = []
    for _ in range(sizes.singles):
        singles.append(connect_all(alice, bob, 1, figures.tag(), WAIT_TIMEOUT).seconds())
        bars.advance(task)
    raw_single = statistics.median(
        1 / raw_handshakes(server.address, 1) for _ in range(sizes.singles)
    )
    bars.remove_task(task)

    task = bars.add_task(
        f"{sizes.connections} handshakes at once: raw, agent", total=2 * sizes.repeats
    )
    for _ in range(sizes.repeats):
        figures.raw.append(raw_handshakes(server.address, sizes.connections))
        bars.advance(task)
        figures.agent.append(agent_handshakes(alice, bob, sizes.connections, figures, processes))
        bars.advance(task)
    bars.remove_task(task)

    agent, raw = best(figures.agent), best(figures.raw)
    report.add("connections_at_once", sizes.connections)
    report.add("connections_per_s", agent, "conn/s")
    report.add("connections_per_s_median", median(figures.agent), "conn/s")
    report.add("raw_handshakes_per_s", raw, "handshakes/s")
    report.add("raw_handshakes_per_s_median", median(figures.raw), "handshakes/s")
    report.add("ratio_to_raw", agent / raw)
    report.add("one_handshake_ms", statistics.median(singles) * 1e3, "ms")
    report.add("raw_one_handshake_ms", raw_single * 1e3, "ms")
    for name, values in figures.cpu.items():
        report.add(f"{name}_cpu_us_per_connection", statistics.median(values), "us")
    for name, values in figures.sql.items():
        report.add(name, statistics.median(values))
    return agent


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args("connect", __doc__, argv)
    sizes = QUICK if args.quick else FULL
    report = Report("connect")
    note(f"bench.connect on {machine()}", not args.json)
    report.add("load_average_at_start", load_average())
    total = stopwatch()
    with tempfile.TemporaryDirectory(prefix="duplex-bench-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        server = stack.enter_context(ServerProcess(directory / "server.db"))
        alice = open_client(directory, "alice", [server.address])
        stack.callback(alice.close)
        bob = open_client(directory, "bob", [server.address])
        stack.callback(bob.close)
        with progress(enabled=not args.json) as bars:
            per_s = measure(report, sizes, bars, alice=alice, bob=bob, server=server)
    report.add("target_per_s", TARGET_PER_S, "conn/s")
    report.add("target_met", per_s >= TARGET_PER_S)
    report.add("target_next_per_s", TARGET_NEXT_PER_S, "conn/s")
    report.add("target_next_met", per_s >= TARGET_NEXT_PER_S)
    report.add("repeats", sizes.repeats)
    report.add("load_average_at_end", load_average())
    report.add("total_seconds", total(), "s")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
