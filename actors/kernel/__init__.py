"""The actor kernel: actors on pykka with addresses, supervision, virtual actors, timers,
the trio I/O bridge and tree snapshots. Implementation lives in the submodules; this
namespace is the public surface."""

from actors.kernel.actor import Actor, ActorContext, ActorCrash, DeadLetter
from actors.kernel.directory import Directory, EntryState, VirtualKind
from actors.kernel.errors import (
    ActorUnavailable,
    AskTimeout,
    IoError,
    KernelError,
    NotApplicable,
)
from actors.kernel.io import IoActor, IoBridge
from actors.kernel.messages import ChildExited, ChildStarted, ExitReason, IoResult
from actors.kernel.runtime import Runtime, RuntimeConfig, TransactionalDatabase
from actors.kernel.supervisor import (
    ChildSpec,
    Intensity,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    VirtualSupervisor,
    supervisor_spec,
    virtual_supervisor_spec,
)
from actors.kernel.timers import Scheduler, TimerHandle
from actors.kernel.tree import TreeNode

__all__ = [
    "Actor",
    "ActorContext",
    "ActorCrash",
    "ActorUnavailable",
    "AskTimeout",
    "ChildExited",
    "ChildSpec",
    "ChildStarted",
    "DeadLetter",
    "Directory",
    "EntryState",
    "ExitReason",
    "Intensity",
    "IoActor",
    "IoBridge",
    "IoError",
    "IoResult",
    "KernelError",
    "NotApplicable",
    "Restart",
    "Runtime",
    "RuntimeConfig",
    "Scheduler",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "TimerHandle",
    "TransactionalDatabase",
    "TreeNode",
    "VirtualKind",
    "VirtualSupervisor",
    "supervisor_spec",
    "virtual_supervisor_spec",
]
