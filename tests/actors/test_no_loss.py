"""Messages at the edges of an activation: what is told to an actor after it asked to stop,
a stop that races a crash, and asks that can no longer be answered."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator

import pytest

from actors.kernel import ActorUnavailable, ChildSpec, Intensity, Restart, Runtime, Strategy
from tests.actors.kernel_probes import Probe, Record, Worker
from tests.helpers import eventually

FAST = Intensity(max_restarts=10, period=10.0, backoff_initial=0.01, backoff_max=0.05)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # a failing test must not leave an actor blocked


def start(probe: Probe, restart: Restart = Restart.PERMANENT) -> Runtime:
    spec = ChildSpec("w", functools.partial(Worker, probe=probe), restart)
    return Runtime.start([spec], strategy=Strategy.ONE_FOR_ONE, intensity=FAST)


def mailbox(runtime: Runtime, address: str) -> int:
    view = runtime.directory.view(address)
    return 0 if view is None or view.actor is None else view.actor.actor_inbox.qsize()


def test_messages_told_after_an_actor_stops_itself_reach_the_next_activation(
    probe: Probe, gate: threading.Event
) -> None:
    with start(probe) as runtime:
        runtime.tell("client/w", ("stop-then-block", gate))
        eventually(lambda: probe.of("blocked", "client/w"), what="w blocked")
        # pykka's stop request is in the mailbox now: these land behind it
        for i in range(100):
            runtime.tell("client/w", Record(i))
        gate.set()

        eventually(lambda: len(probe.values("client/w")) == 100, what="all delivered")
        assert probe.values("client/w") == list(range(100))
        assert probe.starts("client/w") == 2  # a permanent child: restarted after its stop
        assert runtime.directory.counters["dead_letters"] == 0


def test_an_ask_that_can_no_longer_be_answered_fails_at_once(
    probe: Probe, gate: threading.Event
) -> None:
    with start(probe, Restart.TRANSIENT) as runtime:
        runtime.tell("client/w", ("stop-then-block", gate))
        eventually(lambda: probe.of("blocked", "client/w"), what="w blocked")
        outcome: list[BaseException | object] = []

        def ask() -> None:
            try:
                outcome.append(runtime.ask("client/w", Record("too late"), timeout=60))
            except Exception as exc:  # noqa: BLE001 (checked below)
                outcome.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        eventually(lambda: mailbox(runtime, "client/w") == 2, what="ask behind the stop")
        began = time.monotonic()
        gate.set()
        asker.join(60)

        # a transient child that stopped normally is gone: the ask is a dead letter
        assert len(outcome) == 1 and isinstance(outcome[0], ActorUnavailable), outcome
        assert time.monotonic() - began < 30  # not the ask's timeout
        assert runtime.directory.view("client/w") is None


def test_a_stop_racing_a_crash_does_not_wait_for_its_timeout(
    probe: Probe, gate: threading.Event
) -> None:
    with start(probe) as runtime:
        runtime.tell("client/w", ("block-then-crash", gate))
        eventually(lambda: probe.of("blocked", "client/w"), what="w blocked")
        stopper = threading.Thread(target=runtime.directory.stop, args=("client/w", 60.0))
        stopper.start()
        eventually(lambda: mailbox(runtime, "client/w") == 1, what="stop request queued")
        began = time.monotonic()
        gate.set()  # w crashes with pykka's stop request still in its mailbox

        stopper.join(60)
        assert not stopper.is_alive()
        assert time.monotonic() - began < 30  # answered at the crash, not at the timeout
