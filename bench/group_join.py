"""The time until a new member of a group is functional, and the agent connections each join
makes: peer-to-peer groups (the baseline), and relay groups (chat relays), with one relay's
fan-out rate; the plot of both against group size (``--svg``, docs/group_join.svg).

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

**Relay groups** (``--relay-sizes``, default 10, 100 and 1,000; ``--relays``, default 3).
Three chat relays (`ChatClient.create_relay_address`), each a client in a worker process of
its own, and an owner that creates the group (`create_relay_group`, GROUP_LINK_READY once
its link lists every relay). One group is grown to each size in turn (the owner counts as a
member): every member is a `ChatClient` on its own SQLite file that joins through the group
link as a user does (`prepare_group`, `connect_prepared_group`), and counts as joined once it
is connected to every relay at both ends (its view says 3 relays active, each relay's stored
roster has it connected). Members join in batches (10 per worker at once) and are **closed
once joined**: a 1,000-member group is then 1,000 files, 3,000 relay connections and 6,000
server queues, not 1,000 live clients (about 19 threads each) on a 2-core machine; a relay
does nothing for the members already joined when another joins (it admits the joiner to its
roster, nothing is sent to the others), so the live ones would only add load. The last
5 joins that grow the group to each size are timed one at a time, nothing else joining.
Before a size's first timed join the bench waits until the relays and the owner are
**settled**, so no work left from the batches (accepts, CONs, forwards) runs into the timed
figures: their files hold no pending chat command, chat outbox row, agent command, agent
message to send or to take (read-only), and their processes and the server's used at most
10% of a core each for 0.5 s (psutil), within 120 s or the bench fails saying what was still
there; the wait is reported (``relay_<size>_settle_s``). In a timed join, a member opened
beforehand calls `prepare_group` (the clock starts just before) and
`connect_prepared_group`; it is **functional** at GROUP_JOINED (the first relay took its
join: what it sends from then on is delivered), **connected** at GROUP_CONNECTED (the first
relay connected), and the bench also records when every relay was connected at both ends
(polled every 10 ms). The figures are the median (and best) of those 5 joins per size, and
``relay_<largest>_functional_ratio_to_<smallest>`` with whether the relay issue's target
(<= 1.5) is met. **Connections per join**: the ``agent_connection`` rows the join added to
the new member's file, the relays' and the owner's (the other members are closed: their
files cannot change), printed next to the peer-to-peer last join's (2 x relays there vs
2 x existing members); the server queues too.

**Fan-out** at the largest size: relays 2 and 3 are closed, so one relay alone forwards and
nothing else competes for the cores; the owner sends 3 group messages and the relay
forwards each to every other member (``x.grp.msg.fwd``); the time runs from just before the
owner's first send until the server stored every forward (the ``server_message`` rows in
the queues of the closed clients, polled every 10 ms: the members are closed, so each forward
stays in its member's queue; the table's whole count is no measure, as the messages to the
relay and the owner, still open, are deleted once taken: see `StoredIn`).
**Baseline in the same run**: the agent's plain send on one connection, measured the same way
(`Client.send_message` 100 times on a connection whose receiver is closed, until the server
stored all 100). The two are interleaved, 3 repeats each; best (``..._per_s``) and median
(``..._median``), and ``relay_fanout_ratio_to_plain_send``. The messages are then checked:
three members (the first, a middle one, the last) are opened again and must each store every
forward exactly once.

Run: ``python -m bench.group_join [--sizes 10,50] [--relay-sizes 10,100,1000] [--relays R]
[--workers W] [--only p2p|relay] [--quick] [--json] [--trace FILE] [--svg FILE]``.
``--quick`` builds peer-to-peer groups of 3 and 5 and a relay group of 3 then 6 (a few
seconds); ``--trace`` writes one JSON line per join (time, its phases, connections, CPU) for a
closer look; ``--svg`` draws the functional join time against group size (peer to peer: the
last join; relay: the median); progress bars go to stderr.
"""

from __future__ import annotations

import json
import math
import os
import queue
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.progress import Progress

from bench._agents import JsonChild, ServerProcess, server_queue_count
from bench._report import (
    Report,
    best,
    load_average,
    machine,
    median,
    note,
    progress,
    stopwatch,
)
from bench._report import bench_parser as _bench_parser

