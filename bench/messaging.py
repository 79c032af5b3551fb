"""Agent-to-agent messages/s end to end (durable, encrypted, acked), against the queue server's
SEND→MSG→ACK cycles/s measured in the same run.

What it measures (quality.md, the `bench/messaging.py` row; agent.md for the agent):

- **the queue server** runs as in production in its own process (``python -m actors.cli
  server``, TLS, SQLite in WAL, quota 128); **alice and bob** are two `Client`s in this
  process, each on its own SQLite file in a temporary directory, connected by 8 connections
  set up with the async invitation handshake before anything is timed; both run the agent's
  defaults (`bench._agents.BENCH_CONFIG`: only the timeouts are more generous);
- **throughput**: alice calls `send_message` N times (1 connection: from one thread; 8
  connections: one sending thread per connection, N/8 each); every message is stored, sealed
  end to end and delivered by alice's delivery loop; bob's event thread takes each `MSG`,
  checks its integrity and number, and acks it with `ack_message_async` (a unique corr id;
  the `OK` completion is acknowledged with `ack_command_event`, as a chat must). The server
  delivers a queue's next message only after the previous one is ACKed, so one connection
  is bounded by the ack round trip: **messages/s = N / (time bob took the N-th MSG - time
  before the first `send_message`)**, with 1 and with 8 connections;
- **latency at a fixed rate**: alice sends on one connection at 100 msg/s (a schedule, not a
  loop as fast as it can) for a few seconds; latency = time bob's event thread took the MSG
  - time just before its `send_message` call, both `perf_counter()` of this process; p50,
  p99 and max. The same at 50 msg/s first: if one connection's throughput is near or below
  100 msg/s, the 100 msg/s run measures a growing backlog, and the 50 msg/s run still shows
  the latency of the path itself;
- where the time goes: CPU µs per message of this process (alice + bob + the bench's
  threads) and of the server process, median over repeats.

**Baseline, in the same run**: `bench.server`'s measurement (`Bench.cycles`, with its sender
and recipient `bench._queue_peer` children, on the same server process): raw SEND→MSG→ACK
cycles/s through 1 queue and through 8 queues, the recipient opening each body with the
queue's server key and ACKing it, as an agent must. ``ratio_to_server_cycles`` = agent 1
connection / server 1 queue (target ≥ 0.3: both are bounded by the same ACK→next MSG round
trip, the agent adds storage, e2e encryption, the actors and the events around it);
``ratio_to_server_cycles_8`` the same with 8. ``p99_ms_at_100`` (target < 50 ms).

Baseline and agent runs are interleaved (server 1q, 8q, agent 1, 8; again) `repeats` times,
after an uncounted warm-up of each, and the **best** repeat is reported (noise only ever
slows a run down); the median is printed next to it as ``*_median``.

Every child (the queue server, the two peers) is stopped on every exit path, and dies with
this process (``PR_SET_PDEATHSIG`` for the server, end of file on stdin for the peers).

Run: ``python -m bench.messaging [--quick] [--json]``. ``--quick`` shrinks every N so that
the whole script takes a few seconds; ``--json`` prints one JSON object instead of ``name
value unit`` lines. Progress bars go to stderr.
"""

from __future__ import annotations

import statistics
import struct
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.progress import Progress

from actors.agent import events as ev
from actors.client import Client
from bench._agents import (
    EventPump,
    ServerProcess,
    connect_all,
    open_client,
    wait_until,
)
from bench._report import Report, best, machine, median, note, parse_args, progress, rate, stopwatch
from bench.limits import MESSAGE_BYTES
from bench.server import Bench, CpuMeter, Layout, peer

WAIT_TIMEOUT = 180.0  # a run that takes this long is broken, not slow
CONNECTIONS = 8
FIXED_RATE = 100.0  # msg/s of the latency run that the target is about
LOWER_RATE = 50.0  # and a run at half of it: the latency when not near saturation
TARGET_RATIO = 0.3
TARGET_P99_MS = 50.0
HEADER = struct.Struct(">II")  # run, message number: the first bytes of every body


