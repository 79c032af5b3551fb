"""The traffic of `bench.messaging`: alice sends numbered messages to bob, who acks each one.

`Agents` drives two `Client`s over their connections and records, for each run, when bob's
event thread took each `MSG` (``perf_counter()``). Every body starts with `HEADER` (the run
and the message number), so bob can tell a duplicate, a message of another run or a bad
integrity flag, any of which fails the run. Bob acks every `MSG` with `ack_message_async`
(a unique corr id) and acknowledges the `OK` completion with `ack_command_event`, as a chat
must; a run is finished once bob has every message and every `OK`, and alice every `SENT`.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from actors.agent import events as ev
from actors.client import Client
from bench._agents import EventPump, wait_until
from bench._report import rate
from bench.limits import MESSAGE_BYTES

WAIT_TIMEOUT = 180.0  # a run that takes this long is broken, not slow
HEADER = struct.Struct(">II")  # run, message number: the first bytes of every body


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
