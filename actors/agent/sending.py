"""`UserSends`: the user's messages handed to a connection, plain or acknowledged.

A plain send (`send_message`) stores the message for delivery and answers its message id:
the caller knows it was stored because the ask returned. A layer above that only *tells*
the connection (the chat) cannot know that, so it sends with a corr id: the send is then a
command (`CommandKind.SEND`) stored once per corr id, whose step stores the message and the
completion `OK(corr_id)` in one transaction. The same corr id again stores nothing new (its
`OK` is told again if it was stored), so the caller may hand a message over as often as a
crash makes it unsure, and the peer gets it once; it forgets its own copy on the `OK`.

The message is checked when it is handed over and again when the step runs: a connection
that cannot send (not joined or ready yet, being deleted, gone) refuses it, `ERR` with the
corr id (an asker gets the error raised; a layer that told the send gets the `ERR` event),
and no message is stored.
"""

from __future__ import annotations

from collections.abc import Callable

from actors.agent import events as ev
from actors.agent.model import CommandKind, CommandOrigin, ConnStatus, MessageKind, Send
from actors.agent.ports import Chain, Commands, ConnectionPort
from protocol.envelope import UserMessage
from protocol.errors import AgentError, NoConnection
from storage.agent import AgentCommand, AgentSndQueue

_CAN_SEND = (ConnStatus.JOINED, ConnStatus.READY)


class UserSends:
    def __init__(
        self,
        port: ConnectionPort,
        commands: Commands,
        chain: Chain,
        refuse_if_deleting: Callable[[], None],
    ) -> None:
        self.port = port
        self.commands = commands
        self.chain = chain
        self._refuse_if_deleting = refuse_if_deleting  # a delete that waits for delivery
        commands.register(CommandKind.SEND, self.step_send)

    def send(self, body: bytes, corr_id: str | None) -> int | None:
        """Store `body` for delivery and answer its message id; with `corr_id`, store the
        send as a command (run at the next pump) and answer None."""
        if corr_id is None:
            return self.chain.enqueue(self._queue(), UserMessage(body), MessageKind.USER).seq
        store = self.port.store
        with store.transaction():
            earlier = store.command_by_corr_id(corr_id)
            if earlier is None:
                self._queue()  # refuse at once what could not be sent now
                command = store.insert_command_once(
                    conn_id=self.port.conn_id,
                    kind=CommandKind.SEND,
                    payload=Send(body),
                    server=None,
                    origin=CommandOrigin.ASYNC,
                    corr_id=corr_id,
                    ttl=self.port.config.command_ttl,
                )
        if earlier is None and command is not None:
            self.port.state.commands.append(command)
        elif earlier is not None and earlier.event is not None:
            # the same corr id again: stored before, whatever the connection is doing now;
            # its OK is told again, as the caller may have lost it
            self.port.emit(ev.decode_event(bytes(earlier.event)))
        return None

    def step_send(self, command: AgentCommand, payload: Send) -> None:
        queue = self._queue()
        self.commands.complete(
            command,
            ev.Ok(self.port.conn_id, self.commands.public_corr_id(command)),
            lambda: self.chain.enqueue(queue, UserMessage(payload.body), MessageKind.USER),
        )

    def _queue(self) -> AgentSndQueue:
        """The send queue in use; AgentError if the connection cannot send now."""
        conn = self.port.state.conn
        if conn is None:
            raise NoConnection(f"no connection {self.port.conn_id!r}")
        self._refuse_if_deleting()
        queue = self.port.state.active_snd_queue()
        if queue is None or conn.status not in _CAN_SEND:
            raise AgentError(f"connection is {conn.status}: it cannot send yet", code="PROHIBITED")
        return queue
