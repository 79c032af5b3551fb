"""The queue server of `bench.server` and `bench.server_abuse`, run in its own child process.

Run: ``python -m bench._queue_server DB_URL [--quota N] [--config JSON]``. It starts a
`QueueServer` as ``duplex server`` does (TLS, the store on DB_URL, port chosen by the OS,
`ServerConfig` fields from ``--config``), prints its address as the first line on stdout,
and then answers each line on stdin with one JSON line on stdout:

- ``stats``: ``{"statements": s, "transactions": t, "commands": c, "sessions": n,
  "rss": bytes}`` — the store's SQL statements and transactions so far (`Database.counters`),
  the broker's commands, the live sessions, and the process's resident memory (psutil, 0
  without it).

It stops when its stdin reaches end of file (the parent closes it, or the kernel does when
the parent dies), so it never outlives the bench.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from protocol.server import QueueServer, ServerConfig


def _rss() -> int:
    try:
        import psutil
    except ImportError:
        return 0
    return int(psutil.Process().memory_info().rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._queue_server")
    parser.add_argument("db")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", default="{}", help="ServerConfig fields as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the server's warnings are expected here
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    config = ServerConfig(**json.loads(args.config))
    with QueueServer.start(args.db, host=args.host, port=0, config=config) as server:
        print(server.address, flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                counters = server.database.counters.snapshot()
                stats = {
                    "statements": counters.statements,
                    "transactions": counters.transactions,
                    "commands": server.broker.stats.commands,
                    "sessions": server.session_count,
                    "rss": _rss(),
                }
                print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
