"""`duplex demo` (what `make demo` runs): a small private-messaging network on loopback,
played in acts and checked claim by claim.

Two queue servers and eight chat clients (an owner, five members and two chat relays) on
SQLite files: contacts made through one-time links, a peer-to-peer group, a relay group
joined through its group link, messages each delivered exactly once (through either relay
while the other is closed), a queue server restarted while a message is on its way, actors
crashed on purpose, a member's whole client killed with SIGKILL in a process of its own
while its message is on its way and reopened from its file, a contact's queue moved to the
other server, and the final supervision tree.

* play.py   `run_demo`: the work directory, the acts in order, the verdict, Ctrl-C, --console;
* acts.py   the acts (`ACTS`), each a heading, one thing done and its checks;
* stage.py  what the acts share: the checks, the servers, the clients, reads of their stores;
* child.py  a member's client in a child process, for the act that kills it with SIGKILL.
"""

from actors.demo.play import run_demo

__all__ = ["run_demo"]