DEFAULT_SIZES = (10, 50)
QUICK_SIZES = (3, 5)
DEFAULT_WORKERS = 4
DEFAULT_RELAY_SIZES = (10, 100, 1000)
QUICK_RELAY_SIZES = (3, 6)
DEFAULT_RELAYS = 3
RELAY_NEW_QUEUES = 100_000  # the relay group's server: new queues per session per window
RELAY_PLAN = {  # see RelayPlan
    "timed": 5,
    "batch": 10,
    "fanout_messages": 3,
    "plain_messages": 100,
    "repeats": 3,
}
QUICK_RELAY_PLAN = {
    "timed": 2,
    "batch": 4,
    "fanout_messages": 2,
    "plain_messages": 20,
    "repeats": 2,
}
CALL_TIMEOUT = 120.0  # one worker command (opening a batch of clients included)
BEFRIEND_TIMEOUT = 120.0
JOIN_TIMEOUT = 300.0  # a join that takes this long is broken, not slow
SETTLE_TIMEOUT = 120.0  # the relays and the owner digesting a batch: longer is broken
SETTLE_WINDOW = 0.5  # seconds of near idle CPU that count as settled
SETTLE_IDLE_SHARE = 0.1  # of one core, per process: idle clients use ~0.01 (a timer tick)
# What a relay's or the owner's file holds while work is still queued there (storage/chat.py,
# storage/agent.py): the chat's commands not completed, its bodies not handed to the agent;
# the agent's commands not completed or whose event is not acknowledged yet, its messages
# not yet accepted by the server, and those received and not yet acknowledged by the chat.
BACKLOG = (
    ("pending chat commands", "SELECT count(*) FROM chat_command WHERE status = 'pending'"),
    ("chat outbox rows", "SELECT count(*) FROM chat_outbox"),
    ("agent commands", "SELECT count(*) FROM agent_command"),
    ("agent messages to send", "SELECT count(*) FROM agent_snd_message"),
    ("agent messages to take", "SELECT count(*) FROM agent_rcv_message"),
)
FAILURES = {"CONTACT_FAILED", "MEMBER_FAILED", "GROUP_FAILED", "GROUP_JOIN_FAILED", "JOIN_ERROR"}


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
        self.addresses: dict[str, str] = {}  # a relay's address id -> its relay address
        self.group_links: dict[str, tuple[str, int]] = {}  # group id -> (link, relays listed)
        self.functional: dict[tuple[str, str], float] = {}  # (client, group id): GROUP_JOINED
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

    def drain(self) -> None:
        """Take the events told so far, waiting for none."""
        while True:
            try:
                message = self.events.get_nowait()
            except queue.Empty:
                return
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
        elif kind == "ADDRESS_LINK":
            self.addresses[event["address_id"]] = event["link"]
        elif kind == "GROUP_LINK_READY":
            self.group_links[event["group_id"]] = (event["link"], event["relays"])
        elif kind == "GROUP_JOINED":
            self.functional.setdefault((client, event["group_id"]), at)

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


# ---------------------------------------------------------------------------- relay groups


@dataclass(frozen=True, slots=True)
class RelayJoin:
    """One timed join into a relay group: the member it made the `size`-th (the owner is
    the first)."""

    size: int
    functional_s: float  # prepare_group -> GROUP_JOINED (the first relay took the join)
    connected_s: float  # prepare_group -> GROUP_CONNECTED (the first relay connected)
    all_relays_s: float  # -> every relay connected at both ends (polled: +-10 ms)
    prepare_s: float  # the sync prepare_group call (the group link read)
    connect_call_s: float  # prepare_group + the sync connect_prepared_group (relay links read)
    agent_connections: int  # agent_connection rows made: the member's, the relays', the owner's
    server_queues: int
    cpu_s: float  # every worker and the server, during the join
    machine_busy: float


@dataclass(slots=True)
class RelayRun:
    """A relay group grown to each size in turn, and its relay's fan-out at the largest."""

    relays: int
    joins: dict[int, list[RelayJoin]]  # by group size
    build_s: dict[int, float]  # the joins (bulk and timed) that grew it to each size
    settle_s: dict[int, float]  # the wait for the relays and the owner to settle, per size
    fanout: list[tuple[int, float]]  # (forwards, seconds) per repeat
    plain: list[tuple[int, float]]  # (messages, seconds) per repeat
    samples_ok: int  # members opened again at the end that held every forward exactly once
    samples: int


