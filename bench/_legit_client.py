"""The legitimate client of `bench.server_abuse`, run in its own child process.

Run: ``python -m bench._legit_client ADDRESS [PAUSE_S]``. It creates one queue and then, until
its stdin reaches end of file, does SEND→GET→ACK cycles on it, one every PAUSE_S seconds
(default 0.02), timing each from the SEND to the ACK's reply. Each line ``report`` on stdin
is answered with one JSON line: ``{"count": n, "p50": s, "p99": s, "max": s, "errors": e}``
over the cycles since the previous report (seconds). A cycle that fails (a timeout, a lost
connection: the client reconnects by itself) counts as an error and as a cycle of its
duration, so an attack that stalls the client shows in the figures.
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import time

import trio

from protocol import crypto
from protocol.address import ServerAddress
from protocol.client import ClientConfig, QueueClient
from protocol.errors import QueueFault
from protocol.queue import Ack, Get, Ids, Msg, New, Ok, QueueMode, Send

CONFIG = ClientConfig(command_timeout=10.0, connect_timeout=10.0, ping_interval=600.0)


async def _main(address: ServerAddress, pause: float) -> None:
    latencies: list[float] = []
    errors = 0
    async with trio.open_nursery() as nursery:
        client = QueueClient(address, nursery, config=CONFIG)
        auth, dh = crypto.SigningKey.generate(), crypto.DhKey.generate()
        ids = await client.request(New(auth.public, dh.public, QueueMode.MESSAGING), key=auth)
        assert isinstance(ids, Ids)

        async def cycles() -> None:
            nonlocal errors
            while True:
                started = time.perf_counter()
                try:
                    await client.request(Send(0, b"legitimate"), entity_id=ids.snd_id)
                    message = await client.request(Get(), entity_id=ids.rcv_id, key=auth)
                    if isinstance(message, Msg):
                        reply = await client.request(
                            Ack(message.msg_id), entity_id=ids.rcv_id, key=auth
                        )
                        if reply != Ok():
                            errors += 1
                    else:
                        errors += 1
                except QueueFault:
                    errors += 1
                latencies.append(time.perf_counter() - started)
                await trio.sleep(pause)

        nursery.start_soon(cycles)
        print(json.dumps({"ready": True}), flush=True)
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                break
            taken, latencies[:] = list(latencies), []
            report = {"count": len(taken), "errors": errors, "p50": 0.0, "p99": 0.0, "max": 0.0}
            errors = 0
            if taken:
                report["p50"] = statistics.median(taken)
                report["max"] = max(taken)
                report["p99"] = (
                    statistics.quantiles(taken, n=100)[98] if len(taken) > 1 else taken[0]
                )
            print(json.dumps(report), flush=True)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m bench._legit_client ADDRESS [PAUSE_S]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    pause = float(args[1]) if len(args) == 2 else 0.02
    trio.run(_main, ServerAddress.parse(args[0]), pause)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
