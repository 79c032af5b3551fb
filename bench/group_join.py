"""The time until the k-th member of a peer-to-peer group is functional, and the agent
connections each join makes: the baseline chat relays must beat.

What it measures (bench/RESULTS.md has the figures). For
each group size N (``--sizes``, default 10 and 50; the host counts as a member), a host
builds a peer-to-peer group member by member, as a user would:

1. the host befriends the new member (a one-time contact invitation: CONTACT_LINK, the member
   joins it, CONTACT_CONNECTED on both sides; timed apart, as ``befriend``);
2. the host calls ``add_member`` (this starts the clock); the member auto-accepts the
   GROUP_INVITATION (``join_group``), connects to the host, and the whole introduction
   protocol runs by itself: the host introduces every existing member, the new member
   creates an invitation for each, the host forwards them, each existing member joins;
3. the member is **functional** when it is connected to every existing member: it told
   MEMBER_CONNECTED for each of them (GROUP_CONNECTED for the host) and each existing member
   told MEMBER_CONNECTED for it. Chat events are told after the state they describe is
   committed, so this is the moment its stored group view shows every member connected, and
   every existing member's view shows it connected; the bench checks that stored state (the
   new member's view after every join; every client's view at the end). The join time is
   the latest of those events minus the time just before ``add_member``.

The next member is added once the previous one is functional.

**Connections per join** are counted from stored state, not from events: the rows of
``agent_connection`` summed over every client's SQLite file, read just before
``add_member`` and again once the member is functional (the befriending's rows are outside
that window). Every peer-to-peer connection is one row at each end, so a join into a group
of m members makes 2 x m rows (m peer connections: one to the host, m - 1 introduced); the
bench cross-checks that against the ``chat_member`` rows of the group that gained a
connection id (the chat's view of the same connections), and reports the agent messages the
join sent (the growth of the connections' ``snd_seq``), the queues the server gained
(``server_queue``: one receive queue per connection end) and the chat commands stored.

**Where the time goes**: every chat command row carries the time it was stored, so the
bench reports, for the last join, when each step was last done since ``add_member``: the
member accepted (``join_group``), the host allowed it (``allow_member``), the member made
its invitation for every existing member (``create_intro_inv``, one per introduction the
host sent it), every existing member joined (``join_intro``), the member allowed them all
(``allow_intro``). The CPU seconds of the workers and of the server during each join
(psutil), and the share of the whole machine's CPU that was busy meanwhile (other tenants
included), tell a slow join from a loaded machine; so does the 1-minute load average at the
start and the end of the run (``load_average_at_*``).

**Baseline in the same run**: the smallest size's group (10 by default): the ratio of each
larger group's last join to its last join (``p2p_50_last_join_ratio_to_10``), and the same
ratio in CPU seconds (``..._cpu_ratio_to_10``, steadier on a shared machine). The relay
issue's target is that a 1,000-member group's join take ≤ 1.5 x the 10-member one's.

Processes: the queue server runs as in production in its own process (``duplex server`` on
a SQLite file); the clients are `ChatClient`s on SQLite files in a temporary directory,
spread over ``--workers`` worker processes (`bench._group_worker`; the host in the first,
the members round-robin); this process only coordinates. One process can hold a 50-member
group (1,331 threads, about 27 per client, 313 MiB), but its clients then share one GIL: on 2
cores the 50-member group's joins took 1.5-1.7 x as long with 1 worker as with 4, for the
same CPU per join (bench/RESULTS.md); more than 4 workers did not help further (a 20-member
group), hence the default of 4. Each size gets a fresh server, fresh workers and fresh files.

Run: ``python -m bench.group_join [--sizes 10,50] [--workers W] [--quick] [--json]
[--trace FILE]``. ``--quick`` builds groups of 3 and 5 (a few seconds); ``--trace`` writes
one JSON line per join (time, its phases, connections, CPU) for a closer look; progress bars
go to stderr.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.progress import Progress

from bench._agents import JsonChild, ServerProcess, server_queue_count
from bench._report import Report, load_average, machine, note, progress, stopwatch
from bench._report import bench_parser as _bench_parser

DEFAULT_SIZES = (10, 50)
QUICK_SIZES = (3, 5)
DEFAULT_WORKERS = 4
CALL_TIMEOUT = 120.0  # one worker command (opening a batch of clients included)
BEFRIEND_TIMEOUT = 120.0
JOIN_TIMEOUT = 300.0  # a join that takes this long is broken, not slow
FAILURES = {"CONTACT_FAILED", "MEMBER_FAILED", "GROUP_FAILED", "JOIN_ERROR"}


# ---------------------------------------------------------------------------- the workers


class Cluster:
    """The worker processes of one group, their replies and the chat events they tell."""

    def __init__(self, server: str, directory: Path, workers: int) -> None:
        self.children: list[JsonChild] = []
        self.replies: list[queue.Queue[dict[str, Any]]] = []
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.where: dict[str, int] = {}
        self._ids = 0
        # What the events said, by key; the value is the event's `at` (monotonic seconds).
        self.links: dict[str, str] = {}  # the host's contact id -> its invitation link
        self.contacts: dict[tuple[str, str], float] = {}  # (client, contact id)
        self.invited: dict[tuple[str, str], float] = {}  # (client, group id)
        self.joined: dict[tuple[str, str], float] = {}  # (client, group id): GROUP_CONNECTED
        self.connected: dict[tuple[str, str, str], float] = {}  # (client, group, member id)
        try:
            for index in range(workers):
                child = JsonChild(
                    "bench._group_worker", server, str(directory), what=f"group worker {index}"
                )
                self.children.append(child)
                self.replies.append(queue.Queue())
                threading.Thread(
                    target=self._read, args=(index, child), name=f"bench-worker-{index}"
                ).start()
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    def _read(self, index: int, child: JsonChild) -> None:
        assert child.child.stdout is not None
        with open(child.child.stdout.fileno(), "rb", closefd=False) as lines:
            for line in lines:
                self._route(index, line)
        self.replies[index].put({"error": f"group worker {index} exited"})

    def _route(self, index: int, line: bytes) -> None:
        message = json.loads(line)
        if message.pop("kind") == "reply":
            self.replies[index].put(message)
        else:
            self.events.put(message)

    # ------------------------------------------------------------------ commands

    def send(self, index: int, op: str, **args: Any) -> int:
        self._ids += 1
        self.children[index].send(id=self._ids, op=op, **args)
        return self._ids

    def reply(self, index: int, request_id: int, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        try:
            message = self.replies[index].get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"group worker {index} did not answer in {timeout:.0f} s") from None
        if "error" in message:
            raise RuntimeError(f"group worker {index}: {message['error']}")
        if message.pop("id") != request_id:
            raise RuntimeError(f"group worker {index}: a reply out of order")
        return message

    def call(self, index: int, op: str, **args: Any) -> dict[str, Any]:
        return self.reply(index, self.send(index, op, **args))

    def on(self, client: str, op: str, **args: Any) -> dict[str, Any]:
        return self.call(self.where[client], op, client=client, **args)

    def everywhere(self, op: str, **args: Any) -> list[dict[str, Any]]:
        """`op` in every worker at once; their replies in worker order."""
        sent = [self.send(index, op, **args) for index in range(len(self.children))]
        return [self.reply(index, request) for index, request in enumerate(sent)]

    def open(self, names: list[str], worker_of: Callable[[int], int]) -> None:
        batches: dict[int, list[str]] = {}
        for position, name in enumerate(names):
            index = worker_of(position)
            self.where[name] = index
            batches.setdefault(index, []).append(name)
        sent = {index: self.send(index, "open", names=batch) for index, batch in batches.items()}
        for index, request in sent.items():
            self.reply(index, request, timeout=CALL_TIMEOUT + 2.0 * len(batches[index]))

    def count(self, group_id: str) -> dict[str, int]:
        """Stored rows summed over every client (see `bench._group_worker`), and the
        workers' live threads and RSS, summed."""
        totals: dict[str, int] = {}
        for reply in self.everywhere("count", group_id=group_id):
            for key, value in reply.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def commands(self, since: float) -> dict[str, tuple[int, float, float]]:
        """The chat commands every client stored since `since` (wall clock), by function:
        (count, first created_at, last created_at)."""
        merged: dict[str, tuple[int, float, float]] = {}
        for reply in self.everywhere("commands", since=since):
            for function, (count, first, last) in reply["commands"].items():
                if function in merged:
                    n, f, la = merged[function]
                    merged[function] = (n + count, min(f, first), max(la, last))
                else:
                    merged[function] = (count, first, last)
        return merged

    # ------------------------------------------------------------------ events

    def wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{what}: not done within {timeout:.0f} s")
            try:
                message = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self._take(message)

    def _take(self, message: dict[str, Any]) -> None:
        client, at, event = message["client"], message["at"], message["event"]
        kind = event["event"]
        if kind in FAILURES:
            raise RuntimeError(f"{client}: {event}")
        if kind == "CONTACT_LINK":
            self.links[event["contact_id"]] = event["link"]
        elif kind == "CONTACT_CONNECTED":
            self.contacts[(client, event["contact_id"])] = at
        elif kind == "GROUP_INVITATION":
            self.invited.setdefault((client, event["group_id"]), at)
        elif kind == "GROUP_CONNECTED":
            self.joined.setdefault((client, event["group_id"]), at)
        elif kind == "MEMBER_CONNECTED":
            self.connected.setdefault((client, event["group_id"], event["member_id"]), at)

    def stop(self) -> None:
        for child in self.children:
            child.stop()


