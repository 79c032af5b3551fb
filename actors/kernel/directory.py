"""The directory: addresses → live activations, with virtual actors and buffering.

Theory of operation
-------------------
Every message in the runtime is told to an *address* through `Directory.tell`. An address
has at most one `_Entry`, in one of three states:

* ``ACTIVE``   an activation is running; the message goes into its pykka mailbox.
* ``PENDING``  the address is between activations (it crashed and waits for its supervisor,
  its supervisor is restarting it, or it is reserved and waits for its turn to start);
  the message waits in the entry's buffer.
* ``STOPPING`` a virtual actor is passivating; the message waits in the buffer and the
  actor is activated again, buffer first, as soon as the old activation has stopped.

All transitions happen under one lock that `tell` also takes, so a message is never put
into a mailbox that is about to be abandoned: when an activation crashes, the messages left
in its mailbox are moved to the front of the buffer, and the next activation gets the buffer
in order before anything newer. An address with no entry is either a *virtual* kind's child
(`register_kind`), which is activated on the spot, or below an address that is reserved but
was never activated yet (a later child of a supervisor that starts its children in order:
it may turn out to be the supervisor of a virtual kind), where the message is held until
that ancestor activates and then told again, or unknown, and the message becomes a dead
letter (counted and logged, never raised at the sender; an `Ask` fails at once with
`ActorUnavailable` instead of timing out).

Nothing is dropped between activations: a crashed activation's mailbox and whatever was
told to an activation after it asked to stop (pykka drops that) go back to the buffer, in
order, ahead of newer messages.

Virtual actors are passivated when idle (the actor's own timer) and when more than
`live_cap` of them are alive: the least recently used one that agrees is asked to stop. A
passivated actor has no entry; the last `PASSIVATED_KEPT` of them are remembered (address
and kind) until they activate again, so that the tree can show them (`passivated`).
The directory also keeps the crash ledger that `Actor.run_work_item` uses for dead letters.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pykka

from actors.kernel.actor import Actor, ActorContext
from actors.kernel.errors import ActorUnavailable
from actors.kernel.messages import Ask, ChildExited, ExitReason, Passivate

if TYPE_CHECKING:
    from actors.kernel.runtime import Runtime

log = logging.getLogger(__name__)

ActorFactory = Callable[[ActorContext], Actor]

PASSIVATED_KEPT = 1024


class EntryState(enum.Enum):
    ACTIVE = "live"
    PENDING = "restarting"
    STOPPING = "passivating"


@dataclass(frozen=True, slots=True)
class VirtualKind:
    """A family of virtual actors: every address `<supervisor>/<key>` is activated on demand."""

    supervisor: str
    factory: ActorFactory
    passivate_after: float | None


@dataclass(eq=False, slots=True)
class _Entry:
    address: str
    parent: str | None
    factory: ActorFactory
    virtual: bool
    passivate_after: float | None = None
    state: EntryState = EntryState.PENDING
    actor: Actor | None = None
    buffer: deque[Any] = field(default_factory=deque)
    activations: int = 0
    restarts: int = 0
    crashed: bool = False
    supervised_stop: bool = False
    last_error: str | None = None
    urn: str | None = None  # of the current or last activation
    ever_active: bool = False
    start_requested: bool = False  # start() came while the old activation still stopped


@dataclass(frozen=True, slots=True)
class EntryView:
    """A copy of an entry's bookkeeping for the tree, taken under the lock."""

    address: str
    state: EntryState
    actor: Actor | None
    buffered: int
    restarts: int
    last_error: str | None
    urn: str | None = None


