"""Crash recovery: N = 1,000 pending async commands and 100 unacknowledged events, kill -9,
restart, time until all are done, against the same work without the kill, in the same run.

What it measures (its row in the README's Performance table; what must survive is in
docs/architecture.md, "Durable commands and acknowledgements"). The queue server runs as in
production in its own process (``python -m actors.cli server``); the state is prepared by a
**child process** (this module with ``--child``) running a `Client` on its own SQLite file:

1. with the server up, the child issues 100 `create_connection_async` ("inv-i") and waits
   for their 100 INV events, which it does **not** acknowledge (100 unacked events); it
   reports them (conn id, link) to the bench;
2. **recovery run**: the bench stops the server; the child issues 1,000 more
   `create_connection_async` ("cmd-i"), which return at once and stay pending (the server
   is unreachable: every first attempt fails and is persisted as a retry); once they all
   failed once (or after a grace period) the bench kills the child with SIGKILL, starts the
   server again on the same file and port (same address), waits until the retry time the
   child persisted for each command has passed (an outage longer than the retry delay, so
   the restart finds every retry due rather than sitting out a delay), then times
   ``Client.open`` on the child's file until every one of the 1,000 INV completions and the
   100 re-emitted INVs has arrived;
3. **baseline, the same work without the kill**: a second child prepares a second file the
   same way (step 1, then a clean `close()`), and the bench times ``Client.open`` on it, the
   1,000 `create_connection_async` calls issued with the server up, until the same 1,100
   events have arrived (the 100 unacknowledged INVs are re-emitted there too).

Why this is fair: both timings start just before ``Client.open`` in this process, on a file
holding the same 100 unacknowledged INVs, and end at the 1,100th distinct corr id; both
include the boot (resuming 100 resp. 1,100 connections: ``*_boot_seconds`` is the time
``Client.open`` blocks) and the same 1,000 NEWs through the same kind of server. The
baseline also includes issuing the 1,000 API calls (``baseline_issue_seconds``; most of the
work runs while they are issued, ``baseline_after_issue_seconds`` is what is left after the
last one), which the recovery run did before the kill: that is "the same work without the
kill". ``ratio`` = recovery / baseline (target ≤ 1.5). The agent runs with its default
retry policy (2 s, x1.5 after 10 s, at most 120 s); the wait for the persisted retry times
(``retry_wait_seconds``) is not timed, so the ratio is the cost of the recovery work, not
of the backoff policy.

With ``--restart-at-once`` the fresh client is opened as soon as the server is back, without
waiting for the persisted retry times: the recovery time then includes whatever is left of
the backoff the child persisted (``retry_wait_seconds`` is 0 and the wait is inside).

Checks (each printed, and the run fails if one does not hold): nothing lost: 1,100 distinct
corr ids completed, all INV, none ERR; nothing done twice: a corr id seen twice has the same
payload both times, the 100 re-emitted INVs are the very INVs the child saw (conn id and
link), and the server's SQLite file holds exactly one queue per created connection (1,100).

Runs are interleaved (baseline, recovery; again) `repeats` times on fresh files and servers
and the **best** (shortest) of each is reported, with the median as ``*_median``. Every
child (servers, client children) is stopped on every exit path and dies with this process.

Run: ``python -m bench.recovery [--quick] [--json]``. ``--quick`` shrinks every N so that
the whole script takes a few seconds; ``--json`` prints one JSON object instead of ``name
value unit`` lines. Progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import json
import queue
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rich.progress import Progress

from actors.agent import events as ev
from actors.client import Client
from bench._agents import (
    BENCH_CONFIG,
    JsonChild,
    ServerProcess,
    die_with_parent,
    open_client,
    parent_pid,
    server_queue_count,
)
from bench._report import Report, bench_parser, machine, median, note, progress, stopwatch

WAIT_TIMEOUT = 180.0  # a step that takes this long is broken, not slow
ATTEMPT_GRACE = 20.0  # how long the child waits for every pending command to fail once
TARGET_RATIO = 1.5


@dataclass(frozen=True, slots=True)
class Sizes:
    pending: int  # async commands pending at the kill
    unacked: int  # completion events emitted and not acknowledged at the kill
    repeats: int


FULL = Sizes(1_000, 100, 2)
QUICK = Sizes(100, 10, 1)


# ---------------------------------------------------------------------------- the child


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _pending_attempted(db: Path) -> tuple[int, int]:
    """(pending commands, pending commands that failed at least once) in an agent file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30.0) as connection:
        pending, attempted = connection.execute(
            "SELECT count(*), coalesce(sum(attempts > 0), 0) FROM agent_command WHERE event IS NULL"
        ).fetchone()
    return pending, attempted


