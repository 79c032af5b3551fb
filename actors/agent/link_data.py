"""`LinkData`: short links to contact addresses — publishing their data and resolving them.

`set_link_data` encrypts the address's link and the user's data with a key that only the
short link carries (kept on the connection row, so the link stays the same) and stores it
on the contact queue with `LSET`; `get_link_data` fetches it with `LGET` and opens it. Link
lookups belong to no connection: they run on the `LINKS_CONN_ID` pseudo-connection.
"""

from __future__ import annotations

import os

from actors.agent import events as ev
from actors.agent.model import CommandKind, GetLink, RcvQueueStatus, SetLink, command_lane
from actors.agent.ports import Commands, ConnectionPort, QueueRequest
from actors.agent.queues import QueueSteps
from protocol.address import ServerAddress
from protocol.errors import LinkError
from protocol.links import LinkData as LinkPayload
from protocol.links import ShortLink, decrypt_link_data, encrypt_link_data, parse_short_link
from protocol.queue import LGet, Lnk, LSet, QueueMode
from storage.agent import AgentCommand

LINKS_CONN_ID = "links"


class LinkData:
    def __init__(self, port: ConnectionPort, commands: Commands, queues: QueueSteps) -> None:
        self.port = port
        self.commands = commands
        self.queues = queues
        commands.register(CommandKind.SET_LINK, self.step_set)
        commands.register(CommandKind.GET_LINK, self.step_get)

    def step_set(self, command: AgentCommand, payload: SetLink) -> None:
        queue = next(
            (
                q
                for q in self.port.state.rcv_queues.values()
                if q.mode == QueueMode.CONTACT.value and q.status == RcvQueueStatus.ACTIVE
            ),
            None,
        )
        if queue is None:
            self.commands.fail(command, "PROHIBITED", "link data needs a contact address")
            return
        conn = self.port.state.conn
        if conn.link_key is None:
            conn.link_key = os.urandom(32)
            with self.port.store.transaction():
                self.port.store.save_connection(conn)
        short = ShortLink.from_key(ServerAddress.parse(queue.server), bytes(conn.link_key))
        blob = encrypt_link_data(
            short, LinkPayload(self.queues.queue_link(queue), payload.user_data)
        )
        event = ev.Link(self.port.conn_id, short.to_uri(), self.commands.public_corr_id(command))
        keys = self.port.state.keys
        self.port.submit(
            command_lane(command.server),
            QueueRequest(
                queue.server,
                LSet(short.link_id, blob),
                bytes(queue.rcv_id),
                keys.signer(bytes(queue.auth_private)),
            ),
            lambda _: self.commands.complete(command, event),
            self.commands.step_failed(command, queue.server),
            command,
        )

    def step_get(self, command: AgentCommand, payload: GetLink) -> None:
        short = parse_short_link(payload.link)
        server = str(short.server)

        def fetched(reply: Lnk) -> None:
            try:
                data = decrypt_link_data(short, reply.data)
            except LinkError as exc:
                self.commands.fail(command, exc.code, exc.message)
                return
            corr_id = self.commands.public_corr_id(command)
            self.commands.complete(
                command, ev.LData(self.port.conn_id, data.link.to_uri(), data.user_data, corr_id)
            )

        self.port.submit(
            command_lane(command.server),
            QueueRequest(server, LGet(short.link_id)),
            fetched,
            self.commands.step_failed(command, server),
            command,
        )
