"""The `Runtime`: one supervision tree with its directory, clock and I/O bridge.

A runtime is what an embedding program starts: `Runtime.start(children=[...])` builds the
root supervisor at address `name` (``client`` by default) with an `io` child in front of the
given children, and returns once the tree is running. From outside the actors, `tell` sends
a message to an address and `ask` waits for an answer with a timeout (the edges only: actors
never ask each other). `tree()` returns the supervision tree as nested `TreeNode`s.
An operator (the debug console) may `inspect`, `crash`, `restart` and `passivate` an actor:
each goes to the activation as a kernel message, so it takes the paths a real crash or an
idle passivation takes.
`shutdown()` stops the tree in reverse start order, cancels the trio tasks and leaves no
thread of the runtime running.

If the root supervisor itself gives up (its restart intensity escalated), the runtime is
`failed`: `failure` says why, and `shutdown()` still cleans up.

The kernel knows nothing of the layers above it: the `database` is anything with a
`transaction()` context manager (`TransactionalDatabase`), and the errors it raises are the
kernel's own (errors.py).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pykka

from actors.kernel.directory import ActorFactory, Directory, EntryState, EntryView
from actors.kernel.errors import ActorUnavailable, AskTimeout, IoError, NotApplicable
from actors.kernel.io import IoActor, IoBridge
from actors.kernel.messages import (
    Ask,
    ChildExited,
    CrashRequested,
    Inspect,
    IoResult,
    Passivate,
    RestartChild,
)
from actors.kernel.supervisor import (
    ChildSpec,
    Intensity,
    Strategy,
    Supervisor,
    VirtualSupervisor,
    supervisor_spec,
)
from actors.kernel.timers import Scheduler
from actors.kernel.tree import TreeNode

log = logging.getLogger(__name__)

_stack_size_lock = threading.Lock()


class TransactionalDatabase(Protocol):
    """What the kernel needs of a database: short transactions from any actor's thread."""

    def transaction(self) -> AbstractContextManager[Any]: ...


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Kernel settings; the defaults are what the README and bench/actors.py assume."""

    passivate_after: float = 60.0
    live_cap: int = 512
    max_attempts: int = 3
    ask_timeout: float = 10.0
    shutdown_timeout: float = 10.0
    thread_stack_size: int = 256 * 1024


class Runtime:
    """A running supervision tree; see the module docstring."""

    def __init__(
        self,
        name: str = "client",
        config: RuntimeConfig | None = None,
        database: TransactionalDatabase | None = None,
    ) -> None:
        self.name = name
        self.config = config or RuntimeConfig()
        self._database = database
        _lower_thread_stack_size(self.config.thread_stack_size)
        self.directory = Directory(self, live_cap=self.config.live_cap)
        self.scheduler = Scheduler(name=f"{name}-clock")
        self.failure: ChildExited | None = None
        self.failed = threading.Event()
        self._request_ids = itertools.count(1)
        self._io: IoBridge | None = None
        self._io_lock = threading.Lock()
        self._root_spec: ChildSpec | None = None
        # Singletons of the layers above the kernel (the agent's clients and event sink),
        # set before the tree starts so that every activation finds them.
        self.services: dict[str, Any] = {}
        self._stopped = False

    @classmethod
    def start(
        cls,
        children: Sequence[ChildSpec] = (),
        *,
        name: str = "client",
        strategy: Strategy = Strategy.ONE_FOR_ALL,
        intensity: Intensity = Intensity(),
        config: RuntimeConfig | None = None,
        database: TransactionalDatabase | None = None,
        services: dict[str, Any] | None = None,
        ready_timeout: float = 10.0,
        io_factory: ActorFactory = IoActor,
    ) -> Runtime:
        """Start a runtime whose root supervises `io` and then `children`, in that order.

        `database` is the store its actors load their state from and write it to; the
        runtime does not close it (whoever opened it does, after `shutdown`). `services`
        are the layers' singletons (see `services`), in place before any actor starts.
        """
        runtime = cls(name, config, database)
        runtime.services.update(services or {})
        runtime.boot(
            children,
            strategy=strategy,
            intensity=intensity,
            ready_timeout=ready_timeout,
            io_factory=io_factory,
        )
        return runtime

    def boot(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ALL,
        intensity: Intensity = Intensity(),
        ready_timeout: float = 10.0,
        io_factory: ActorFactory = IoActor,
    ) -> None:
        """Start the tree of a runtime built with the constructor; returns once it is up.

        Children start one after the other (see supervisor.py): `io` first, so that every
        other child may submit I/O from its `started()`. `io_factory` builds the `io` child
        (an `IoActor`, or a subclass of it: tests inject I/O thread failures that way).
        """
        spec = supervisor_spec(
            self.name, [ChildSpec("io", io_factory), *children], strategy, intensity
        )
        self._root_spec = spec
        self.directory.start(self.name, None, spec.factory)
        try:
            self.wait_until(self._tree_started, ready_timeout, "the supervision tree")
        except BaseException:
            self.shutdown()
            raise

    # ------------------------------------------------------------------ messaging at the edge

    def tell(self, address: str, message: Any) -> bool:
        """Send a message to an address; False if it became a dead letter."""
        return self.directory.tell(address, message)

    def ask(self, address: str, message: Any, timeout: float | None = None) -> Any:
        """Send `message` and wait for the handler's return value (or its exception)."""
        future: pykka.Future[Any] = pykka.ThreadingFuture()
        if not self.directory.tell(address, Ask(message, future)):
            raise ActorUnavailable(f"no actor at {address}")
        return self._answer(address, future, timeout)

    def _answer(self, address: str, future: pykka.Future[Any], timeout: float | None) -> Any:
        wait = self.config.ask_timeout if timeout is None else timeout
        try:
            return future.get(timeout=wait)
        except pykka.Timeout as exc:
            raise AskTimeout(f"{address} did not answer within {wait}s") from exc

    def next_request_id(self) -> int:
        """A fresh I/O request id, unique within this runtime."""
        return next(self._request_ids)

    def submit_io(
        self,
        reply_to: str,
        coroutine_fn: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
        request_id: int | None = None,
    ) -> int:
        """Run `coroutine_fn(*args)` on the I/O thread; exactly one `IoResult` with the
        returned id is told to `reply_to` (an `IoError` one if the thread is not running)."""
        if request_id is None:
            request_id = self.next_request_id()
        bridge = self._io
        if bridge is None:
            # The io actor is restarting: the requester sees a temporary failure and retries.
            error = IoError("I/O thread restarting")
            self.directory.tell(reply_to, IoResult(request_id, error=error))
            return request_id
        return bridge.submit(reply_to, coroutine_fn, *args, request_id=request_id)

    @property
    def io_running(self) -> bool:
        """Whether an I/O thread is attached (False while the io actor restarts)."""
        bridge = self._io
        return bridge is not None and bridge.alive

    @property
    def database(self) -> TransactionalDatabase:
        if self._database is None:
            raise ActorUnavailable("this runtime was started without a database")
        return self._database

    @property
    def io(self) -> IoBridge:
        bridge = self._io
        if bridge is None:
            raise ActorUnavailable("the I/O thread is not running")
        return bridge

    def attach_io(self, bridge: IoBridge) -> None:
        with self._io_lock:
            old, self._io = self._io, bridge
        if old is not None and old is not bridge:
            old.stop()  # left behind by an io activation that crashed

    def detach_io(self, bridge: IoBridge) -> None:
        with self._io_lock:
            if self._io is bridge:
                self._io = None

    # ------------------------------------------------------------------ the tree

    def tree(self, passivated: bool = False) -> TreeNode:
        """A snapshot of the whole supervision tree (live actors and their counters); with
        `passivated`, the virtual actors the directory remembers as passivated too."""
        return self._node(self.name, passivated)

    def _node(self, address: str, passivated: bool = False) -> TreeNode:
        view = self.directory.view(address)
        if view is None:
            return TreeNode(address=address, kind="?", status="down")
        actor = view.actor
        children: list[TreeNode] = []
        if isinstance(actor, Supervisor):
            children = [self._node(child, passivated) for child in actor.child_addresses]
        elif isinstance(actor, VirtualSupervisor):
            children = [_leaf(v) for v in self.directory.virtual_children(address)]
            if passivated:
                present = {child.address for child in children}
                children += [
                    TreeNode(address=a, kind=kind, status="passivated")
                    for a, kind in self.directory.passivated(address)
                    if a not in present
                ]
            children.sort(key=lambda child: child.address)
        node = _leaf(view)
        node.children = children
        return node

    # ------------------------------------------------------------------ operator commands

    def inspect(self, address: str, timeout: float | None = None) -> dict[str, Any]:
        """What the live activation at `address` says of itself (`Actor.describe`), asked
        on its own thread; `AskTimeout` if it is busy for longer than `timeout`."""
        self._live_view(address)
        future: pykka.Future[Any] = pykka.ThreadingFuture()
        # Only a live activation is asked: looking must not activate a passivated actor.
        if not self.directory.tell_live(address, Ask(Inspect(), future)):
            raise ActorUnavailable(f"no live actor at {address}")
        return self._answer(address, future, timeout)

    def crash(self, address: str, reason: str = "crashed on request") -> None:
        """Crash the live activation at `address`, as an exception in its handler would:
        its supervisor restarts it. Not the root (that would fail the runtime)."""
        self._live_view(address, not_root="crashing the root supervisor fails the runtime")
        if not self.directory.tell_live(address, CrashRequested(reason)):
            raise ActorUnavailable(f"no live actor at {address}")

    def restart(self, address: str) -> None:
        """Stop the activation at `address` cleanly and start a fresh one (counted in its
        restarts; its siblings keep running, nothing counts as a crash). A virtual actor
        is restarted here, whatever its `may_passivate` says (as a crash would), so this
        blocks until it stopped: call it from the edge, never from an actor."""
        view = self._live_view(address, not_root="the root supervisor is the runtime")
        assert view.actor is not None
        ctx = view.actor.ctx
        if ctx.virtual:
            if not self.directory.restart_virtual(address):
                raise ActorUnavailable(f"no live actor at {address}")
        elif ctx.parent is not None:
            self.directory.tell(ctx.parent, RestartChild(address))

    def passivate(self, address: str) -> None:
        """Ask the live virtual actor at `address` to passivate; it stays if it may not
        (`may_passivate`: work in progress), as it would when idle."""
        view = self._live_view(address)
        assert view.actor is not None
        if not view.actor.ctx.virtual:
            raise NotApplicable(f"{address} is a supervised actor, not a virtual one")
        self.directory.tell(address, Passivate(Passivate.REQUESTED))

    def _live_view(self, address: str, not_root: str | None = None) -> EntryView:
        if not_root is not None and address == self.name:
            raise NotApplicable(not_root)
        view = self.directory.view(address)
        if view is None or view.actor is None:
            raise ActorUnavailable(f"no live actor at {address}")
        return view

    # ------------------------------------------------------------------ lifecycle

    def _tree_started(self, address: str | None = None) -> bool:
        """Whether every supervised actor below `address` is ready (its `started()`
        returned and, for a supervisor, its children are ready)."""
        view = self.directory.view(address or self.name)
        actor = view.actor if view is not None else None
        if actor is None or not actor.is_ready:
            return False
        if isinstance(actor, Supervisor):
            return all(self._tree_started(child) for child in actor.running_children)
        return True

    def root_exited(self, notice: ChildExited) -> None:
        """The root supervisor crashed (escalation): the runtime has failed."""
        log.critical("the root supervisor gave up", extra={"error": notice.error})
        self.failure = notice
        self.failed.set()

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.failed.is_set():
                raise ActorUnavailable(f"the runtime failed: {self.failure}")
            if time.monotonic() > deadline:
                raise AskTimeout(f"{what} not ready within {timeout}s")
            time.sleep(0.005)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the whole tree (children before parents, reverse start order), then the
        I/O thread and the clock. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        wait = self.config.shutdown_timeout if timeout is None else timeout
        self.directory.close()
        self.directory.stop(self.name, wait)
        for actor in self.directory.live_actors():  # orphans of a crashed supervisor
            self.directory.stop(actor.address, wait)
        with self._io_lock:
            bridge, self._io = self._io, None
        if bridge is not None:
            bridge.stop(wait)
        self.scheduler.stop(wait)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def _leaf(view: EntryView) -> TreeNode:
    snapshot = view.actor.snapshot() if view.actor is not None else {}
    status = (
        view.state.value
        if view.actor is not None or view.state is not EntryState.ACTIVE
        else "down"
    )
    return TreeNode(
        address=view.address,
        kind=snapshot.get("kind", "?"),
        status=status,
        state=snapshot.get("state", {}),
        mailbox=snapshot.get("mailbox", 0) + view.buffered,
        handled=snapshot.get("handled", 0),
        activation=snapshot.get("activation", 0),
        restarts=view.restarts,
        last_error=view.last_error,
        work_item=snapshot.get("work_item"),
    )


def _lower_thread_stack_size(size: int) -> None:
    # Process-wide: every thread started afterwards (pykka's included) reserves `size`
    # bytes of stack instead of 8 MiB; only ever lowered, never raised back.
    with _stack_size_lock:
        current = threading.stack_size()
        if current == 0 or current > size:
            threading.stack_size(size)
