"""`RuntimeTarget`: an actor runtime as a debug endpoint shows and drives it.

Owns what the endpoint streams of a runtime (its supervision tree, passivated virtual
actors included, and the directory's counters) and how each command maps onto the kernel's
operator commands (`Runtime.inspect`, `crash`, `restart`, `passivate`) and, for a
queue-server session actor, onto its fault drills (`DropConnection`, `ResumeConnection`).
Whatever a command raises becomes a `Refused` with the code that says why.
"""

from __future__ import annotations

import logging

from actors.agent.sessions import SERVERS, DropConnection, ResumeConnection
from actors.debug.target import Reply, TargetView
from actors.debug.wire import (
    Command,
    CrashActor,
    Done,
    DropSession,
    InspectActor,
    Inspection,
    PassivateActor,
    RefusalCode,
    Refused,
    RestartActor,
    ResumeSession,
)
from actors.kernel import ActorUnavailable, AskTimeout, NotApplicable, Runtime

log = logging.getLogger(__name__)


class RuntimeTarget:
    """A `DebugTarget` over one runtime; see the module docstring."""

    def __init__(self, runtime: Runtime, *, inspect_timeout: float = 2.0) -> None:
        self.runtime = runtime
        self.inspect_timeout = inspect_timeout

    @property
    def name(self) -> str:
        return self.runtime.name

    def snapshot(self) -> TargetView:
        counters = dict.fromkeys(("activations", "crashes", "passivations", "dead_letters"), 0)
        counters.update(self.runtime.directory.counters)
        counters["live_virtual"] = self.runtime.directory.live_virtual()
        return TargetView(self.runtime.tree(passivated=True), counters)

    def execute(self, command: Command) -> Reply:
        """Run one command against the runtime; every outcome is a typed reply."""
        runtime = self.runtime
        try:
            match command:
                case InspectActor(id=i, address=address):
                    return self._inspect(i, address)
                case CrashActor(id=i, address=address):
                    runtime.crash(address, "crashed on purpose from the debug console")
                    return Done(i, address, "crashed: its supervisor restarts it")
                case RestartActor(id=i, address=address):
                    runtime.restart(address)
                    return Done(i, address, "restarting: a clean stop and a fresh activation")
                case PassivateActor(id=i, address=address):
                    runtime.passivate(address)
                    return Done(i, address, "asked to passivate (it stays while it has work)")
                case DropSession(id=i, address=address, pause=pause):
                    self._session(address)
                    runtime.tell(address, DropConnection(pause))
                    detail = "paused until resumed" if pause else "dropped: it reconnects"
                    return Done(i, address, f"connection {detail}")
                case ResumeSession(id=i, address=address):
                    self._session(address)
                    runtime.tell(address, ResumeConnection())
                    return Done(i, address, "connection resumed")
        except NotApplicable as exc:
            return Refused(command.id, RefusalCode.NOT_APPLICABLE, str(exc))
        except ActorUnavailable as exc:
            return Refused(command.id, RefusalCode.NO_ACTOR, str(exc))
        except AskTimeout as exc:
            return Refused(command.id, RefusalCode.BUSY, str(exc))
        except Exception as exc:  # a command must never end the endpoint
            log.exception("debug command failed", extra={"command": repr(command)})
            return Refused(command.id, RefusalCode.FAILED, repr(exc))
        raise AssertionError(f"unhandled command {command!r}")  # the union is matched whole

    def _inspect(self, command_id: int, address: str) -> Reply:
        node = self.runtime.tree(passivated=True).find(address)
        if node is None:
            return Refused(command_id, RefusalCode.NO_ACTOR, f"no actor at {address}")
        seen = node.as_dict()
        del seen["children"]
        if node.status != "live":  # passivated or between activations: what is known of it
            return Inspection(command_id, address, node.status, seen)
        try:
            description = self.runtime.inspect(address, timeout=self.inspect_timeout)
        except ActorUnavailable:  # it stopped meanwhile
            return Inspection(command_id, address, node.status, seen)
        return Inspection(command_id, address, node.status, {**seen, **description})

    def _session(self, address: str) -> None:
        node = self.runtime.tree(passivated=True).find(address)
        if node is None:
            raise ActorUnavailable(f"no actor at {address}")
        if node.kind != "server-session" or not address.startswith(SERVERS + "/"):
            raise NotApplicable(f"{address} is not a queue-server session ({node.kind})")