@dataclass(frozen=True, slots=True)
class Sizes:
    messages_1: int  # messages per run over 1 connection
    messages_8: int  # messages per run over 8 connections
    warm_up: int  # uncounted messages of each warm-up run
    server_cycles: int  # SEND→MSG→ACK cycles per baseline run (each layout)
    latency_seconds: float  # length of the fixed-rate run
    repeats: int


FULL = Sizes(600, 1_200, 100, 1_500, 5.0, 2)
QUICK = Sizes(60, 120, 10, 200, 1.0, 1)


# ---------------------------------------------------------------------------- the agent side


@dataclass(slots=True)
class Run:
    """What bob saw of one run: arrival times by message number."""

    run: int
    messages: int
    arrived: list[float]
    received: int = 0
    acked: int = 0
    duplicates: int = 0
    foreign: int = 0
    bad_integrity: int = 0
    last_at: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


class Agents:
    """alice → bob over `connections`; bob's event thread acks every MSG it counts."""

    def __init__(self, alice: Client, bob: Client, connections: list[tuple[str, str]]) -> None:
        self.alice, self.bob = alice, bob
        self.connections = connections
        self.padding = bytes(MESSAGE_BYTES - HEADER.size)
        self.runs = 0
        self.run: Run | None = None
        self.sent = 0  # SENT events alice emitted
        self.queued = 0  # messages alice accepted
        self._lock = threading.Lock()
        self.alice_pump = EventPump(alice, "alice", self._on_alice)
        self.bob_pump = EventPump(bob, "bob", self._on_bob)
        self.pumps = (self.alice_pump, self.bob_pump)

    def stop(self) -> None:
        for pump in self.pumps:
            pump.stop()

    def _on_alice(self, event: Any, at: float) -> None:
        match event:
            case ev.Sent():
                with self._lock:
                    self.sent += 1
            case ev.MErr() | ev.Err():
                raise RuntimeError(f"alice: {event}")

    def _on_bob(self, event: Any, at: float) -> None:
        match event:
            case ev.Msg(conn_id=conn_id, msg_id=msg_id, body=body, integrity=integrity):
                self.bob.ack_message_async(f"ack-{conn_id}-{msg_id}", conn_id, msg_id)
                run = self.run
                number_of_run, number = HEADER.unpack_from(body)
                if run is None or number_of_run != run.run or number >= run.messages:
                    if run is not None:
                        run.foreign += 1
                    return
                if integrity != "ok":
                    run.bad_integrity += 1
                if run.arrived[number]:
                    run.duplicates += 1
                    return
                run.arrived[number] = at
                run.received += 1
                if run.received == run.messages:
                    run.last_at = at
                    run.done.set()
            case ev.Ok(corr_id=corr_id) if corr_id:
                self.bob.ack_command_event(corr_id)
                if self.run is not None:
                    self.run.acked += 1
            case ev.Err():
                raise RuntimeError(f"bob: {event}")

    def _body(self, run: int, number: int) -> bytes:
        return HEADER.pack(run, number) + self.padding

    def _arm(self, messages: int) -> Run:
        self.runs += 1
        run = Run(self.runs, messages, [0.0] * messages)
        self.run = run
        return run

    def _finish(self, run: Run) -> None:
        """Wait until bob got every message and acked it, and alice saw every SENT."""
        wait_until(run.done.is_set, WAIT_TIMEOUT, f"run {run.run}: bob's MSGs", self.pumps)
        wait_until(
            lambda: run.acked >= run.messages, WAIT_TIMEOUT, f"run {run.run}: acks", self.pumps
        )
        wait_until(
            lambda: self.sent >= self.queued, WAIT_TIMEOUT, f"run {run.run}: SENT", self.pumps
        )
        if run.duplicates or run.foreign or run.bad_integrity:
            raise RuntimeError(
                f"run {run.run}: {run.duplicates} duplicates, {run.foreign} foreign,"
                f" {run.bad_integrity} with bad integrity"
            )

    def throughput(self, connections: int, messages: int) -> float:
        """Send `messages` as fast as alice takes them; messages/s until bob has them all."""
        run = self._arm(messages)
        conns = [a for a, _ in self.connections[:connections]]
        failures: list[BaseException] = []

        def send(lane: int) -> None:
            try:
                for number in range(lane, messages, connections):
                    self.alice.send_message(conns[lane], self._body(run.run, number))
            except BaseException as exc:  # noqa: BLE001 (re-raised below, in the bench's thread)
                failures.append(exc)

        threads = [threading.Thread(target=send, args=(lane,)) for lane in range(connections)]
        started = time.perf_counter()
        if connections == 1:
            send(0)
        else:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if failures:
            raise RuntimeError(f"send_message failed: {failures[0]!r}") from failures[0]
        self.queued += messages
        self._finish(run)
        return rate(messages, run.last_at - started)

    def fixed_rate(self, per_second: float, seconds: float) -> tuple[list[float], float]:
        """Send on one connection by a schedule; the latencies (s) and the rate achieved."""
        messages = max(1, round(per_second * seconds))
        run = self._arm(messages)
        sent_at = [0.0] * messages
        conn = self.connections[0][0]
        started = time.perf_counter()
        for number in range(messages):
            delay = started + number / per_second - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent_at[number] = time.perf_counter()
            self.alice.send_message(conn, self._body(run.run, number))
        self.queued += messages
        achieved = rate(messages - 1, sent_at[-1] - started) if messages > 1 else per_second
        self._finish(run)
        return [
            arrived - sent for arrived, sent in zip(run.arrived, sent_at, strict=True)
        ], achieved