# ---------------------------------------------------------------------------- one group


@dataclass(frozen=True, slots=True)
class Join:
    """The k-th join: the member it made the (k+1)-th of the group (the host is the first)."""

    k: int
    existing: int  # members before it (the host included)
    seconds: float  # add_member -> functional
    invitation_s: float  # add_member -> GROUP_INVITATION at the new member
    host_s: float  # add_member -> GROUP_CONNECTED (connected to the host)
    add_member_s: float  # the add_member call itself (the host's sync create)
    befriend_s: float
    agent_connections: int  # agent_connection rows created, all clients
    agent_messages: int  # agent messages sent (the connections' snd_seq), all clients
    member_conns: int  # chat_member rows of the group that gained a connection id
    server_queues: int  # server_queue rows created
    chat_commands: int  # chat_command rows created
    cpu_workers_s: float
    cpu_server_s: float
    machine_busy: float  # the share of the machine's CPU time not idle during the join
    threads: int  # live threads in the workers after the join
    rss_mb: int  # the workers' RSS after the join
    phases: dict[str, float]  # chat command function -> its last row's time since add_member


@dataclass(slots=True)
class Group:
    size: int
    joins: list[Join]
    seconds: float  # the whole build, befriending and the checks included
    open_s: float  # opening the clients (not in `seconds`)