def child_main(spec: dict[str, Any]) -> int:
    """Prepare the state, answering the bench on stdout (see the module docstring)."""
    die_with_parent(parent_pid())
    db = Path(spec["db"])
    client = Client.open(f"sqlite:///{db}", [spec["server"]], config=BENCH_CONFIG)
    unacked = int(spec["unacked"])
    for i in range(unacked):
        client.create_connection_async(f"inv-{i}")
    invs: dict[str, list[str]] = {}
    deadline = time.monotonic() + WAIT_TIMEOUT
    while len(invs) < unacked:
        event = client.agent_events.get(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(event, ev.Err):
            raise RuntimeError(f"child: {event}")
        if isinstance(event, ev.Inv) and event.corr_id:
            invs[event.corr_id] = [event.conn_id, event.link]
    _emit({"invs": invs})
    command = json.loads(sys.stdin.readline() or "{}")
    if command.get("op") != "pending":  # the baseline's child: a clean close
        client.close()
        _emit({"closed": True})
        return 0
    started = time.monotonic()
    for i in range(int(spec["pending"])):
        client.create_connection_async(f"cmd-{i}")
    issued = time.monotonic() - started
    attempted = 0
    deadline = time.monotonic() + ATTEMPT_GRACE
    while time.monotonic() < deadline:
        pending, attempted = _pending_attempted(db)
        if attempted >= pending:
            break
        time.sleep(0.05)
    _emit({"issued_seconds": issued, "attempted": attempted})
    sys.stdin.readline()  # wait for the SIGKILL (or the end of the bench)
    client.close()
    return 0


# ---------------------------------------------------------------------------- the bench


@dataclass(slots=True)
class Outcome:
    seconds: float
    boot_seconds: float
    issue_seconds: float = 0.0
    attempted_before_kill: int = 0
    retry_wait_seconds: float = 0.0
    duplicates: int = 0


@dataclass(slots=True)
class Results:
    recovery: list[Outcome] = field(default_factory=list)
    baseline: list[Outcome] = field(default_factory=list)


def prepare(
    directory: Path, name: str, server: ServerProcess, sizes: Sizes
) -> tuple[Path, JsonChild, dict[str, list[str]]]:
    """Start a child on `<name>.db`, wait for its unacked INVs; returns (file, child, invs)."""
    db = directory / f"{name}.db"
    spec = {"db": str(db), "server": server.address, "unacked": sizes.unacked}
    spec["pending"] = sizes.pending
    child = JsonChild("bench.recovery", "--child", json.dumps(spec), what=f"the {name} child")
    try:
        invs = child.receive(WAIT_TIMEOUT)["invs"]
    except BaseException:
        child.stop()
        raise
    return db, child, invs


def collect(
    client: Client, started: float, expected: set[str], invs: dict[str, list[str]]
) -> tuple[float, int]:
    """Take events until every corr id of `expected` completed; (seconds, duplicates seen).

    A corr id seen twice must carry the same payload; an `inv-*` INV must be the child's.
    """
    seen: dict[str, bytes] = {}
    duplicates = 0
    deadline = time.monotonic() + WAIT_TIMEOUT
    finished = 0.0
    while len(seen) < len(expected):
        try:
            event = client.agent_events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            missing = sorted(expected - set(seen))
            raise RuntimeError(
                f"lost: {len(missing)} corr ids never completed, e.g. {missing[:5]}"
            ) from None
        corr_id = getattr(event, "corr_id", None)
        if corr_id is None:
            continue
        if not isinstance(event, ev.Inv) or corr_id not in expected:
            raise RuntimeError(f"unexpected completion {event}")
        payload = msgspec.msgpack.encode(event)
        if corr_id in seen:
            duplicates += 1
            if seen[corr_id] != payload:
                raise RuntimeError(f"{corr_id} completed twice with different payloads")
            continue
        if corr_id in invs and [event.conn_id, event.link] != invs[corr_id]:
            raise RuntimeError(f"{corr_id} was re-emitted with another connection or link")
        seen[corr_id] = payload
        finished = time.perf_counter()
    # Anything already queued behind the last one (a late duplicate) is checked as well.
    while True:
        try:
            event = client.agent_events.get(timeout=0.2)
        except queue.Empty:
            break
        corr_id = getattr(event, "corr_id", None)
        if corr_id in seen:
            duplicates += 1
            if seen[corr_id] != msgspec.msgpack.encode(event):
                raise RuntimeError(f"{corr_id} completed twice with different payloads")
    return finished - started, duplicates


def check_queues(server_db: Path, sizes: Sizes, what: str) -> None:
    queues = server_queue_count(server_db)
    if queues != sizes.unacked + sizes.pending:
        raise RuntimeError(
            f"{what}: the server holds {queues} queues for"
            f" {sizes.unacked + sizes.pending} connections"
        )


def expected_ids(sizes: Sizes) -> set[str]:
    return {f"inv-{i}" for i in range(sizes.unacked)} | {f"cmd-{i}" for i in range(sizes.pending)}


def baseline_run(directory: Path, sizes: Sizes) -> Outcome:
    with ServerProcess(directory / "server-baseline.db") as server:
        _, child, invs = prepare(directory, "baseline", server, sizes)
        with child:
            child.send(op="close")
            child.receive(WAIT_TIMEOUT)
        started = time.perf_counter()
        client = open_client(directory, "baseline", [server.address])
        try:
            booted = time.perf_counter()
            for i in range(sizes.pending):
                client.create_connection_async(f"cmd-{i}")
            issued = time.perf_counter()
            seconds, duplicates = collect(client, started, expected_ids(sizes), invs)
        finally:
            client.close()
        check_queues(server.db, sizes, "baseline")
    return Outcome(seconds, booted - started, issued - booted, duplicates=duplicates)


def recovery_run(directory: Path, sizes: Sizes, *, wait_for_retries: bool = True) -> Outcome:
    server = ServerProcess(directory / "server-recovery.db")
    try:
        server.start()
        db, child, invs = prepare(directory, "recovery", server, sizes)
        with child:
            server.stop()
            child.send(op="pending")
            report = child.receive(WAIT_TIMEOUT)
            code = child.kill()
            if code != -9:
                raise RuntimeError(f"the child was not killed by SIGKILL (exit code {code})")
        server.start()  # same file, same port: the address the agent stored
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30.0) as connection:
            due = connection.execute(
                "SELECT coalesce(max(next_attempt_at), 0) FROM agent_command WHERE event IS NULL"
            ).fetchone()[0]
        retry_wait = max(0.0, due - time.time() + 0.05) if wait_for_retries else 0.0
        time.sleep(retry_wait)
        started = time.perf_counter()
        client = open_client(directory, "recovery", [server.address])
        try:
            booted = time.perf_counter()
            seconds, duplicates = collect(client, started, expected_ids(sizes), invs)
        finally:
            client.close()
        check_queues(server.db, sizes, "recovery")
    finally:
        server.stop()
    return Outcome(
        seconds,
        booted - started,
        report["issued_seconds"],
        attempted_before_kill=report["attempted"],
        retry_wait_seconds=retry_wait,
        duplicates=duplicates,
    )