# ---------------------------------------------------------------------------- measurement


@dataclass(slots=True)
class Figures:
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.rates.setdefault(name, []).append(value)

    def add_cpu(self, name: str, value: float) -> None:
        self.cpu.setdefault(name, []).append(value)


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    return {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}


def agent_run(
    agents: Agents,
    connections: int,
    messages: int,
    figures: Figures,
    processes: dict[str, psutil.Process],
) -> None:
    before = cpu_seconds(processes)
    figures.add(f"agent_{connections}", agents.throughput(connections, messages))
    after = cpu_seconds(processes)
    for name in processes:
        figures.add_cpu(f"{name}_{connections}", (after[name] - before[name]) / messages * 1e6)


def measure(
    report: Report,
    sizes: Sizes,
    bars: Progress,
    *,
    baseline: Bench,
    agents: Agents,
    server_pid: int,
) -> dict[str, float]:
    layouts = {1: Layout(1, 0), CONNECTIONS: Layout(CONNECTIONS, 1)}
    processes = {"bench_process": psutil.Process(), "server": psutil.Process(server_pid)}
    figures = Figures()

    setup = bars.add_task("baseline queues, warm-up", total=1 + 2 * len(layouts))
    baseline.set_up(list(layouts.values()))
    bars.advance(setup)
    for queues, layout in layouts.items():
        baseline.cycles(layout, max(sizes.warm_up, layout.queues), record=False)
        bars.advance(setup)
        agents.throughput(queues, max(sizes.warm_up, queues))
        bars.advance(setup)
    bars.remove_task(setup)

    task = bars.add_task(
        "server 1q/8q cycles, agent 1/8 connections", total=sizes.repeats * 2 * len(layouts)
    )
    for _ in range(sizes.repeats):
        for queues, layout in layouts.items():
            figures.add(f"server_{queues}", baseline.cycles(layout, sizes.server_cycles))
            bars.advance(task)
        agent_run(agents, 1, sizes.messages_1, figures, processes)
        bars.advance(task)
        agent_run(agents, CONNECTIONS, sizes.messages_8, figures, processes)
        bars.advance(task)
    bars.remove_task(task)

    latencies: dict[float, tuple[list[float], float]] = {}
    for per_second in (LOWER_RATE, FIXED_RATE):
        task = bars.add_task(f"latency at {per_second:.0f} msg/s, 1 connection", total=None)
        latencies[per_second] = agents.fixed_rate(per_second, sizes.latency_seconds)
        bars.remove_task(task)

    best_of = {name: best(values) for name, values in figures.rates.items()}
    report.add("message_bytes", MESSAGE_BYTES, "B")
    report.add("messages_per_run_1", sizes.messages_1)
    report.add("messages_per_run_8", sizes.messages_8)
    for queues in layouts:
        report.add(f"msgs_per_s_{queues}conn", best_of[f"agent_{queues}"], "msg/s")
        report.add(
            f"msgs_per_s_{queues}conn_median", median(figures.rates[f"agent_{queues}"]), "msg/s"
        )
    for queues in layouts:
        report.add(f"server_cycles_per_s_{queues}q", best_of[f"server_{queues}"], "cycles/s")
        report.add(
            f"server_cycles_per_s_{queues}q_median",
            median(figures.rates[f"server_{queues}"]),
            "cycles/s",
        )
    for queues, layout in layouts.items():
        if "server" in layout.cpu_us_per_cycle:
            report.add(
                f"server_cpu_us_per_cycle_{queues}q",
                statistics.median(layout.cpu_us_per_cycle["server"]),
                "us",
            )
    for name, values in figures.cpu.items():
        base, _, queues = name.rpartition("_")
        report.add(f"{base}_cpu_us_per_msg_{queues}conn", statistics.median(values), "us")
    ratio = best_of["agent_1"] / best_of["server_1"]
    report.add("ratio_to_server_cycles", ratio)
    report.add(
        f"ratio_to_server_cycles_{CONNECTIONS}",
        best_of[f"agent_{CONNECTIONS}"] / best_of[f"server_{CONNECTIONS}"],
    )
    p99: dict[float, float] = {}
    for per_second, (values, achieved) in latencies.items():
        at = f"{per_second:.0f}"
        latencies_ms = sorted(value * 1e3 for value in values)
        p99[per_second] = statistics.quantiles(latencies_ms, n=100, method="inclusive")[98]
        report.add(f"fixed_rate_msgs_per_s_at_{at}", achieved, "msg/s")
        report.add(f"fixed_rate_messages_at_{at}", len(latencies_ms))
        report.add(f"p50_ms_at_{at}", statistics.median(latencies_ms), "ms")
        report.add(f"p99_ms_at_{at}", p99[per_second], "ms")
        report.add(f"max_ms_at_{at}", latencies_ms[-1], "ms")
    return {"ratio": ratio, "p99_ms": p99[FIXED_RATE]}


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args("messaging", __doc__, argv)
    sizes = QUICK if args.quick else FULL
    report = Report("messaging")
    note(f"bench.messaging on {machine()}", not args.json)
    total = stopwatch()
    with tempfile.TemporaryDirectory(prefix="duplex-bench-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        server = stack.enter_context(ServerProcess(directory / "server.db"))
        recipient = stack.enter_context(peer("recipient", server.address))
        sender = stack.enter_context(peer("sender", server.address))
        baseline = Bench(recipient, sender, CpuMeter({"server": server.pid}))
        alice = open_client(directory, "alice", [server.address])
        stack.callback(alice.close)
        bob = open_client(directory, "bob", [server.address])
        stack.callback(bob.close)
        with progress(enabled=not args.json) as bars:
            task = bars.add_task(f"{CONNECTIONS} handshakes", total=None)
            pairs = connect_all(alice, bob, CONNECTIONS, "setup").connections()
            bars.remove_task(task)
            agents = Agents(alice, bob, pairs)
            try:
                outcome = measure(
                    report, sizes, bars, baseline=baseline, agents=agents, server_pid=server.pid
                )
            finally:
                agents.stop()
    report.add("target_ratio", TARGET_RATIO)
    report.add("target_ratio_met", outcome["ratio"] >= TARGET_RATIO)
    report.add("target_p99_ms", TARGET_P99_MS, "ms")
    report.add("target_p99_met", outcome["p99_ms"] < TARGET_P99_MS)
    report.add("repeats", sizes.repeats)
    report.add("total_seconds", total(), "s")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
