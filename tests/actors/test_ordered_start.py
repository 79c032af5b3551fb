"""Ordered start (OTP): a supervisor starts a child only once the one before it is ready,
for the first start and for restarts, without losing what is told to a child that waits."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

import pytest

from actors.kernel import (
    ChildSpec,
    Intensity,
    Runtime,
    Strategy,
    supervisor_spec,
    virtual_supervisor_spec,
)
from tests.actors.kernel_probes import Crash, Probe, Record, Worker, is_ready
from tests.helpers import eventually

FAST = Intensity(max_restarts=5, period=5.0, backoff_initial=0.01, backoff_max=0.05)


@pytest.fixture
def probe() -> Probe:
    return Probe()


def worker(probe: Probe, name: str) -> ChildSpec:
    return ChildSpec(name, functools.partial(Worker, probe=probe))


class Booting:
    """A runtime whose boot runs on a thread, so the test can act while the tree starts."""

    def __init__(self, probe: Probe, children: list[ChildSpec], **kwargs) -> None:
        self.runtime = Runtime()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._boot, args=(children,), kwargs=kwargs)
        self.thread.start()

    def _boot(self, children: list[ChildSpec], **kwargs) -> None:
        try:
            self.runtime.boot(children, ready_timeout=30.0, **kwargs)
        except BaseException as exc:  # noqa: BLE001 (reported by booted())
            self.error = exc

    def booted(self) -> Runtime:
        eventually(lambda: not self.thread.is_alive(), timeout=30.0, what="boot returned")
        if self.error is not None:
            raise self.error
        return self.runtime


@pytest.fixture
def boot(probe: Probe) -> Iterator:
    started: list[Booting] = []

    def start(children: list[ChildSpec], **kwargs) -> Booting:
        booting = Booting(probe, children, **kwargs)
        started.append(booting)
        return booting

    yield start
    for booting in started:
        for gate in probe.start_gates.values():
            gate.set()  # a failing test must not leave a started() waiting
        booting.thread.join(30.0)
        booting.runtime.shutdown()


def test_children_start_strictly_in_order(boot, probe: Probe) -> None:
    nested = supervisor_spec("g", [worker(probe, "g1"), worker(probe, "g2")], intensity=FAST)
    probe.watch = ["client/io", "client/a", "client/g", "client/g/g1", "client/g/g2"]
    gate = probe.start_gates["client/a"] = threading.Event()
    booting = boot([worker(probe, "a"), nested, worker(probe, "c")])

    eventually(lambda: probe.starts("client/a") == 1, what="a in started()")
    # while a's started() runs, nothing after it has an activation, and the tree is not up
    for later in ("client/g", "client/g/g1", "client/g/g2", "client/c"):
        view = booting.runtime.directory.view(later)
        assert view is None or view.actor is None, later
    assert booting.thread.is_alive()
    gate.set()
    runtime = booting.booted()

    assert [a for a, _ in probe.order()] == ["client/a", "client/g/g1", "client/g/g2", "client/c"]
    assert probe.ready_seen_by("client/a") == [("client/io",)]
    assert probe.ready_seen_by("client/g/g1") == [("client/io", "client/a")]
    assert probe.ready_seen_by("client/g/g2") == [("client/io", "client/a", "client/g/g1")]
    # c starts once the nested supervisor is ready, i.e. once all of its children are
    assert probe.ready_seen_by("client/c") == [tuple(probe.watch)]
    assert all(node.status == "live" for node in runtime.tree().walk())


def test_messages_to_children_waiting_for_their_turn_are_delivered(boot, probe: Probe) -> None:
    gate = probe.start_gates["client/a"] = threading.Event()
    virtual = virtual_supervisor_spec("v", functools.partial(Worker, probe=probe))
    booting = boot([worker(probe, "a"), worker(probe, "b"), virtual])
    eventually(lambda: probe.starts("client/a") == 1, what="a in started()")
    runtime = booting.runtime

    # b and v are reserved and not started: their messages wait, none is a dead letter
    for i in range(50):
        assert runtime.tell("client/b", Record(i))
        assert runtime.tell("client/v/k1", Record(i))  # below a virtual kind not yet known
    answer: list[object] = []
    asker = threading.Thread(
        target=lambda: answer.append(runtime.ask("client/b", Record("asked"), timeout=30))
    )
    asker.start()
    assert probe.starts("client/b") == 0
    gate.set()
    booting.booted()
    asker.join(30)

    assert answer == ["asked"]
    eventually(lambda: len(probe.values("client/v/k1")) == 50, what="virtual child's messages")
    assert probe.values("client/b") == [*range(50), "asked"]
    assert probe.values("client/v/k1") == list(range(50))
    assert runtime.directory.counters["dead_letters"] == 0


@pytest.mark.parametrize(
    ("strategy", "order"),
    [
        # b crashes in its first started(): c waits for b in every strategy
        (Strategy.ONE_FOR_ONE, ["a0", "b0", "b1", "c0"]),
        (Strategy.ONE_FOR_ALL, ["a0", "b0", "a1", "b1", "c0"]),
        (Strategy.REST_FOR_ONE, ["a0", "b0", "b1", "c0"]),
    ],
)
def test_a_crash_in_a_middle_childs_start(
    boot, probe: Probe, strategy: Strategy, order: list[str]
) -> None:
    children = [worker(probe, n) for n in "abc"]
    probe.crash_on_start["client/g/b"] = 1
    probe.watch = ["client/g/a", "client/g/b"]
    runtime = boot([supervisor_spec("g", children, strategy, FAST)]).booted()

    # boot returned only once the whole tree was up, after the restart
    assert [f"{a[-1]}{n}" for a, n in probe.order()] == order
    assert all(is_ready(runtime, f"client/g/{n}") for n in "abc")
    assert probe.ready_seen_by("client/g/c") == [("client/g/a", "client/g/b")]
    node = runtime.tree().find("client/g/b")
    assert node is not None and node.restarts == 1 and "on purpose" in (node.last_error or "")
    stopped = [e[1] for e in probe.of("stop")]
    assert stopped == (["client/g/a"] if strategy is Strategy.ONE_FOR_ALL else [])
    for name in "abc":
        assert runtime.ask(f"client/g/{name}", Record(name)) == name


@pytest.mark.parametrize("strategy", list(Strategy))
def test_a_restart_starts_the_affected_children_in_order(
    boot, probe: Probe, strategy: Strategy
) -> None:
    children = [worker(probe, n) for n in "abc"]
    runtime = boot([supervisor_spec("g", children, strategy, FAST)]).booted()
    probe.watch = ["client/g/a", "client/g/b"]
    gate = probe.start_gates["client/g/b"] = threading.Event()

    runtime.tell("client/g/b", Crash())
    eventually(lambda: probe.starts("client/g/b") == 2, what="b restarting")
    if strategy is not Strategy.ONE_FOR_ONE:  # c was stopped and waits for b to be ready
        assert not is_ready(runtime, "client/g/c")
        assert runtime.directory.view("client/g/c").actor is None
    gate.set()

    expected = {Strategy.ONE_FOR_ONE: "b", Strategy.ONE_FOR_ALL: "abc"}.get(strategy, "bc")
    for name in expected:
        eventually(lambda n=name: probe.starts(f"client/g/{n}") == 2, what=f"{name} restarted")
    eventually(lambda: all(is_ready(runtime, f"client/g/{n}") for n in "abc"), what="all up")
    restarts = [(a[-1], n) for a, n in probe.order() if n == 1]
    assert restarts == [(n, 1) for n in expected]
    if "c" in expected:
        assert probe.ready_seen_by("client/g/c")[-1] == ("client/g/a", "client/g/b")


def test_a_child_held_by_a_superseded_backoff_still_restarts(boot, probe: Probe) -> None:
    slow = Intensity(max_restarts=10, period=30.0, backoff_initial=0.3, backoff_max=1.0)
    children = [worker(probe, n) for n in "ab"]
    runtime = boot([supervisor_spec("g", children, Strategy.ONE_FOR_ONE, slow)]).booted()

    runtime.tell("client/g/b", Crash())  # first restart: immediate
    eventually(lambda: is_ready(runtime, "client/g/b") and probe.starts("client/g/b") == 2)
    runtime.tell("client/g/b", Crash())  # second: b waits 0.3 s for its timer...
    runtime.tell("client/g/a", Crash())  # ...and a later crash arms a newer timer (0.6 s)

    eventually(lambda: probe.starts("client/g/b") == 3, timeout=10, what="b restarted")
    eventually(lambda: probe.starts("client/g/a") == 2, timeout=10, what="a restarted")
    eventually(lambda: is_ready(runtime, "client/g/a") and is_ready(runtime, "client/g/b"))
    assert runtime.ask("client/g/b", Record("b")) == "b"
