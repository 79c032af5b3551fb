"""Agent-to-agent messages/s end to end (durable, encrypted, acked), against the queue server's
SEND→MSG→ACK cycles/s measured in the same run.

What it measures (its row and target in the README's Performance table):

- **the queue server** runs in its own process as ``duplex server`` runs it (`bench.server`'s
  ``bench._queue_server`` child: TLS, SQLite in WAL, quota 128, its store's counters on
  request); **alice and bob** are two `Client`s in this process, each on its own SQLite file
  in a temporary directory, connected by 8 connections set up with the async invitation
  handshake before anything is timed; both run the agent's defaults
  (`bench._agents.BENCH_CONFIG`: only the timeouts are more generous);
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
  threads) and of the server process, median over repeats;
- **SQL per message on each side**: the statements and transactions of alice's database
  (``sender_*``) and of bob's (``receiver_*``) over each throughput run, divided by its
  messages (`Database.counters`: every statement through the store, BEGIN/COMMIT counted as
  one transaction), and the server's for comparison. They do not depend on the load: every
  run gives the same figures, up to a retry. Targets on the receiving side: ≤ 8 statements
  and ≤ 4 transactions per message (its MSG stored, the user's ACK stored, the ACK done,
  the OK completion acknowledged).

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

The machine's 1-minute load average is printed at the start and at the end
(``load_average_at_*``): on a shared machine other tenants' load moves every figure.

Run: ``python -m bench.messaging [--quick] [--json]``. ``--quick`` shrinks every N so that
the whole script takes a few seconds; ``--json`` prints one JSON object instead of ``name
value unit`` lines. Progress bars go to stderr.
"""

from __future__ import annotations

import statistics
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from rich.progress import Progress

from bench._agents import QUOTA, connect_all, open_client
from bench._report import (
    Report,
    best,
    load_average,
    machine,
    median,
    note,
    parse_args,
    progress,
    stopwatch,
)
from bench._traffic import Agents
from bench.limits import MESSAGE_BYTES
from bench.server import Bench, CpuMeter, Layout, ServerChild, peer, queue_server
from storage.database import CounterSnapshot

CONNECTIONS = 8
FIXED_RATE = 100.0  # msg/s of the latency run that the target is about
LOWER_RATE = 50.0  # and a run at half of it: the latency when not near saturation
TARGET_RATIO = 0.3
TARGET_P99_MS = 50.0
TARGET_RECEIVER_STATEMENTS = 8.0  # per message, on bob's database
TARGET_RECEIVER_TRANSACTIONS = 4.0


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


# ---------------------------------------------------------------------------- measurement


@dataclass(slots=True)
class Figures:
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    sql: dict[str, list[float]] = field(default_factory=dict)  # per message, by side

    def add(self, name: str, value: float) -> None:
        self.rates.setdefault(name, []).append(value)

    def add_cpu(self, name: str, value: float) -> None:
        self.cpu.setdefault(name, []).append(value)

    def add_sql(self, name: str, value: float) -> None:
        self.sql.setdefault(name, []).append(value)


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    return {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}


def sql_counters(agents: Agents, server: ServerChild) -> dict[str, CounterSnapshot]:
    """The statements and transactions so far of each side's database and the server's."""
    stats = server.stats()
    return {
        "sender": agents.alice.database.counters.snapshot(),
        "receiver": agents.bob.database.counters.snapshot(),
        "server": CounterSnapshot(stats["statements"], stats["transactions"]),
    }


def agent_run(
    agents: Agents,
    connections: int,
    messages: int,
    figures: Figures,
    *,
    processes: dict[str, psutil.Process],
    server: ServerChild,
) -> None:
    before, sql_before = cpu_seconds(processes), sql_counters(agents, server)
    figures.add(f"agent_{connections}", agents.throughput(connections, messages))
    after, sql_after = cpu_seconds(processes), sql_counters(agents, server)
    for name in processes:
        figures.add_cpu(f"{name}_{connections}", (after[name] - before[name]) / messages * 1e6)
    for side, counters in sql_after.items():
        done = counters - sql_before[side]
        figures.add_sql(f"{side}_sql_statements_per_msg", done.statements / messages)
        figures.add_sql(f"{side}_sql_transactions_per_msg", done.transactions / messages)


def measure(
    report: Report,
    sizes: Sizes,
    bars: Progress,
    *,
    baseline: Bench,
    agents: Agents,
    server: ServerChild,
) -> dict[str, float]:
    layouts = {1: Layout(1, 0), CONNECTIONS: Layout(CONNECTIONS, 1)}
    processes = {"bench_process": psutil.Process(), "server": psutil.Process(server.pid)}
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
        agent_run(agents, 1, sizes.messages_1, figures, processes=processes, server=server)
        bars.advance(task)
        agent_run(
            agents, CONNECTIONS, sizes.messages_8, figures, processes=processes, server=server
        )
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
    for queues, layout in layouts.items():
        if layout.statements_per_cycle:
            per_cycle = statistics.median(layout.statements_per_cycle)
            report.add(f"server_sql_statements_per_cycle_{queues}q", per_cycle)
            per_cycle = statistics.median(layout.transactions_per_cycle)
            report.add(f"server_sql_transactions_per_cycle_{queues}q", per_cycle)
    sql = {name: statistics.median(values) for name, values in figures.sql.items()}
    for name, value in sql.items():
        report.add(name, value)
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
    return {
        "ratio": ratio,
        "p99_ms": p99[FIXED_RATE],
        "receiver_statements": sql["receiver_sql_statements_per_msg"],
        "receiver_transactions": sql["receiver_sql_transactions_per_msg"],
    }


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args("messaging", __doc__, argv)
    sizes = QUICK if args.quick else FULL
    report = Report("messaging")
    note(f"bench.messaging on {machine()}", not args.json)
    report.add("load_average_at_start", load_average())
    total = stopwatch()
    with tempfile.TemporaryDirectory(prefix="duplex-bench-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        server = stack.enter_context(queue_server(directory, quota=QUOTA))
        recipient = stack.enter_context(peer("recipient", server.address))
        sender = stack.enter_context(peer("sender", server.address))
        baseline = Bench(server, recipient, sender, CpuMeter({"server": server.pid}))
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
                    report, sizes, bars, baseline=baseline, agents=agents, server=server
                )
            finally:
                agents.stop()
    report.add("target_ratio", TARGET_RATIO)
    report.add("target_ratio_met", outcome["ratio"] >= TARGET_RATIO)
    report.add("target_p99_ms", TARGET_P99_MS, "ms")
    report.add("target_p99_met", outcome["p99_ms"] < TARGET_P99_MS)
    report.add("target_receiver_statements_per_msg", TARGET_RECEIVER_STATEMENTS)
    report.add(
        "target_receiver_statements_met",
        outcome["receiver_statements"] <= TARGET_RECEIVER_STATEMENTS,
    )
    report.add("target_receiver_transactions_per_msg", TARGET_RECEIVER_TRANSACTIONS)
    report.add(
        "target_receiver_transactions_met",
        outcome["receiver_transactions"] <= TARGET_RECEIVER_TRANSACTIONS,
    )
    report.add("repeats", sizes.repeats)
    report.add("load_average_at_end", load_average())
    report.add("total_seconds", total(), "s")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
