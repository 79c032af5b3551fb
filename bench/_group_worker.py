"""A worker process of `bench.group_join`: it holds some of the group's `ChatClient`s (the
peer-to-peer members, or a relay group's chat relays, owner and members).

Run by the bench as ``python -m bench._group_worker SERVER_ADDRESS DIRECTORY`` (a
`JsonChild`: ``BENCH_PARENT`` in the environment). One process cannot hold a 50-100
member group honestly (every client is a runtime with its own actor threads, trio thread
and database, all under one GIL), so the bench spreads the clients over a few of these.

Each client is a `ChatClient` on its own SQLite file in DIRECTORY, with the bench's agent
config (`bench._agents.BENCH_CONFIG`: production retry delays). A thread per client takes
its chat events; each one is written to stdout as
``{"kind": "event", "client": NAME, "at": T, "event": {...}}`` (T is `time.monotonic()`
when the event was taken: CLOCK_MONOTONIC, the same clock in every process of the machine,
so the parent compares the times of different workers). A GROUP_INVITATION is accepted at
once (`join_group`), as a bot that auto-joins would do: the join is part of what is timed.

Commands, one JSON object a line on stdin, each answered by
``{"kind": "reply", "id": N, ...}`` (or ``"error"``):

- ``open {names}``: open a client per name (profile name = NAME), start their event threads;
- ``create_group {client, name}`` → ``group_id``;
- ``contact_link {client}`` → ``contact_id`` (the link follows as CONTACT_LINK);
- ``join_contact {client, link}`` → ``contact_id``;
- ``add_member {client, group_id, contact_id}`` → ``member_id``, ``at`` and ``wall``: the
  monotonic and the wall-clock time just before the call (the start of a join);
- ``view {client, group_id}`` → the stored group view (members with their status);
- ``count {group_id}`` → what the worker's files hold, summed over its clients and read
  from the SQLite files (read-only, not through the clients): ``agent_connections`` (rows of
  ``agent_connection``), ``agent_messages`` (the sum of their ``snd_seq``: the agent
  messages the connections sent, handshake and chat alike), ``member_conns``
  (``chat_member`` rows of the group that have a connection id), ``chat_commands`` (rows of
  ``chat_command``); and the worker's live ``threads`` and ``rss_mb``;
- ``commands {since}`` → the ``chat_command`` rows stored at or after ``since`` (wall
  clock), summed over the clients by function: ``[count, first created_at, last]``.

Relay groups (a relay group's member joins nothing until told to, so no event is answered):

- ``close {names}``: close those clients (their files stay; ``open`` opens them again);
- ``relay_address {client}`` → ``address_id`` (ADDRESS_LINK brings the relay address);
- ``create_relay_group {client, name, relays}`` → ``group_id`` (GROUP_LINK_READY follows);
- ``join_relay_group {client, link}`` → ``at`` (monotonic, just before ``prepare_group``),
  ``prepared_s`` and ``connect_s`` (when each sync call returned, since ``at``), ``group_id``;
- ``relays_active {names, group_id}`` → ``active``: each client's connected relays;
- ``send_group {client, group_id, count}``: ``count`` group messages, one call each;
- ``received {client, group_id}`` → ``messages`` and ``distinct``: the group messages the
  client stored from others (rows, and distinct shared ids);
- ``plain_connect {count}``: two agent `Client`s, ``plain-alice`` and ``plain-bob``, make
  ``count`` connections (the invitation handshake), then bob is closed → ``conns`` (alice's);
- ``plain_send {conn, count}``: alice sends ``count`` messages on that connection.

The worker ends when its stdin closes (the parent stops it, or the kernel does when the
parent dies); it does not outlive the bench (`die_with_parent`).
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil

from actors.chat import events as cev
from actors.chat_client import ChatClient
from actors.client import Client
from bench._agents import (
    BENCH_CONFIG,
    EventPump,
    connect_all,
    die_with_parent,
    open_client,
    parent_pid,
)

_out_lock = threading.Lock()


def _emit(obj: dict[str, Any]) -> None:
    line = json.dumps(obj) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


class Worker:
    def __init__(self, server: str, directory: Path) -> None:
        self.server = server
        self.directory = directory
        self.clients: dict[str, ChatClient] = {}
        self.stopping = threading.Event()
        # Each client's event thread and what stops it: a closed client's thread ends with it
        # (a worker of a 1,000-member relay group opens and closes most of its clients).
        self.pumps: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self.plain: tuple[Client, EventPump] | None = None  # the plain-send baseline's sender

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.db"

    # ------------------------------------------------------------------ events

    def _pump(self, name: str, client: ChatClient, closing: threading.Event) -> None:
        stream = client.chat_events
        while not (self.stopping.is_set() or closing.is_set()):
            try:
                event = stream.get(timeout=0.5)
            except queue.Empty:
                continue
            at = time.monotonic()
            if isinstance(event, cev.NewMessage):
                continue
            _emit(
                {
                    "kind": "event",
                    "client": name,
                    "at": at,
                    "event": msgspec.to_builtins(event),
                }
            )
            if isinstance(event, cev.GroupInvitation):
                try:
                    client.join_group(event.group_id)
                except Exception as exc:  # noqa: BLE001 (told to the parent, which fails)
                    _emit(
                        {
                            "kind": "event",
                            "client": name,
                            "at": time.monotonic(),
                            "event": {"event": "JOIN_ERROR", "error": repr(exc)},
                        }
                    )

    # ------------------------------------------------------------------ commands

    def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "open":
            for name in args["names"]:
                client = ChatClient.open(
                    f"sqlite:///{self.path(name)}", [self.server], name=name, config=BENCH_CONFIG
                )
                self.clients[name] = client
                closing = threading.Event()
                thread = threading.Thread(
                    target=self._pump, args=(name, client, closing), name=f"bench-{name}-events"
                )
                thread.start()
                self.pumps[name] = (thread, closing)
            return {"opened": len(args["names"])}
        if op == "close":
            for name in args["names"]:
                self.close_client(name)
            return {"closed": len(args["names"])}
        if op == "count":
            return self.count(args["group_id"])
        if op == "commands":
            return self.commands(args["since"])
        if op == "relays_active":
            views = {name: self.clients[name].group(args["group_id"]) for name in args["names"]}
            return {"active": {n: 0 if v is None else v.active_relays for n, v in views.items()}}
        if op == "plain_connect":
            return self.plain_connect(args["count"])
        if op == "plain_send":
            assert self.plain is not None
            for n in range(args["count"]):
                self.plain[0].send_message(args["conn"], b"plain %d" % n)
            return {}
        client = self.clients[args["client"]]
        if op == "create_group":
            return {"group_id": client.create_group(args["name"])}
        if op == "contact_link":
            return {"contact_id": client.create_contact_link()}
        if op == "join_contact":
            return {"contact_id": client.join_contact(args["link"])}
        if op == "add_member":
            at, wall = time.monotonic(), time.time()
            member_id = client.add_member(args["group_id"], args["contact_id"])
            return {"member_id": member_id, "at": at, "wall": wall, "returned_at": time.monotonic()}
        if op == "view":
            view = client.group(args["group_id"])
            return {"view": None if view is None else msgspec.to_builtins(view)}
        if op == "relay_address":
            return {"address_id": client.create_relay_address()}
        if op == "create_relay_group":
            return {"group_id": client.create_relay_group(args["name"], relays=args["relays"])}
        if op == "join_relay_group":
            at = time.monotonic()
            group_id = client.prepare_group(args["link"])
            prepared = time.monotonic()
            client.connect_prepared_group(group_id)
            return {
                "group_id": group_id,
                "at": at,
                "prepared_s": prepared - at,
                "connect_s": time.monotonic() - at,
            }
        if op == "send_group":
            for n in range(args["count"]):
                client.send_group_message(args["group_id"], f"fan-out {n}")
            return {}
        if op == "received":
            return self.received(args["client"], args["group_id"])
        raise ValueError(f"unknown op {op!r}")

    def close_client(self, name: str) -> None:
        thread, closing = self.pumps.pop(name)
        closing.set()
        thread.join(2.0)
        self.clients.pop(name).close()

    def received(self, name: str, group_id: str) -> dict[str, Any]:
        uri = f"file:{self.path(name)}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=30.0) as connection:
            messages, distinct = connection.execute(
                "SELECT count(*), count(DISTINCT msg_id) FROM chat_message"
                " WHERE chat_kind = 'group' AND chat_id = ? AND NOT sent",
                (group_id,),
            ).fetchone()
        connection.close()
        return {"messages": messages, "distinct": distinct}

    def plain_connect(self, count: int) -> dict[str, Any]:
        """The agent's plain send, the fan-out's baseline: alice's connections to bob, made
        by the invitation handshake; bob is then closed, so what alice sends stays in his
        queues on the server (as the relay's forwards stay in offline members' queues)."""
        alice = open_client(self.directory, "plain-alice", [self.server])
        bob = open_client(self.directory, "plain-bob", [self.server])
        try:
            handshake = connect_all(alice, bob, count, "plain")
        finally:
            bob.close()
        # Alice's SENT events are taken and dropped: nothing else reads her event stream.
        self.plain = (alice, EventPump(alice, "plain-alice"))
        return {"conns": [a for a, _ in handshake.connections()]}

    def count(self, group_id: str) -> dict[str, Any]:
        totals = {
            "agent_connections": 0,
            "agent_messages": 0,
            "member_conns": 0,
            "chat_commands": 0,
        }
        for name in self.clients:
            uri = f"file:{self.path(name)}?mode=ro"
            with sqlite3.connect(uri, uri=True, timeout=30.0) as connection:
                connections, messages = connection.execute(
                    "SELECT count(*), coalesce(sum(snd_seq), 0) FROM agent_connection"
                ).fetchone()
                totals["agent_connections"] += connections
                totals["agent_messages"] += messages
                totals["member_conns"] += connection.execute(
                    "SELECT count(*) FROM chat_member WHERE group_id = ? AND conn_id IS NOT NULL",
                    (group_id,),
                ).fetchone()[0]
                totals["chat_commands"] += connection.execute(
                    "SELECT count(*) FROM chat_command"
                ).fetchone()[0]
            connection.close()
        totals["threads"] = threading.active_count()
        totals["rss_mb"] = round(psutil.Process().memory_info().rss / 2**20)
        return totals

    def commands(self, since: float) -> dict[str, Any]:
        """The chat commands stored at or after `since` (wall clock), by function: count,
        first and last ``created_at``."""
        found: dict[str, list[float]] = {}
        for name in self.clients:
            uri = f"file:{self.path(name)}?mode=ro"
            with sqlite3.connect(uri, uri=True, timeout=30.0) as connection:
                rows = connection.execute(
                    "SELECT function, count(*), min(created_at), max(created_at)"
                    " FROM chat_command WHERE created_at >= ? GROUP BY function",
                    (since,),
                ).fetchall()
            connection.close()
            for function, count, first, last in rows:
                if function in found:
                    n, f, la = found[function]
                    found[function] = [n + count, min(f, first), max(la, last)]
                else:
                    found[function] = [count, first, last]
        return {"commands": found}

    def close(self) -> None:
        self.stopping.set()
        for thread, _ in self.pumps.values():
            thread.join(2.0)
        for client in self.clients.values():
            with contextlib.suppress(Exception):  # closing at the end: nothing to save
                client.close()
        if self.plain is not None:
            alice, pump = self.plain
            with contextlib.suppress(Exception):
                pump.stop()
                alice.close()


def main(argv: list[str]) -> int:
    die_with_parent(parent_pid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C, then stops us
    worker = Worker(argv[0], Path(argv[1]))
    try:
        for line in sys.stdin:
            command = json.loads(line)
            request_id = command.pop("id")
            op = command.pop("op")
            try:
                reply = worker.handle(op, command)
            except Exception as exc:  # noqa: BLE001 (the parent raises it)
                _emit({"kind": "reply", "id": request_id, "error": repr(exc)})
                continue
            _emit({"kind": "reply", "id": request_id, **reply})
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