def measure(report: Report, sizes: Sizes, bars: Progress, *, wait_for_retries: bool) -> float:
    results = Results()
    task = bars.add_task("baseline, kill -9 and recovery", total=2 * sizes.repeats)
    for _ in range(sizes.repeats):
        with tempfile.TemporaryDirectory(prefix="duplex-bench-") as tmp:
            results.baseline.append(baseline_run(Path(tmp), sizes))
            bars.advance(task)
            results.recovery.append(
                recovery_run(Path(tmp), sizes, wait_for_retries=wait_for_retries)
            )
            bars.advance(task)
    bars.remove_task(task)

    best_recovery = min(results.recovery, key=lambda o: o.seconds)
    best_baseline = min(results.baseline, key=lambda o: o.seconds)
    report.add("pending_commands", sizes.pending)
    report.add("unacked_events", sizes.unacked)
    report.add("recovery_seconds", best_recovery.seconds, "s")
    report.add("recovery_seconds_median", median([o.seconds for o in results.recovery]), "s")
    report.add("recovery_boot_seconds", best_recovery.boot_seconds, "s")
    report.add("baseline_seconds", best_baseline.seconds, "s")
    report.add("baseline_seconds_median", median([o.seconds for o in results.baseline]), "s")
    report.add("baseline_boot_seconds", best_baseline.boot_seconds, "s")
    report.add("baseline_issue_seconds", best_baseline.issue_seconds, "s")
    report.add(
        "baseline_after_issue_seconds",
        best_baseline.seconds - best_baseline.boot_seconds - best_baseline.issue_seconds,
        "s",
    )
    report.add("child_issue_seconds", best_recovery.issue_seconds, "s")
    report.add("retry_wait_seconds", max(o.retry_wait_seconds for o in results.recovery), "s")
    report.add(
        "attempted_before_kill", min(o.attempted_before_kill for o in results.recovery), "cmds"
    )
    ratio = best_recovery.seconds / best_baseline.seconds
    report.add("ratio", ratio)
    report.add("completed_per_run", sizes.pending + sizes.unacked, "corr ids")
    report.add("duplicate_events", sum(o.duplicates for o in results.recovery), "events")
    report.add("duplicate_events_baseline", sum(o.duplicates for o in results.baseline), "events")
    report.add("nothing_lost", True)  # collect() raises otherwise
    report.add("nothing_done_twice", True)  # collect() and check_queues() raise otherwise
    return ratio


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("recovery", __doc__)
    parser.add_argument(
        "--restart-at-once",
        action="store_true",
        help="open the fresh client as soon as the server is back: the persisted retry"
        " delays count in the recovery time",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the state-preparing child
    args = parser.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    sizes = QUICK if args.quick else FULL
    report = Report("recovery")
    note(f"bench.recovery on {machine()}", not args.json)
    total = stopwatch()
    with progress(enabled=not args.json) as bars:
        ratio = measure(report, sizes, bars, wait_for_retries=not args.restart_at_once)
    report.add("target_ratio", TARGET_RATIO)
    report.add("target_met", ratio <= TARGET_RATIO)
    report.add("repeats", sizes.repeats)
    report.add("total_seconds", total(), "s")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
