"""A member's chat client in a process of its own, for the act where a whole client is killed
with SIGKILL (acts.py `client_killed`).

The demo (`MemberProcess`) starts ``python -c 'from actors.demo.child import main; …' SPEC``:
the child opens the member's SQLite file in the demo's work directory on the same servers,
cuts its network to the servers in `cut` (their sessions paused: every request fails at
once), writes `text` to the group and waits until that message waits in its database for
the connection `held` (the one whose queue is on a cut server) and went out on the others.
It then prints one JSON line, its report, and blocks reading its stdin: the demo kills it
with SIGKILL there, with the delivery still pending. The child never closes its client
unless the demo goes away first (its stdin ends) or never kills it.

Ctrl-C at a terminal reaches the whole process group: the child ignores SIGINT, and the demo
ends it itself (`MemberProcess.kill`, also when the act is interrupted).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from actors.agent.sessions import DropConnection, session_address
from actors.chat_client import ChatClient
from actors.demo.stage import DEMO_AGENT, WAIT, until

# The child's entry point: `-c` rather than `-m actors.demo.child`, which would run this
# module a second time as __main__ after the package (actors/demo/__init__.py) imported it.
_ENTRY = "import sys; from actors.demo.child import main; sys.exit(main(sys.argv[1]))"


def main(spec_json: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = json.loads(spec_json)
    chat = ChatClient.open(spec["db"], spec["servers"], name=spec["name"], config=DEMO_AGENT)
    try:
        report: dict[str, Any] = {"pid": os.getpid()}
        for server in spec["cut"]:
            chat.runtime.tell(session_address(server), DropConnection(pause=True))

        def paused() -> bool:
            tree = chat.tree()
            return all(
                (node := tree.find(session_address(server))) is not None
                and node.state.get("paused") is True
                for server in spec["cut"]
            )

        report["paused"] = until(paused, timeout=WAIT)
        report["msg_id"] = chat.send_group_message(spec["group_id"], spec["text"])

        def pending() -> dict[str, int]:
            """Messages waiting in each member connection's outbox (-1: no such connection)."""
            now = {}
            for conn in spec["conns"]:
                status = chat.agent.connection_status(conn)
                now[conn] = status.pending_messages if status is not None else -1
            return now

        def held_back() -> bool:
            now = pending()
            return all(n == (1 if conn == spec["held"] else 0) for conn, n in now.items())

        report["held"] = until(held_back, timeout=WAIT)
        report["pending"] = pending()
        print(json.dumps(report), flush=True)
        sys.stdin.read()  # the demo kills us here; an end of input means it went away
    finally:
        chat.close()
    return 0


class MemberProcess:
    """The demo's side: start the child, read its report, kill it with SIGKILL. As a context
    manager, the child is killed on the way out whatever happened (Ctrl-C included)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        # stderr in a file: no pipe to fill, nothing left behind (closed by `close`)
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.child = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def running(self) -> bool:
        return self.child.poll() is None

    def report(self, timeout: float = WAIT) -> dict[str, Any] | None:
        """The child's report line, or None if it ended or said nothing within `timeout`."""
        assert self.child.stdout is not None
        fd = self.child.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            report = json.loads(line)
        except ValueError:
            return None
        return report if isinstance(report, dict) else None

    def kill(self, timeout: float = 10.0) -> int | None:
        """SIGKILL it (if it still runs) and wait; its exit status (None if it lingers).
        A negative status is the signal that ended it."""
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGKILL)
        try:
            return self.child.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            for stream in (self.child.stdin, self.child.stdout):
                if stream is not None and not stream.closed:
                    stream.close()

    def stderr_tail(self, lines: int = 3) -> str:
        """The last lines the child wrote on stderr (why it failed, when it did)."""
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        return " | ".join(text.splitlines()[-lines:])

    def close(self) -> None:
        self.kill()
        self._stderr.close()

    def __enter__(self) -> MemberProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