def _cpu(processes: list[psutil.Process]) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


@dataclass(slots=True)
class Building:
    """A group being built: its workers, its server, and the members so far."""

    cluster: Cluster
    group_id: str
    host: str
    server_db: Path
    workers: list[psutil.Process]
    server: psutil.Process
    existing: list[tuple[str, str]]  # (client, member id), the host first

    def cpu(self) -> tuple[float, float, float, float]:
        """CPU seconds used so far: the workers, the server, and the machine's busy and total
        time (every process; all cores)."""
        machine = psutil.cpu_times()
        total = sum(machine)
        return _cpu(self.workers), _cpu([self.server]), total - machine.idle, total


def build_group(
    size: int, workers: int, bars: Progress, trace: Callable[[dict[str, Any]], None]
) -> Group:
    with tempfile.TemporaryDirectory(prefix="duplex-bench-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        server = stack.enter_context(ServerProcess(directory / "server.db"))
        cluster = Cluster(server.address, directory, min(workers, size))
        stack.callback(cluster.stop)

        host = "host"
        members = [f"m{n:03d}" for n in range(1, size)]
        opening = stopwatch()
        spread = len(cluster.children)  # the host in the first worker, all round-robin
        cluster.open([host, *members], lambda position: position % spread)
        open_s = opening()

        clock = stopwatch()
        group_id = cluster.on(host, "create_group", name=f"club-{size}")["group_id"]
        view = cluster.on(host, "view", group_id=group_id)["view"]
        building = Building(
            cluster,
            group_id,
            host,
            server.db,
            [psutil.Process(pid) for pid in cluster.pids],
            psutil.Process(server.pid),
            [(host, view["member_id"])],
        )
        joins: list[Join] = []
        task = bars.add_task(f"group of {size}: joins", total=size - 1)
        for k, new in enumerate(members, 1):
            joins.append(_join(building, new, k))
            trace({"size": size, **asdict(joins[-1])})
            bars.update(
                task,
                advance=1,
                description=f"group of {size}: last join {joins[-1].seconds:.2f} s",
            )
        bars.remove_task(task)
        _check_all(cluster, group_id, [name for name, _ in building.existing], size)
        seconds = clock()
    return Group(size, joins, seconds, open_s)


def _join(building: Building, new: str, k: int) -> Join:
    cluster, group_id, host = building.cluster, building.group_id, building.host
    existing = building.existing
    # 1. The host befriends the new member.
    befriend = stopwatch()
    h_contact = cluster.on(host, "contact_link")["contact_id"]
    cluster.wait(lambda: h_contact in cluster.links, BEFRIEND_TIMEOUT, f"{new}: contact link")
    n_contact = cluster.on(new, "join_contact", link=cluster.links[h_contact])["contact_id"]
    cluster.wait(
        lambda: (host, h_contact) in cluster.contacts and (new, n_contact) in cluster.contacts,
        BEFRIEND_TIMEOUT,
        f"{new}: contact connected",
    )
    befriend_s = befriend()

    # 2. add_member, and wait until the new member is functional.
    before = cluster.count(group_id)
    queues_before = server_queue_count(building.server_db)
    cpu_before = building.cpu()
    added = cluster.on(host, "add_member", group_id=group_id, contact_id=h_contact)
    start, member_id = added["at"], added["member_id"]
    keys = [(new, group_id, their_id) for _, their_id in existing]
    keys += [(name, group_id, member_id) for name, _ in existing]
    cluster.wait(
        lambda: (new, group_id) in cluster.joined and all(key in cluster.connected for key in keys),
        JOIN_TIMEOUT,
        f"join {k} ({new} into {len(existing)} members)",
    )
    cpu_after = building.cpu()
    functional = max(cluster.connected[key] for key in keys)

    # 3. What the join left in stored state.
    after = cluster.count(group_id)
    queues_after = server_queue_count(building.server_db)
    # When each kind of chat command was last stored: the join's steps, from stored state
    # (their `created_at` is wall-clock time: `added["wall"]` is the start on that clock).
    phases = {
        function: last - added["wall"]
        for function, (_, _, last) in cluster.commands(added["wall"]).items()
    }
    view = cluster.on(new, "view", group_id=group_id)["view"]
    statuses = {m["member_id"]: m["status"] for m in view["members"]}
    wanted = {their_id: "connected" for _, their_id in existing}
    if statuses != wanted:
        raise RuntimeError(f"{new}'s stored view after its join: {statuses}")
    existing.append((new, member_id))
    return Join(
        k=k,
        existing=len(existing) - 1,
        seconds=functional - start,
        invitation_s=cluster.invited[(new, group_id)] - start,
        host_s=cluster.joined[(new, group_id)] - start,
        add_member_s=added["returned_at"] - start,
        befriend_s=befriend_s,
        agent_connections=after["agent_connections"] - before["agent_connections"],
        agent_messages=after["agent_messages"] - before["agent_messages"],
        member_conns=after["member_conns"] - before["member_conns"],
        server_queues=queues_after - queues_before,
        chat_commands=after["chat_commands"] - before["chat_commands"],
        cpu_workers_s=cpu_after[0] - cpu_before[0],
        cpu_server_s=cpu_after[1] - cpu_before[1],
        machine_busy=(cpu_after[2] - cpu_before[2]) / max(1e-9, cpu_after[3] - cpu_before[3]),
        threads=after["threads"],
        rss_mb=after["rss_mb"],
        phases=phases,
    )


def _check_all(cluster: Cluster, group_id: str, names: list[str], size: int) -> None:
    """Every client's stored view: the other size - 1 members, all connected."""
    for name in names:
        view = cluster.on(name, "view", group_id=group_id)["view"]
        statuses = [m["status"] for m in view["members"]]
        if len(statuses) != size - 1 or any(s != "connected" for s in statuses):
            raise RuntimeError(f"{name}'s stored view at the end: {statuses}")


# ---------------------------------------------------------------------------- figures


PHASES = (  # the join's steps, in order, by the chat command each stores (group.py)
    ("join_group", "accepted"),  # the member accepted the invitation (join the host's link)
    ("allow_member", "host_allowed"),  # the host allowed its confirmation
    ("create_intro_inv", "intro_invitations"),  # the member made an invitation per member
    ("join_intro", "intro_joins"),  # every existing member joined its invitation
    ("allow_intro", "intro_allows"),  # the member allowed every existing member
)


def report_group(report: Report, group: Group) -> None:
    joins, last = group.joins, group.joins[-1]
    prefix = f"p2p_{group.size}"
    times = [j.seconds for j in joins]
    report.add(f"{prefix}_first_join_s", times[0], "s")
    report.add(f"{prefix}_median_join_s", statistics.median(times), "s")
    report.add(f"{prefix}_last_join_s", last.seconds, "s")
    report.add(f"{prefix}_last_join_ms_per_member", last.seconds / last.existing * 1e3, "ms")
    per_member = [j.seconds / j.existing * 1e3 for j in joins]
    report.add(f"{prefix}_ms_per_member_median", statistics.median(per_member), "ms")
    # Where the last join's time went: when each step was done, since add_member.
    report.add(f"{prefix}_last_join_invited_s", last.invitation_s, "s")
    report.add(f"{prefix}_last_join_host_connected_s", last.host_s, "s")
    for function, name in PHASES:
        if function in last.phases:
            report.add(f"{prefix}_last_join_{name}_s", last.phases[function], "s")
    # What it made, from stored state.
    report.add(f"{prefix}_agent_connections_last_join", last.agent_connections, "rows")
    report.add(f"{prefix}_peer_connections_last_join", last.member_conns // 2, "conns")
    report.add(f"{prefix}_agent_messages_last_join", last.agent_messages, "msgs")
    report.add(f"{prefix}_server_queues_last_join", last.server_queues, "queues")
    report.add(f"{prefix}_chat_commands_last_join", last.chat_commands, "cmds")
    # What it cost, and how busy the machine was meanwhile (other tenants included).
    report.add(f"{prefix}_cpu_s_last_join_workers", last.cpu_workers_s, "s")
    report.add(f"{prefix}_cpu_s_last_join_server", last.cpu_server_s, "s")
    report.add(f"{prefix}_last_join_cpu_ms_per_member", _cpu_of(last) / last.existing * 1e3, "ms")
    report.add(f"{prefix}_machine_busy_last_join", last.machine_busy)
    report.add(f"{prefix}_worker_threads", last.threads, "threads")
    report.add(f"{prefix}_worker_rss_mb", last.rss_mb, "MiB")
    report.add(f"{prefix}_befriend_median_s", statistics.median(j.befriend_s for j in joins), "s")
    report.add(f"{prefix}_join_s_sum", sum(times), "s")
    report.add(f"{prefix}_total_s", group.seconds, "s")
    report.add(f"{prefix}_open_clients_s", group.open_s, "s")


def _cpu_of(join: Join) -> float:
    return join.cpu_workers_s + join.cpu_server_s


def parse_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    if not sizes or sizes[0] < 2:
        raise ValueError("group sizes are at least 2 (the host and one member)")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = _bench_parser("group_join", __doc__)
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        help="group sizes, the host included, comma-separated (default 10,50; --quick 3,5)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"worker processes holding the clients (default {DEFAULT_WORKERS})",
    )
    parser.add_argument("--trace", type=Path, help="write one JSON line per join to this file")
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    report = Report("group_join")
    note(f"bench.group_join on {machine()}", not args.json)
    report.add("load_average_at_start", load_average())
    total = stopwatch()
    with ExitStack() as stack:
        trace_file = stack.enter_context(args.trace.open("w")) if args.trace else None

        def trace(record: dict[str, Any]) -> None:
            if trace_file is not None:
                trace_file.write(json.dumps(record) + "\n")
                trace_file.flush()

        groups: list[Group] = []
        with progress(enabled=not args.json) as bars:
            for size in sizes:
                groups.append(build_group(size, args.workers, bars, trace))
    base = groups[0]
    for group in groups:
        report_group(report, group)
    for group in groups[1:]:
        last, base_last = group.joins[-1], base.joins[-1]
        name = f"p2p_{group.size}_last_join"
        report.add(f"{name}_ratio_to_{base.size}", last.seconds / base_last.seconds)
        # The same ratio in CPU seconds (workers and server): steadier on a shared machine.
        report.add(f"{name}_cpu_ratio_to_{base.size}", _cpu_of(last) / _cpu_of(base_last))
    report.add("workers", min(args.workers, max(sizes)))
    report.add("cores", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0)
    report.add("load_average_at_end", load_average())
    report.add("total_seconds", total(), "s")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
