"""The kernel's own errors: what a caller of the kernel can be told, and nothing of duplex.

The kernel is generic (like pykka): it imports nothing of the layers above it, so it cannot
raise their errors. Every error it raises on purpose is a `KernelError`; the embedded
facade maps them to its own hierarchy. Each carries a short upper-case `code` (stable, the
message is not) so that the mapping is one lookup:

    KernelError         KERNEL
    ├── ActorUnavailable  UNAVAILABLE  no live actor at an address, the runtime stopped or
    │                                  failed, a service (database, I/O thread) is absent
    ├── AskTimeout        ASK_TIMEOUT  an `ask` (or a blocking I/O call at the edge) got no
    │                                  answer within its timeout
    ├── NotApplicable     NOT_APPLICABLE  an operator's command that this actor cannot take
    │                                  (crashing the root, passivating a supervised actor)
    └── IoError           IO           submitted I/O could not run or did not finish: the I/O
                                       thread was restarting or stopping, the task could not
                                       be spawned, or it was cancelled (only ever inside an
                                       `IoResult`, never raised at a submitter)
"""

from __future__ import annotations


class KernelError(Exception):
    """Base of every error the kernel raises on purpose."""

    code: str = "KERNEL"


class ActorUnavailable(KernelError):
    """No live actor at an address, or the runtime (or one of its services) is not running."""

    code = "UNAVAILABLE"


class AskTimeout(KernelError):
    """An `ask` or a blocking edge call got no answer within its timeout."""

    code = "ASK_TIMEOUT"


class NotApplicable(KernelError):
    """An operator's command (`Runtime.crash`, `restart`, `passivate`) that does not apply to
    this actor: the root supervisor (its crash would fail the runtime), or a supervised
    actor asked to passivate."""

    code = "NOT_APPLICABLE"


class IoError(KernelError):
    """Submitted I/O was cancelled or could not run; carried by `IoResult.error`."""

    code = "IO"
