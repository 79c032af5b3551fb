"""The two queue clients of `bench.server`, each run in its own child process.

Run: ``python -m bench._queue_peer recipient|sender ADDRESS``. ADDRESS is the queue server's
``duplex://…`` address (TLS, pinned fingerprint). The peer reads one JSON command per line on
stdin and answers with JSON lines on stdout; everything else (tracebacks) goes to stderr.
Times are ``time.time()`` (the same clock for every process of this machine) so the parent can
measure from the sender's first SEND to the recipient's last ACK reply.

Recipient (one `QueueClient`, one session, every queue subscribed on it):

- ``{"op": "create", "queues": N}`` creates N messaging queues with ``NEW … subscribe``
  (pipelined) and answers ``{"snd_ids": [hex, …]}``.
- ``{"op": "expect", "run": R, "messages": M}`` arms a run and answers ``{"armed": R}``. Every
  `MSG` pushed to the session (a push after a SEND, or the reply to an ACK: the client routes
  both to `on_push`, and only there are they counted) is opened with the queue's
  server→recipient key and ACKed; when the M-th message of run R has been ACKed (the ACK's
  reply received) the recipient prints ``{"run": R, "first_msg": t, "last_ack": t, "markers":
  k, "duplicates": d, "foreign": f}``. Quota markers are ACKed and counted, not taken for
  messages; a message whose body names another run, or a number seen before, is counted as
  ``foreign`` / ``duplicates`` (both 0 in a correct run).

Sender (one `QueueClient`, one session):

- ``{"op": "secure", "snd_ids": [hex, …]}`` secures each queue with a fresh sender key (SKEY,
  signed by that key) and answers ``{"secured": n}``; the group is kept for ``send``.
- ``{"op": "send", "run": R, "group": G, "messages": M, "window": W, "body_bytes": B}`` sends
  M signed SENDs of B bytes round-robin over secured group G (0 = the first ``secure``), at
  most W outstanding at once, and answers ``{"first_send": t, "last_ok": t,
  "quota_retries": q}``. ``ERR QUOTA`` (the queue is full: the server stored its quota marker,
  or one already waits) pauses that queue: one SEND probes with a growing delay
  (`PROBE_DELAYS`) until it is accepted, the others wait for it, and each QUOTA answer is
  counted. A real agent would wait for its peer's QCONT instead; the probe is the bench's
  stand-in.

A peer stops when its stdin reaches end of file (the parent closes it, or the kernel does
when the parent dies), so it never outlives the bench; Ctrl-C is left to the parent.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from protocol import crypto
from protocol.address import ServerAddress
from protocol.client import ClientConfig, QueueClient
from protocol.errors import ServerError
from protocol.queue import (
    Ack,
    Ids,
    Msg,
    MsgFlag,
    New,
    QueueMode,
    Reply,
    Send,
    SKey,
    decode_content,
)

# Generous: a command that waits this long means the bench is broken, not slow.
CONFIG = ClientConfig(command_timeout=60.0, connect_timeout=30.0, ping_interval=600.0)
PROBE_DELAYS = (0.002, 0.004, 0.008, 0.016)  # then the last one again, until accepted
HEADER = struct.Struct(">II")  # run, message number: the first bytes of every body


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- recipient


@dataclass(slots=True)
class Inbound:
    auth: crypto.SigningKey
    box_key: bytes  # the server→recipient key that opens this queue's MSG bodies


@dataclass(slots=True)
class Run:
    run: int
    messages: int
    seen: bytearray
    acked: int = 0
    markers: int = 0
    duplicates: int = 0
    foreign: int = 0
    first_msg: float = 0.0


class Recipient:
    def __init__(self, nursery: trio.Nursery, address: ServerAddress) -> None:
        self._nursery = nursery
        self.client = QueueClient(address, nursery, on_push=self._push, config=CONFIG)
        self.queues: dict[bytes, Inbound] = {}
        self.run: Run | None = None

    async def create(self, count: int) -> list[str]:
        snd_ids: list[str] = [""] * count

        async def one(i: int) -> None:
            auth, dh = crypto.SigningKey.generate(), crypto.DhKey.generate()
            command = New(auth.public, dh.public, QueueMode.MESSAGING, subscribe=True)
            ids = await self.client.request(command, key=auth)
            assert isinstance(ids, Ids)
            self.queues[ids.rcv_id] = Inbound(auth, crypto.server_recipient_key(ids.srv_dh_key, dh))
            snd_ids[i] = ids.snd_id.hex()

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
        return snd_ids

    def expect(self, run: int, messages: int) -> None:
        self.run = Run(run, messages, bytearray(messages))

    def _push(self, rcv_id: bytes, reply: Reply) -> None:
        # Every MSG of a subscribed queue arrives here exactly once, pushed or as an ACK's
        # reply; the ACK's own return value is therefore ignored below.
        if isinstance(reply, Msg):
            self._nursery.start_soon(self._receive, rcv_id, reply)

    async def _receive(self, rcv_id: bytes, message: Msg) -> None:
        inbound = self.queues[rcv_id]
        content = decode_content(
            crypto.open_with_id(inbound.box_key, message.msg_id, message.enc_body)
        )
        run = self.run
        if run is not None and not run.first_msg:
            run.first_msg = time.time()
        await self.client.request(Ack(message.msg_id), entity_id=rcv_id, key=inbound.auth)
        if run is None or run is not self.run:
            return  # between runs (nothing is sent then): acked, not counted
        if content.flags & MsgFlag.QUOTA_MARKER:
            run.markers += 1
            return
        number_of_run, number = HEADER.unpack_from(content.body)
        if number_of_run != run.run or number >= run.messages:
            run.foreign += 1
            return
        if run.seen[number]:
            run.duplicates += 1
            return
        run.seen[number] = 1
        run.acked += 1
        if run.acked == run.messages:
            emit(
                {
                    "run": run.run,
                    "first_msg": run.first_msg,
                    "last_ack": time.time(),
                    "markers": run.markers,
                    "duplicates": run.duplicates,
                    "foreign": run.foreign,
                }
            )


# ---------------------------------------------------------------------------- sender


@dataclass(slots=True)
class Outbound:
    snd_id: bytes
    key: crypto.SigningKey
    reopened: trio.Event | None = None  # set while the queue answers QUOTA (one probe runs)


@dataclass(slots=True)
class Sender:
    client: QueueClient
    groups: list[list[Outbound]] = field(default_factory=list)
    quota_retries: int = 0

    async def secure(self, snd_ids: list[bytes]) -> int:
        group = [Outbound(snd_id, crypto.SigningKey.generate()) for snd_id in snd_ids]

        async def one(lane: Outbound) -> None:
            await self.client.request(SKey(lane.key.public), entity_id=lane.snd_id, key=lane.key)

        async with trio.open_nursery() as nursery:
            for lane in group:
                nursery.start_soon(one, lane)
        self.groups.append(group)
        return len(group)

    async def send(
        self, run: int, group: int, messages: int, window: int, body_bytes: int
    ) -> dict[str, Any]:
        lanes = self.groups[group]
        padding = os.urandom(max(0, body_bytes - HEADER.size))
        slots = trio.Semaphore(window)
        self.quota_retries = 0

        async def one(number: int) -> None:
            try:
                body = HEADER.pack(run, number) + padding
                await self._send(lanes[number % len(lanes)], body)
            finally:
                slots.release()

        first_send = time.time()
        async with trio.open_nursery() as nursery:
            for number in range(messages):
                await slots.acquire()
                nursery.start_soon(one, number)
        return {
            "first_send": first_send,
            "last_ok": time.time(),
            "quota_retries": self.quota_retries,
        }

    async def _send(self, lane: Outbound, body: bytes) -> None:
        while True:
            while lane.reopened is not None:
                await lane.reopened.wait()
            if await self._try_send(lane, body):
                return

    async def _try_send(self, lane: Outbound, body: bytes) -> bool:
        """One SEND; on QUOTA the first task to see it probes until the queue takes it."""
        try:
            await self.client.request(Send(0, body), entity_id=lane.snd_id, key=lane.key)
            return True
        except ServerError as exc:
            if exc.code != "QUOTA":
                raise
            self.quota_retries += 1
        if lane.reopened is not None:
            return False  # someone else probes: wait for it, then send again
        reopened = lane.reopened = trio.Event()
        try:
            for attempt in range(sys.maxsize):
                await trio.sleep(PROBE_DELAYS[min(attempt, len(PROBE_DELAYS) - 1)])
                try:
                    await self.client.request(Send(0, body), entity_id=lane.snd_id, key=lane.key)
                    return True
                except ServerError as exc:
                    if exc.code != "QUOTA":
                        raise
                    self.quota_retries += 1
            return False  # pragma: no cover (the loop only ends by returning or raising)
        finally:
            lane.reopened = None
            reopened.set()


# ---------------------------------------------------------------------------- main


async def _commands(role: str, address: ServerAddress) -> None:
    async with trio.open_nursery() as nursery:
        recipient = Recipient(nursery, address) if role == "recipient" else None
        sender = Sender(QueueClient(address, nursery, config=CONFIG)) if role == "sender" else None
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                break  # end of file: the parent is done (or gone)
            command = json.loads(line)
            op = command["op"]
            if recipient is not None and op == "create":
                emit({"snd_ids": await recipient.create(int(command["queues"]))})
            elif recipient is not None and op == "expect":
                recipient.expect(int(command["run"]), int(command["messages"]))
                emit({"armed": command["run"]})
            elif sender is not None and op == "secure":
                snd_ids = [bytes.fromhex(snd_id) for snd_id in command["snd_ids"]]
                emit({"secured": await sender.secure(snd_ids)})
            elif sender is not None and op == "send":
                emit(
                    await sender.send(
                        int(command["run"]),
                        int(command["group"]),
                        int(command["messages"]),
                        int(command["window"]),
                        int(command["body_bytes"]),
                    )
                )
            else:
                raise ValueError(f"{role} does not know {op!r}")
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("recipient", "sender"):
        print("usage: python -m bench._queue_peer recipient|sender ADDRESS", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C, then closes stdin
    trio.run(_commands, args[0], ServerAddress.parse(args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
