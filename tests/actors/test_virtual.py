"""Virtual actors: activation on first message, passivation by idleness and by the live cap,
and dead letters for work items that keep crashing their actor."""

from __future__ import annotations

import functools
import threading

import pytest

from actors.kernel import (
    ChildSpec,
    Intensity,
    Runtime,
    RuntimeConfig,
    Strategy,
    supervisor_spec,
    virtual_supervisor_spec,
)
from tests.actors.kernel_probes import Crash, Probe, Record, Worker, WorkQueue
from tests.helpers import eventually


def start(probe: Probe, factory=Worker, **config) -> Runtime:
    spec = virtual_supervisor_spec(
        "conns",
        functools.partial(factory, probe=probe),
        Intensity(max_restarts=50, period=10.0, backoff_initial=0.005, backoff_max=0.01),
    )
    return Runtime.start([spec], config=RuntimeConfig(**config))


@pytest.fixture
def probe() -> Probe:
    return Probe()


def test_first_message_activates_and_idle_passivates(probe: Probe) -> None:
    with start(probe, passivate_after=0.2) as runtime:
        assert runtime.directory.view("client/conns/7") is None
        runtime.tell("client/conns/7", Record("hello"))
        eventually(lambda: probe.values("client/conns/7") == ["hello"])
        assert probe.starts("client/conns/7") == 1
        node = runtime.tree().find("client/conns/7")
        assert node is not None and node.status == "live" and node.kind == "worker"

        eventually(lambda: runtime.directory.view("client/conns/7") is None, what="passivated")
        assert probe.of("stop", "client/conns/7")
        assert runtime.directory.counters["passivations"] == 1

        runtime.tell("client/conns/7", Record("again"))  # a new activation, state reloaded
        eventually(lambda: probe.values("client/conns/7") == ["hello", "again"])
        assert probe.of("start", "client/conns/7")[-1][2] == 0  # activation, not a restart


def test_a_busy_actor_is_not_passivated(probe: Probe) -> None:
    with start(probe, passivate_after=0.3) as runtime:
        for i in range(12):  # a message every 0.05 s keeps it busy for 0.6 s
            runtime.tell("client/conns/1", Record(i))
            eventually(lambda i=i: len(probe.values("client/conns/1")) == i + 1)
            threading.Event().wait(0.05)
        assert probe.starts("client/conns/1") == 1


def test_the_live_cap_passivates_the_least_recently_used(probe: Probe) -> None:
    cap = 8
    with start(probe, live_cap=cap, passivate_after=60.0) as runtime:
        threads_before = threading.active_count()
        for i in range(100):
            runtime.tell(f"client/conns/{i}", Record(i))
            runtime.tell("client/conns/0", Record("keep"))  # 0 stays the most recently used
        eventually(lambda: len(probe.values("client/conns/0")) == 101, what="all kept")
        eventually(lambda: runtime.directory.live_virtual() <= cap, what="cap respected")
        for i in range(1, 100):
            assert probe.values(f"client/conns/{i}") == [i]  # nothing lost, nothing twice
        assert runtime.directory.view("client/conns/0") is not None
        assert probe.starts("client/conns/0") == 1  # the busiest one was never evicted
        # counted once each evicted activation's thread stopped, a moment after the cap held
        eventually(
            lambda: runtime.directory.counters["passivations"] >= 100 - cap, what="passivations"
        )
        eventually(lambda: threading.active_count() <= threads_before + cap, what="threads")


def test_a_crashed_virtual_actor_is_restarted_with_its_messages(probe: Probe) -> None:
    with start(probe) as runtime:
        runtime.tell("client/conns/a", Record(1))
        runtime.tell("client/conns/a", Crash())
        for i in range(2, 50):
            runtime.tell("client/conns/a", Record(i))
        eventually(lambda: len(probe.values("client/conns/a")) == 49)
        assert probe.values("client/conns/a") == list(range(1, 50))
        assert probe.starts("client/conns/a") == 2
        node = runtime.tree().find("client/conns/a")
        assert node is not None and node.restarts == 1


def test_a_poison_work_item_is_dead_lettered_after_max_attempts(probe: Probe) -> None:
    probe.work["client/conns/q"] = ["w1", "poison", "w2"]
    with start(probe, factory=WorkQueue, max_attempts=3) as runtime:
        runtime.tell("client/conns/q", "next")
        eventually(lambda: probe.work["client/conns/q"] == [], what="queue drained")
        assert [e[2] for e in probe.of("done")] == ["w1", "w2"]
        assert [e[2] for e in probe.of("attempt")].count("poison") == 3
        assert probe.of("dead") == [("dead", "client/conns/q", "poison", 3)]
        view = runtime.directory.view("client/conns/q")
        assert view is not None and view.restarts == 3  # three crashes, then it carried on
        assert runtime.directory.crash_count("client/conns/q", "poison") == (0, None)


def test_a_crashed_child_waiting_for_a_restart_outlives_its_supervisors_restart(
    probe: Probe,
) -> None:
    slow = Intensity(max_restarts=50, period=30.0, backoff_initial=60.0, backoff_max=60.0)
    group = supervisor_spec(
        "g",
        [
            ChildSpec("w", functools.partial(Worker, probe=probe)),
            virtual_supervisor_spec("v", functools.partial(Worker, probe=probe), slow),
        ],
        Strategy.ONE_FOR_ALL,
        Intensity(max_restarts=10, period=10.0, backoff_initial=0.01, backoff_max=0.05),
    )
    with Runtime.start([group]) as runtime:
        runtime.tell("client/g/v/k", Crash())  # the first restart is immediate
        eventually(lambda: probe.starts("client/g/v/k") == 2)
        runtime.tell("client/g/v/k", Crash())  # the second waits for a 60 s timer
        eventually(lambda: runtime.directory.view("client/g/v/k").actor is None)
        runtime.tell("client/g/v/k", Record("waiting"))

        runtime.tell("client/g/w", Crash())  # one_for_all: v restarts, its timer is gone
        eventually(lambda: probe.values("client/g/v/k") == ["waiting"], timeout=10)
        assert probe.starts("client/g/v/k") == 3