@dataclass(frozen=True, slots=True)
class RelayPlan:
    sizes: tuple[int, ...]
    relays: int
    workers: int
    timed: int  # timed joins per size, the last ones that grow the group to it
    batch: int  # members joining at once per worker while the group is grown (untimed)
    fanout_messages: int  # group messages per fan-out repeat
    plain_messages: int  # plain sends per baseline repeat
    repeats: int


def _rows(path: Path, sql: str, *params: Any) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0) as connection:
        value = connection.execute(sql, params).fetchone()[0]
    connection.close()
    return int(value)


def _rcv_ids(path: Path) -> list[bytes]:
    """The ids of the receive queues a client's file holds: its queues on the server."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0) as connection:
        rows = connection.execute(
            "SELECT rcv_id FROM agent_rcv_queue WHERE rcv_id IS NOT NULL"
        ).fetchall()
    connection.close()
    return [bytes(rcv_id) for (rcv_id,) in rows]


class StoredIn:
    """Counts the server's stored messages in a fixed set of queues, those of recipients
    that are closed (read-only, on one connection while the server runs).

    Only such a count is a measure of what was sent: nobody takes a message from a closed
    client's queue, so it only grows (21 days' TTL; the quota of 128 a queue is never
    reached here). The count of every ``server_message`` row is not: the messages to the
    clients still open (the relay that forwards, the owner) are deleted as soon as they
    are acknowledged, so that count rises and falls meanwhile, and a wait for
    ``base + count`` of it either ends early (a message not yet acknowledged stands in for
    one not yet stored) or never (``base`` was read while such a message was there).
    The server's ``seq`` is no counter either: it is the rowid, reused once the highest row
    is deleted."""

    def __init__(self, server_db: Path, queues: Iterable[bytes]) -> None:
        # Autocommit: every count is a read transaction of its own, so each sees the
        # server's latest commit (an open one would keep reading the same snapshot).
        self.connection = sqlite3.connect(
            f"file:{server_db}?mode=ro", uri=True, timeout=30.0, isolation_level=None
        )
        self.connection.execute("CREATE TEMP TABLE watched (rcv_id BLOB PRIMARY KEY)")
        self.connection.executemany(
            "INSERT OR IGNORE INTO temp.watched VALUES (?)", [(q,) for q in queues]
        )
        self.queues = self.connection.execute("SELECT count(*) FROM temp.watched").fetchone()[0]

    def __call__(self) -> int:
        return int(
            self.connection.execute(
                "SELECT count(*) FROM server_message"
                " WHERE rcv_id IN (SELECT rcv_id FROM temp.watched)"
            ).fetchone()[0]
        )

    def close(self) -> None:
        self.connection.close()


class RelayGroupBuild:
    """The relay group's processes and files: the queue server, a worker process per chat
    relay (a relay's forwarding never shares a GIL with the members), and `workers` worker
    processes for the owner and the members."""

    def __init__(self, plan: RelayPlan, directory: Path, server: ServerProcess) -> None:
        self.plan, self.directory, self.server = plan, directory, server
        self.cluster = Cluster(server.address, directory, plan.relays + plan.workers)
        self.relays = [f"relay{n}" for n in range(plan.relays)]
        self.owner = "owner"
        self.members: list[str] = []  # joined, the owner not included
        self.group_id = ""
        self.link = ""
        self.processes = [psutil.Process(pid) for pid in [*self.cluster.pids, server.pid]]

    def member_worker(self, position: int) -> int:
        return self.plan.relays + position % self.plan.workers

    def file(self, name: str) -> Path:
        return self.directory / f"{name}.db"

    def start(self) -> None:
        cluster = self.cluster
        cluster.open(self.relays, lambda position: position)
        address_ids = [cluster.on(relay, "relay_address")["address_id"] for relay in self.relays]
        cluster.wait(
            lambda: all(a in cluster.addresses for a in address_ids),
            CALL_TIMEOUT,
            "the relay addresses",
        )
        cluster.open([self.owner], lambda _: self.plan.relays)
        self.group_id = cluster.on(
            self.owner,
            "create_relay_group",
            name="town",
            relays=[cluster.addresses[a] for a in address_ids],
        )["group_id"]
        cluster.wait(
            lambda: cluster.group_links.get(self.group_id, ("", 0))[1] == self.plan.relays,
            CALL_TIMEOUT,
            "the group link listing every relay",
        )
        self.link = cluster.group_links[self.group_id][0]

    # ------------------------------------------------------------------ joins

    def roster_connected(self) -> list[int]:
        """Each relay's roster members connected, from its file (the owner included)."""
        return [
            _rows(
                self.file(relay),
                "SELECT count(*) FROM chat_relay_member WHERE group_id = ? AND status = ?",
                self.group_id,
                "connected",
            )
            for relay in self.relays
        ]

    def fully_joined(self, names: list[str]) -> bool:
        """Every one of `names` connected to every relay at its end, and at every relay's."""
        if any(count < 1 + len(self.members) for count in self.roster_connected()):
            return False
        by_worker: dict[int, list[str]] = {}
        for name in names:
            by_worker.setdefault(self.cluster.where[name], []).append(name)
        for index, batch in by_worker.items():
            active = self.cluster.call(index, "relays_active", names=batch, group_id=self.group_id)[
                "active"
            ]
            if any(n < self.plan.relays for n in active.values()):
                return False
        return True

    def wait_fully_joined(self, names: list[str], what: str) -> float:
        """Poll until `fully_joined`; returns the monotonic time it was seen."""
        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            self.cluster.drain()
            told = all((name, self.group_id) in self.cluster.joined for name in names)
            if told and self.fully_joined(names):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not every relay connected in {JOIN_TIMEOUT:.0f} s")
            time.sleep(0.01)

    def open_members(self, names: list[str]) -> None:
        start = len(self.members)
        self.cluster.open(names, lambda position: self.member_worker(start + position))

    def bulk_join(self, names: list[str]) -> None:
        """`names` join at once (untimed: this grows the group), then are closed."""
        cluster = self.cluster
        self.open_members(names)
        sent = [
            (
                cluster.where[name],
                cluster.send(cluster.where[name], "join_relay_group", client=name, link=self.link),
            )
            for name in names
        ]
        for index, request in sent:
            cluster.reply(index, request)
        self.members.extend(names)
        self.wait_fully_joined(names, f"{len(names)} members joining at once")
        self._close(names)

    def timed_join(self, name: str) -> RelayJoin:
        cluster = self.cluster
        self.open_members([name])  # opening a client is not part of a join
        watched = [self.file(n) for n in [*self.relays, self.owner]]
        rows_before = sum(_rows(f, "SELECT count(*) FROM agent_connection") for f in watched)
        queues_before = server_queue_count(self.server.db)
        cpu_before, machine_before = _cpu(self.processes), psutil.cpu_times()
        reply = cluster.on(name, "join_relay_group", link=self.link)
        start = reply["at"]
        key = (name, self.group_id)
        cluster.wait(
            lambda: key in cluster.functional and key in cluster.joined,
            JOIN_TIMEOUT,
            f"{name} joining the relay group",
        )
        self.members.append(name)
        all_relays = self.wait_fully_joined([name], f"{name} connected to every relay")
        cpu_after, machine_after = _cpu(self.processes), psutil.cpu_times()
        rows_after = sum(
            _rows(f, "SELECT count(*) FROM agent_connection") for f in [*watched, self.file(name)]
        )
        busy = (sum(machine_after) - machine_after.idle) - (
            sum(machine_before) - machine_before.idle
        )
        self._close([name])
        return RelayJoin(
            size=1 + len(self.members),
            functional_s=cluster.functional[key] - start,
            connected_s=cluster.joined[key] - start,
            all_relays_s=all_relays - start,
            prepare_s=reply["prepared_s"],
            connect_call_s=reply["connect_s"],
            agent_connections=rows_after - rows_before,
            server_queues=server_queue_count(self.server.db) - queues_before,
            cpu_s=cpu_after - cpu_before,
            machine_busy=busy / max(1e-9, sum(machine_after) - sum(machine_before)),
        )

    def _close(self, names: list[str]) -> None:
        """Close joined members: a member of a 1,000-member group is a file, its connections
        and queues, not 20 threads kept busy on this machine (see the module docstring)."""
        by_worker: dict[int, list[str]] = {}
        for name in names:
            by_worker.setdefault(self.cluster.where[name], []).append(name)
        sent = [(i, self.cluster.send(i, "close", names=b)) for i, b in by_worker.items()]
        for index, request in sent:
            self.cluster.reply(index, request)

    # ------------------------------------------------------------------ settling

    def backlog(self) -> list[str]:
        """The work still queued in the relays' and the owner's files (`BACKLOG`), as
        ``client: count what``; only what is there."""
        found: list[str] = []
        for name in [*self.relays, self.owner]:
            uri = f"file:{self.file(name)}?mode=ro"
            with sqlite3.connect(uri, uri=True, timeout=30.0) as connection:
                for what, sql in BACKLOG:
                    count = connection.execute(sql).fetchone()[0]
                    if count:
                        found.append(f"{name}: {count} {what}")
            connection.close()
        return found

    def busy(self, window: float) -> dict[str, float]:
        """The relays' worker processes, the owner's and the server's CPU use over the next
        `window` seconds, in shares of one core; only those above `SETTLE_IDLE_SHARE`."""
        cluster = self.cluster
        watched = {f"{relay}'s worker": cluster.where[relay] for relay in self.relays}
        watched[f"{self.owner}'s worker"] = cluster.where[self.owner]
        processes = {name: psutil.Process(cluster.pids[index]) for name, index in watched.items()}
        processes["the server"] = psutil.Process(self.server.pid)
        before = {name: _cpu([process]) for name, process in processes.items()}
        start = time.monotonic()
        time.sleep(window)
        seconds = time.monotonic() - start
        shares = {
            name: (_cpu([process]) - before[name]) / seconds for name, process in processes.items()
        }
        return {name: share for name, share in shares.items() if share > SETTLE_IDLE_SHARE}

    def settle(self) -> float:
        """Wait until the relays and the owner have digested what was sent to them: no
        `backlog` before and after a `SETTLE_WINDOW` in which no watched process was `busy`.
        Returns the seconds it took; raises if not within `SETTLE_TIMEOUT`."""
        start = time.monotonic()
        deadline = start + SETTLE_TIMEOUT
        while True:
            left = self.backlog()
            if not left:
                busy = self.busy(SETTLE_WINDOW)
                left = [f"{name} at {share:.2f} of a core" for name, share in busy.items()]
                if not left:
                    left = self.backlog()
                    if not left:
                        return time.monotonic() - start
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the relays and the owner did not settle within {SETTLE_TIMEOUT:.0f} s"
                    f" ({len(self.members) + 1} members): still {', '.join(left)}"
                )
            time.sleep(0.05)

    # ------------------------------------------------------------------ fan-out

    def fanout(self, bars: Progress) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """One relay's fan-out against the agent's plain send, interleaved, `repeats` times."""
        plan, cluster = self.plan, self.cluster
        # One relay alone forwards: the others are closed, so the owner's copies for them
        # wait in their queues and nothing else competes for the two cores.
        for n, relay in enumerate(self.relays[1:], 1):
            cluster.call(n, "close", names=[relay])
        plain_worker = self.member_worker(1)
        conns = cluster.call(plain_worker, "plain_connect", count=plan.repeats)["conns"]
        forwards = plan.fanout_messages * len(self.members)  # to every member but the author
        copies_for_closed = plan.fanout_messages * (plan.relays - 1)
        # What is counted: the messages in the queues of closed clients only (`StoredIn`):
        # bob's for the plain send; the members' and the closed relays' for the fan-out.
        plain_queues = _rcv_ids(self.file("plain-bob"))
        fanout_queues = [
            rcv_id
            for name in [*self.members, *self.relays[1:]]
            for rcv_id in _rcv_ids(self.file(name))
        ]
        fanout, plain = [], []
        task = bars.add_task("relay fan-out vs plain send", total=plan.repeats)
        for repeat in range(plan.repeats):
            plain.append(
                (
                    plan.plain_messages,
                    self._until_stored(
                        plan.plain_messages,
                        plain_queues,
                        lambda c=conns[repeat]: cluster.call(
                            plain_worker, "plain_send", conn=c, count=plan.plain_messages
                        ),
                    ),
                )
            )
            fanout.append(
                (
                    forwards,
                    self._until_stored(
                        forwards + copies_for_closed,
                        fanout_queues,
                        lambda: cluster.on(
                            self.owner,
                            "send_group",
                            group_id=self.group_id,
                            count=plan.fanout_messages,
                        ),
                    ),
                )
            )
            bars.update(task, advance=1)
        bars.remove_task(task)
        return fanout, plain

    def _until_stored(self, count: int, queues: list[bytes], send: Callable[[], object]) -> float:
        """Seconds from just before `send()` until the server stored `count` more messages in
        `queues`, the queues of closed clients (`StoredIn`: only that count never falls).
        More than `count` is an error: something else was sent to them, and the time would
        not be that of the messages the caller means."""
        stored = StoredIn(self.server.db, queues)
        try:
            base = stored()
            start = time.monotonic()
            send()
            deadline = start + JOIN_TIMEOUT
            while (now := stored()) < base + count:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{now - base} of {count} messages stored in {stored.queues} queues"
                        f" of closed clients within {JOIN_TIMEOUT:.0f} s"
                    )
                time.sleep(0.01)
            seconds = time.monotonic() - start
        finally:
            stored.close()
        if now > base + count:
            raise RuntimeError(
                f"{now - base} messages stored in {stored.queues} queues of closed clients,"
                f" {count} expected"
            )
        return seconds

    def check_samples(self, expected: int) -> tuple[int, int]:
        """A few members opened again: each must store every forward exactly once."""
        picks = sorted({self.members[0], self.members[len(self.members) // 2], self.members[-1]})
        self.cluster.open(picks, self.member_worker)
        deadline = time.monotonic() + CALL_TIMEOUT
        ok: set[str] = set()
        while len(ok) < len(picks) and time.monotonic() < deadline:
            for name in picks:
                got = self.cluster.on(name, "received", group_id=self.group_id)
                if got["messages"] == got["distinct"] == expected:
                    ok.add(name)
            time.sleep(0.1)
        return len(ok), len(picks)


def build_relay_group(plan: RelayPlan, bars: Progress) -> RelayRun:
    with tempfile.TemporaryDirectory(prefix="duplex-bench-relay-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        # A relay's session creates a queue per member it admits: the server's default of
        # 1,000 new queues per session per 10 minutes stops a relay growing a group to 1,000
        # in the few minutes this bench takes (its accepts then fail with ERR QUOTA).
        server = stack.enter_context(
            ServerProcess(directory / "server.db", options=("--new-queues", str(RELAY_NEW_QUEUES)))
        )
        build = RelayGroupBuild(plan, directory, server)
        stack.callback(build.cluster.stop)
        build.start()
        joins: dict[int, list[RelayJoin]] = {}
        build_s: dict[int, float] = {}
        settle_s: dict[int, float] = {}
        task = bars.add_task("relay group: members", total=max(plan.sizes) - 1)
        serial = 0

        def names(count: int) -> list[str]:
            nonlocal serial
            serial += count
            return [f"r{n:04d}" for n in range(serial - count + 1, serial + 1)]

        for size in plan.sizes:
            clock = stopwatch()
            bulk = max(0, size - plan.timed - 1 - len(build.members))
            while bulk > 0:
                count = min(bulk, plan.batch * plan.workers)
                build.bulk_join(names(count))
                bulk -= count
                bars.update(task, advance=count)
            # The timed joins start on a group that finished digesting the batches.
            settling = bars.add_task(f"relay group of {size}: settling", total=1)
            settle_s[size] = build.settle()
            bars.update(
                settling,
                advance=1,
                description=f"relay group of {size}: settled in {settle_s[size]:.2f} s",
            )
            bars.remove_task(settling)
            joins[size] = []
            while 1 + len(build.members) < size:
                joins[size].append(build.timed_join(names(1)[0]))
                bars.update(
                    task,
                    advance=1,
                    description=f"relay group of {size}: join {joins[size][-1].functional_s:.2f} s",
                )
            build_s[size] = clock()
        bars.remove_task(task)
        fanout, plain = build.fanout(bars)
        samples_ok, samples = build.check_samples(plan.repeats * plan.fanout_messages)
    return RelayRun(plan.relays, joins, build_s, settle_s, fanout, plain, samples_ok, samples)


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


RELAY_TARGET = 1.5  # the relay issue: the join at the largest size <= 1.5 x the one at 10


def report_relay(report: Report, run: RelayRun, groups: list[Group]) -> None:
    sizes = sorted(run.joins)
    for size in sizes:
        joins, prefix = run.joins[size], f"relay_{size}"
        report.add(f"{prefix}_functional_median_s", _median(j.functional_s for j in joins), "s")
        report.add(f"{prefix}_functional_best_s", min(j.functional_s for j in joins), "s")
        report.add(f"{prefix}_connected_median_s", _median(j.connected_s for j in joins), "s")
        report.add(f"{prefix}_all_relays_median_s", _median(j.all_relays_s for j in joins), "s")
        report.add(f"{prefix}_prepare_call_median_s", _median(j.prepare_s for j in joins), "s")
        report.add(
            f"{prefix}_prepare_and_connect_calls_median_s",
            _median(j.connect_call_s for j in joins),
            "s",
        )
        report.add(f"{prefix}_cpu_s_per_join_median", _median(j.cpu_s for j in joins), "s")
        report.add(f"{prefix}_machine_busy_median", _median(j.machine_busy for j in joins))
        report.add(f"{prefix}_timed_joins", len(joins))
        report.add(f"{prefix}_build_s", run.build_s[size], "s")
        report.add(f"{prefix}_settle_s", run.settle_s[size], "s")
    small, large = run.joins[sizes[0]], run.joins[sizes[-1]]
    ratio = _median(j.functional_s for j in large) / _median(j.functional_s for j in small)
    name = f"relay_{sizes[-1]}_functional_ratio_to_{sizes[0]}"
    report.add(name, ratio)
    report.add(
        f"relay_{sizes[-1]}_connected_ratio_to_{sizes[0]}",
        _median(j.connected_s for j in large) / _median(j.connected_s for j in small),
    )
    report.add(f"relay_target_met_ratio_le_{RELAY_TARGET}", ratio <= RELAY_TARGET)
    # Connections per join, next to the peer-to-peer ones (2 x existing members there).
    for group in groups:
        report.add(
            f"agent_connections_per_join_p2p_{group.size}", group.joins[-1].agent_connections
        )
    for size in sizes:
        report.add(
            f"agent_connections_per_join_relay_{size}",
            max(j.agent_connections for j in run.joins[size]),
        )
        report.add(
            f"server_queues_per_join_relay_{size}", max(j.server_queues for j in run.joins[size])
        )
    report.add("relays", run.relays)
    # The fan-out: one relay forwarding to every member it serves, vs one connection's sends.
    fanout = [count / seconds for count, seconds in run.fanout]
    plain = [count / seconds for count, seconds in run.plain]
    members = sizes[-1] - 1
    report.add(f"relay_fanout_{members}_members_forwards_per_s", best(fanout), "msg/s")
    report.add(f"relay_fanout_{members}_members_forwards_per_s_median", median(fanout), "msg/s")
    report.add("plain_send_1_connection_per_s", best(plain), "msg/s")
    report.add("plain_send_1_connection_per_s_median", median(plain), "msg/s")
    report.add("relay_fanout_ratio_to_plain_send", best(fanout) / best(plain))
    report.add("relay_fanout_ratio_to_plain_send_median", median(fanout) / median(plain))
    report.add("relay_fanout_forwards_per_repeat", run.fanout[0][0])
    report.add("relay_fanout_sample_members_with_every_forward", run.samples_ok)
    report.add("relay_fanout_sample_members", run.samples)


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# ---------------------------------------------------------------------------- the plot


def join_time_svg(p2p: list[tuple[int, float]], relay: list[tuple[int, float]]) -> str:
    """Join time against group size, peer-to-peer vs relay, as a small SVG (log-log: the
    sizes span 10 to 1,000 and the times 0.1 s to many seconds)."""
    width, height, left, right, top, bottom = 640, 380, 64, 64, 70, 52
    points = [*p2p, *relay]
    x_lo = 10 ** math.floor(math.log10(min(size for size, _ in points)))
    x_hi = 10 ** math.ceil(math.log10(max(size for size, _ in points)))
    y_lo = 10 ** math.floor(math.log10(min(t for _, t in points)))
    y_hi = 10 ** math.ceil(math.log10(max(t for _, t in points)))

    def x(size: float) -> float:
        share = math.log10(size / x_lo) / math.log10(x_hi / x_lo)
        return left + share * (width - left - right)

    def y(seconds: float) -> float:
        share = math.log10(seconds / y_lo) / math.log10(y_hi / y_lo)
        return height - bottom - share * (height - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">'
        "Time until a new member is functional, by group size</text>",
    ]
    decade = x_lo
    while decade <= x_hi:
        out.append(_gridline(x(decade), top, x(decade), height - bottom))
        out.append(
            f'<text x="{x(decade):.1f}" y="{height - bottom + 16}" text-anchor="middle">'
            f"{decade:,}</text>"
        )
        decade *= 10
    tick = y_lo
    while tick <= y_hi * 1.0001:
        out.append(_gridline(left, y(tick), width - right, y(tick)))
        out.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g} s</text>'
        )
        tick *= 10
    out.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">'
        "group size (members, the owner included)</text>"
    )
    for series, colour, label, legend_y in (
        (p2p, "#d62728", "peer to peer (the last join)", 38),
        (relay, "#1f77b4", "relay group (median timed join, to the first relay JOINED)", 56),
    ):
        if not series:
            continue
        path = " ".join(f"{x(size):.1f},{y(t):.1f}" for size, t in sorted(series))
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for size, t in series:
            out.append(
                f'<circle cx="{x(size):.1f}" cy="{y(t):.1f}" r="4" fill="{colour}">'
                f"<title>{size} members: {t:.3f} s</title></circle>"
            )
            out.append(
                f'<text x="{x(size) + 6:.1f}" y="{y(t) - 6:.1f}" fill="{colour}">{t:.2g} s</text>'
            )
        out.append(
            f'<line x1="{left + 12}" y1="{legend_y}" x2="{left + 36}" y2="{legend_y}"'
            f' stroke="{colour}" stroke-width="2"/>'
        )
        out.append(f'<text x="{left + 42}" y="{legend_y + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _gridline(x1: float, y1: float, x2: float, y2: float) -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"'
        ' stroke="#ddd" stroke-width="1"/>'
    )


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
        help="peer-to-peer group sizes, the host included, comma-separated (default 10,50;"
        " --quick 3,5)",
    )
    parser.add_argument(
        "--relay-sizes",
        type=parse_sizes,
        help="relay group sizes, the owner included: one group grown to each in turn"
        " (default 10,100,1000; --quick 3,6)",
    )
    parser.add_argument(
        "--relays", type=int, default=DEFAULT_RELAYS, help=f"chat relays (default {DEFAULT_RELAYS})"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"worker processes holding the clients (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--only", choices=("p2p", "relay"), help="build only peer-to-peer or only relay groups"
    )
    parser.add_argument("--trace", type=Path, help="write one JSON line per join to this file")
    parser.add_argument(
        "--svg", type=Path, help="draw join time against group size, p2p vs relay, to this file"
    )
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    relay_sizes = args.relay_sizes or (QUICK_RELAY_SIZES if args.quick else DEFAULT_RELAY_SIZES)
    if args.only == "relay":
        sizes = ()
    if args.only == "p2p":
        relay_sizes = ()
    plan = RelayPlan(
        sizes=relay_sizes,
        relays=args.relays,
        workers=args.workers,
        **(QUICK_RELAY_PLAN if args.quick else RELAY_PLAN),
    )
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
        run: RelayRun | None = None
        with progress(enabled=not args.json) as bars:
            for size in sizes:
                groups.append(build_group(size, args.workers, bars, trace))
            if relay_sizes:
                run = build_relay_group(plan, bars)
                for size, joins in run.joins.items():
                    for join in joins:
                        trace({"relay_size": size, **asdict(join)})
    for group in groups:
        report_group(report, group)
    for group in groups[1:]:
        base = groups[0]
        last, base_last = group.joins[-1], base.joins[-1]
        name = f"p2p_{group.size}_last_join"
        report.add(f"{name}_ratio_to_{base.size}", last.seconds / base_last.seconds)
        # The same ratio in CPU seconds (workers and server): steadier on a shared machine.
        report.add(f"{name}_cpu_ratio_to_{base.size}", _cpu_of(last) / _cpu_of(base_last))
    if run is not None:
        report_relay(report, run, groups)
    report.add("workers", args.workers)
    report.add("cores", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0)
    report.add("load_average_at_end", load_average())
    report.add("total_seconds", total(), "s")
    if args.svg is not None:
        p2p_points = [(group.size, group.joins[-1].seconds) for group in groups]
        relay_points = (
            []
            if run is None
            else [
                (size, _median(j.functional_s for j in joins)) for size, joins in run.joins.items()
            ]
        )
        args.svg.write_text(join_time_svg(p2p_points, relay_points), encoding="utf-8")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