class Directory:
    """Maps addresses to activations; see the module docstring."""

    def __init__(self, runtime: Runtime, *, live_cap: int) -> None:
        self._runtime = runtime
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._kinds: dict[str, VirtualKind] = {}
        self._lru: OrderedDict[str, None] = OrderedDict()
        self._evicting: set[str] = set()
        self._crashes: dict[tuple[str, str], tuple[int, str | None]] = {}
        # Messages to unknown addresses below a reserved, never activated ancestor.
        self._held: dict[str, deque[tuple[str, Any]]] = {}
        self.live_cap = live_cap
        self.closed = False
        self.counters: Counter[str] = Counter()
        self.recent_dead_letters: deque[tuple[str, str]] = deque(maxlen=100)
        self._passivated: OrderedDict[str, str] = OrderedDict()  # address → kind

    # ------------------------------------------------------------------ delivery

    def tell(self, address: str, message: Any) -> bool:
        """Deliver, buffer, or activate; False when the message became a dead letter."""
        with self._lock:
            entry = self._entries.get(address)
            if entry is None:
                kind = None if self.closed else self._kinds.get(address.rpartition("/")[0])
                if kind is None:
                    holder = self._holder(address)
                    if holder is not None:
                        self._held.setdefault(holder, deque()).append((address, message))
                        return True
                    self._dead_letter(address, message, "no actor at this address")
                    return False
                entry = _Entry(
                    address,
                    kind.supervisor,
                    kind.factory,
                    virtual=True,
                    passivate_after=kind.passivate_after,
                )
                self._entries[address] = entry
                entry.buffer.append(message)
                self._activate(entry)
                return True
            if entry.state is EntryState.ACTIVE:
                assert entry.actor is not None
                try:
                    entry.actor.actor_ref.tell(message)
                except pykka.ActorDeadError:
                    # It crashed or stopped and has not moved its mailbox here yet
                    # (actor_crashed / actor_stopped); that move puts the older messages
                    # in front of this one.
                    entry.buffer.append(message)
                    return True
                if entry.virtual:
                    self._lru.move_to_end(address)
                return True
            entry.buffer.append(message)
            return True

    def tell_live(self, address: str, message: Any) -> bool:
        """Deliver to the live activation at `address` only: never activate, never buffer
        for a next activation; False if there is none (or it is stopping)."""
        with self._lock:
            entry = self._entries.get(address)
            if entry is None or entry.state is not EntryState.ACTIVE or entry.actor is None:
                return False
            try:
                entry.actor.actor_ref.tell(message)
            except pykka.ActorDeadError:
                return False
            return True

    # ------------------------------------------------------------------ lifecycle

    def register_kind(self, kind: VirtualKind) -> None:
        with self._lock:
            self._kinds[kind.supervisor] = kind

    def reserve(self, address: str, parent: str | None, factory: ActorFactory) -> None:
        """Give a supervised actor that will start later an entry now, so that messages
        told to it (or below it) meanwhile wait for it instead of becoming dead letters."""
        with self._lock:
            entry = self._entries.get(address)
            if entry is None:
                self._entries[address] = _Entry(address, parent, factory, virtual=False)
            elif not entry.virtual:
                entry.factory, entry.parent = factory, parent

    def start(self, address: str, parent: str | None, factory: ActorFactory) -> Actor | None:
        """Start a supervised (non-virtual) actor, replacing a live activation if any.

        Returns the new activation, or None when there is none yet: its constructor failed
        (its supervisor is told `ChildExited`), the runtime is shutting down, or the old
        activation did not stop in time (the new one starts as soon as it has).
        """
        with self._lock:
            if self.closed:
                return None
            entry = self._entries.get(address)
            old = entry.actor if entry is not None else None
        if old is not None:
            self.stop(address)
        with self._lock:
            if self.closed:
                return None
            entry = self._entries.get(address)
            if entry is None:
                entry = _Entry(address, parent, factory, virtual=False)
                self._entries[address] = entry
            entry.factory, entry.parent = factory, parent
            if entry.actor is None:
                self._activate(entry)
                return entry.actor
            entry.start_requested = True
            log.error("the old activation is still stopping", extra={"address": address})
            return None

    def restart(self, address: str) -> None:
        """Activate a crashed virtual actor again (its supervisor's decision)."""
        with self._lock:
            entry = self._entries.get(address)
            if entry is not None and entry.actor is None and not self.closed:
                self._activate(entry)

    def stop(self, address: str, timeout: float = 10.0) -> None:
        """Stop the activation at `address` cleanly and wait for it; later messages wait."""
        with self._lock:
            entry = self._entries.get(address)
            if entry is None or entry.actor is None:
                return
            actor = entry.actor
            entry.state = EntryState.STOPPING if entry.virtual else EntryState.PENDING
            entry.supervised_stop = True
            self._forget_live(address)
        self._await_stop([actor.actor_ref.stop(block=False)], timeout)

    def restart_virtual(self, address: str, timeout: float = 10.0) -> bool:
        """Stop a live virtual actor cleanly and activate it again at once (an operator's
        restart: counted in `restarts`); False if it is not a live virtual actor. Blocks
        until the old activation stopped: not for an actor's own thread."""
        with self._lock:
            entry = self._entries.get(address)
            if entry is None or not entry.virtual or entry.actor is None:
                return False
            entry.start_requested = True
        self.stop(address, timeout)
        return True

    def stop_children_of(self, supervisor: str, timeout: float = 10.0) -> None:
        """Stop every live virtual actor of a kind at once (its supervisor is stopping)."""
        futures = []
        with self._lock:
            prefix = supervisor + "/"
            for address, entry in self._entries.items():
                if entry.virtual and entry.actor is not None and address.startswith(prefix):
                    entry.state = EntryState.STOPPING
                    entry.supervised_stop = True
                    self._forget_live(address)
                    futures.append(entry.actor.actor_ref.stop(block=False))
        self._await_stop(futures, timeout)

    def discard(self, address: str, reason: str) -> None:
        """Forget an address for good; whatever waited for it becomes dead letters."""
        with self._lock:
            for held_address, message in self._held.pop(address, ()):
                self._dead_letter(held_address, message, reason)
            entry = self._entries.pop(address, None)
            if entry is None:
                return
            self._forget_live(address)
            for message in entry.buffer:
                self._dead_letter(address, message, reason)

    def close(self) -> None:
        """Refuse new activations (shutdown); live actors keep their mailboxes."""
        with self._lock:
            self.closed = True

    # ------------------------------------------------------------------ called by actors

    def actor_crashed(self, actor: Actor, error: str, work_item: str | None) -> None:
        with self._lock:
            if work_item is not None:
                key = (actor.address, work_item)
                self._crashes[key] = (self._crashes.get(key, (0, None))[0] + 1, error)
            entry = self._entries.get(actor.address)
            if entry is None or entry.actor is not actor:
                return
            entry.actor = None
            entry.state = EntryState.PENDING
            entry.crashed = True
            entry.last_error = error
            self._forget_live(actor.address)
            entry.buffer.extendleft(reversed(_drain(actor.actor_inbox)))
            self.counters["crashes"] += 1
            if entry.start_requested and not self.closed:
                self._activate(entry)

    def actor_stopped(self, actor: Actor) -> None:
        notice = None
        with self._lock:
            entry = self._entries.get(actor.address)
            if entry is None or entry.actor is not actor:
                return
            entry.actor = None
            self._forget_live(actor.address)
            # pykka drops whatever is still in the mailbox of an actor that stops; those
            # messages were told after it asked to stop (an actor's own `stop()`).
            entry.buffer.extendleft(reversed(_drain(actor.actor_inbox)))
            if entry.virtual:
                if entry.start_requested and not self.closed:  # restart_virtual
                    self._activate(entry)
                    return
                self.counters["passivations"] += 1
                if entry.buffer and not self.closed:
                    self._activate(entry)
                else:
                    if not self.closed:
                        self._remember_passivated(actor.address, actor.kind)
                    self.discard(actor.address, "runtime shut down")
                return
            entry.state = EntryState.PENDING
            if entry.start_requested and not self.closed:
                self._activate(entry)
                return
            if not entry.supervised_stop and entry.parent is not None:
                notice = ChildExited(actor.address, actor.actor_urn, ExitReason.NORMAL)
        if notice is not None:
            self.tell(entry.parent, notice)

    def begin_passivation(self, actor: Actor) -> bool:
        with self._lock:
            entry = self._entries.get(actor.address)
            if (
                entry is None
                or entry.actor is not actor
                or entry.state is not EntryState.ACTIVE
                or actor.actor_inbox.qsize() > 0
            ):
                return False
            entry.state = EntryState.STOPPING
            self._forget_live(actor.address)
            return True

    def passivation_refused(self, address: str) -> None:
        with self._lock:
            self._evicting.discard(address)
            if address in self._lru:
                self._lru.move_to_end(address)

    # ------------------------------------------------------------------ crash ledger

    def crash_count(self, address: str, item: str) -> tuple[int, str | None]:
        with self._lock:
            return self._crashes.get((address, item), (0, None))

    def forget_crashes(self, address: str, item: str) -> None:
        with self._lock:
            self._crashes.pop((address, item), None)

    # ------------------------------------------------------------------ views

    def view(self, address: str) -> EntryView | None:
        with self._lock:
            entry = self._entries.get(address)
            return None if entry is None else _view(entry)

    def virtual_children(self, supervisor: str) -> list[EntryView]:
        prefix = supervisor + "/"
        with self._lock:
            return [
                _view(entry)
                for address, entry in self._entries.items()
                if entry.virtual and address.startswith(prefix)
            ]

    def passivated(self, supervisor: str) -> list[tuple[str, str]]:
        """(address, kind) of the remembered passivated children of a virtual supervisor."""
        prefix = supervisor + "/"
        with self._lock:
            return [(a, k) for a, k in self._passivated.items() if a.startswith(prefix)]

    def live_virtual(self) -> int:
        with self._lock:
            return len(self._lru)

    def live_actors(self) -> list[Actor]:
        with self._lock:
            return [entry.actor for entry in self._entries.values() if entry.actor is not None]

    # ------------------------------------------------------------------ internals (lock held)

    def _activate(self, entry: _Entry) -> None:
        ctx = ActorContext(
            self._runtime,
            entry.address,
            entry.parent,
            activation=entry.activations,
            virtual=entry.virtual,
            passivate_after=entry.passivate_after,
        )
        if entry.activations and (entry.crashed or not entry.virtual or entry.start_requested):
            entry.restarts += 1
        self._passivated.pop(entry.address, None)
        entry.activations += 1
        entry.crashed = entry.supervised_stop = entry.start_requested = False
        try:
            actor = entry.factory(ctx)
            for message in entry.buffer:
                actor.actor_ref.tell(message)
            pykka.ActorRegistry.register(actor.actor_ref)
            # pykka's own Actor.start() does exactly these two steps; doing them here lets the
            # buffer go into the mailbox before the thread runs and before anyone else can tell.
            actor._start_actor_loop()
        except Exception as exc:
            # A constructor that raises (or a thread that cannot start) is a crash of this
            # activation: the supervisor decides, the buffer keeps waiting.
            entry.state, entry.crashed, entry.last_error = EntryState.PENDING, True, repr(exc)
            entry.urn = f"failed-activation-{entry.activations}"
            log.exception("activation failed", extra={"address": entry.address})
            notice = ChildExited(entry.address, entry.urn, ExitReason.CRASH, repr(exc))
            if entry.parent is None:
                self._runtime.root_exited(notice)
            else:
                self.tell(entry.parent, notice)
            return
        entry.buffer.clear()
        entry.actor, entry.state = actor, EntryState.ACTIVE
        entry.urn, entry.ever_active = actor.actor_urn, True
        self.counters["activations"] += 1
        if entry.virtual:
            self._lru[entry.address] = None
            self._enforce_cap()
        held = self._held.pop(entry.address, None)
        if held:
            # Its constructor ran (a virtual supervisor registers its kind there): what
            # waited below it now reaches its actor, or waits below the next reserved
            # ancestor, or becomes a dead letter.
            for address, message in held:
                self.tell(address, message)

    def _holder(self, address: str) -> str | None:
        """The nearest ancestor entry of an unknown address if it never was active."""
        if self.closed:
            return None
        prefix = address
        while "/" in prefix:
            prefix = prefix.rpartition("/")[0]
            entry = self._entries.get(prefix)
            if entry is not None:
                return None if entry.virtual or entry.ever_active else prefix
        return None

    def _enforce_cap(self) -> None:
        excess = len(self._lru) - len(self._evicting) - self.live_cap
        if excess <= 0:
            return
        for address in self._lru:
            if address in self._evicting:
                continue
            actor = self._entries[address].actor
            assert actor is not None
            self._evicting.add(address)
            actor.actor_ref.tell(Passivate("live cap"))
            excess -= 1
            if not excess:
                return

    def _remember_passivated(self, address: str, kind: str) -> None:
        self._passivated[address] = kind
        self._passivated.move_to_end(address)
        while len(self._passivated) > PASSIVATED_KEPT:
            self._passivated.popitem(last=False)

    def _forget_live(self, address: str) -> None:
        self._lru.pop(address, None)
        self._evicting.discard(address)

    def _dead_letter(self, address: str, message: Any, reason: str) -> None:
        if type(message) is Ask:  # the asker learns now rather than at its timeout
            error = ActorUnavailable(f"{address}: {reason}")
            with contextlib.suppress(queue.Full):  # already answered
                message.future.set_exception(exc_info=(ActorUnavailable, error, None))
        self.counters["dead_letters"] += 1
        self.recent_dead_letters.append((address, type(message).__name__))
        kind = type(message).__name__
        log.warning(  # the line says what was lost where, also where `extra` is not shown
            "dead letter: %s to %s (%s)",
            kind,
            address,
            reason,
            extra={"address": address, "message_type": kind, "reason": reason},
        )

    @staticmethod
    def _await_stop(futures: list[pykka.Future[Any]], timeout: float) -> None:
        for future in futures:
            try:
                future.get(timeout=timeout)
            except pykka.Timeout:
                log.error("actor did not stop in time", extra={"timeout": timeout})
            except pykka.ActorDeadError:
                pass  # it crashed on its way out; the crash path took care of its mailbox


def _view(entry: _Entry) -> EntryView:
    return EntryView(
        entry.address,
        entry.state,
        entry.actor,
        len(entry.buffer),
        entry.restarts,
        entry.last_error,
        entry.urn,
    )


def _drain(inbox: Any) -> list[Any]:
    """Take the messages told to an ended activation out of its mailbox.

    pykka's own messages (a stop request) and raw pykka asks (with a reply future) are put
    back: pykka's teardown answers them (None for a stop, ActorDeadError for an ask), so
    whoever waits on them is not left hanging until a timeout.
    """
    salvaged, kept = [], []
    while True:
        try:
            envelope = inbox.get_nowait()
        except queue.Empty:
            break
        if envelope.reply_to is not None or type(envelope.message).__module__ == "pykka.messages":
            kept.append(envelope)
        else:
            salvaged.append(envelope.message)
    for envelope in kept:
        inbox.put(envelope)
    return salvaged
