"""`ChatClient`: the embedded runtime with the chat on top — contacts, groups, messages.

    chat = ChatClient.open("sqlite:///alice.db", servers=[server], name="alice")
    contact_id = chat.create_contact_link()        # CONTACT_LINK event: share its link
    group_id = chat.create_group("friends")
    chat.add_member(group_id, contact_id)          # once the contact is connected
    chat.remove_member(group_id, member_id)        # or leave_group, delete_group
    relay.create_relay_address()                   # a chat relay: ADDRESS_LINK brings its address
    group_id = chat.create_relay_group("town", relays=[address])  # GROUP_LINK_READY: share it
    chat.add_group_relay(group_id, other_address)  # or remove_group_relay: the link follows
    group_id = chat.prepare_group(group_link)      # a joiner reads the link, joins nothing
    chat.connect_prepared_group(group_id)          # joins every relay: GROUP_JOINED, _CONNECTED
    event = chat.chat_events.get(timeout=5)        # typed chat events (actors/chat/events.py)
    chat.close()

Synchronous and thread-safe like `Client`. The chat drives the agent by itself: every
connection a group or a contact needs is made by an async agent command whose continuation
is stored before the command is issued, so what this client started goes on after a crash
or a restart without another call. Every id it returns is stored before it is returned.
The agent underneath is `chat.agent` (a `Client`), for agent-level calls and `tree()`.
With `debug=True` the runtime serves the debug endpoint too (`chat.agent.debug_endpoint`,
as `Client.open(debug=True)` does), which `duplex console` attaches to.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TypeVar

from actors.agent.agent import AgentActor
from actors.agent.services import AgentConfig, AgentServices, EventStream, QueueClients
from actors.chat.chat import ChatActor, owner_address
from actors.chat.contact import (
    AcceptRequest,
    CreateAddress,
    CreateInvitation,
    JoinInvitation,
    SendContactMessage,
)
from actors.chat.group import (
    AddMember,
    CreateGroup,
    DeleteGroup,
    GroupState,
    GroupView,
    JoinGroup,
    LeaveGroup,
    RemoveMember,
    SendGroupMessage,
)
from actors.chat.model import Owner, OwnerKind
from actors.chat.relays import (
    AddGroupRelay,
    ConnectPrepared,
    CreateRelayGroup,
    PreparedLink,
    PrepareGroup,
    RemoveGroupRelay,
)
from actors.chat.services import AgentPort, AgentSink, ChatServices
from actors.client import Client, mapped_kernel_errors
from actors.debug import DebugEndpoint
from actors.kernel import ChildSpec, Runtime, RuntimeConfig, TreeNode
from protocol.chat import (
    GroupLinkData,
    GroupProfile,
    GroupRole,
    Profile,
    RelayLinkData,
    decode_link_data,
    new_group_id,
    new_member_id,
)
from protocol.errors import DuplexError, GroupLinkError
from storage.agent import AGENT_LAYER, AgentStore
from storage.chat import CHAT_LAYER, ChatStore
from storage.database import open_database

_LinkData = TypeVar("_LinkData", GroupLinkData, RelayLinkData)


class ChatClient:
    """A chat user on its own database; see the module docstring."""

    def __init__(self, agent: Client, services: ChatServices) -> None:
        self.agent = agent
        self.runtime = agent.runtime
        self.services = services
        self.chat_events: EventStream = services.events

    @classmethod
    def open(
        cls,
        db: str,
        servers: Sequence[str],
        *,
        name: str,
        full_name: str = "",
        config: AgentConfig | None = None,
        runtime_config: RuntimeConfig | None = None,
        passphrase: str | None = None,
        debug: bool = False,
    ) -> ChatClient:
        """Open (or create) a chat database and resume everything it had in progress.

        `name` (and `full_name`) is the profile this user shows to contacts and groups;
        with `debug`, the debug endpoint is served (`agent.debug_endpoint`)."""
        database = open_database(db, layers=[AGENT_LAYER, CHAT_LAYER], passphrase=passphrase)
        config = config or AgentConfig()
        runtime = Runtime(config=runtime_config, database=database)
        agent_services = AgentServices(
            store=AgentStore(database),
            servers=tuple(str(s) for s in servers),
            config=config,
            events=AgentSink(runtime),
            clients=QueueClients(runtime, config.client),
        )
        chat_services = ChatServices(
            store=ChatStore(database),
            agent=AgentPort(runtime),
            events=EventStream(),
            profile=Profile(name, full_name),
        )
        runtime.services["agent"] = agent_services
        runtime.services["chat"] = chat_services
        try:
            with mapped_kernel_errors():
                runtime.boot([ChildSpec("agent", AgentActor), ChildSpec("chat", ChatActor)])
        except BaseException:
            database.close()
            raise
        agent = Client(runtime, agent_services, database, owns_database=True)
        if debug:
            try:
                agent.debug_endpoint = DebugEndpoint.start(runtime)
            except BaseException:
                agent.close()
                raise
        return cls(agent, chat_services)

    # ------------------------------------------------------------------ contacts

    def create_contact_link(self) -> str:
        """Start a one-time invitation; returns the contact id (CONTACT_LINK brings the link)."""
        return self._ask(Owner(OwnerKind.CONTACT, new_member_id()), CreateInvitation())

    def join_contact(self, link: str) -> str:
        """Join someone's one-time invitation; returns the contact id (CONTACT_CONNECTED
        follows)."""
        return self._ask(Owner(OwnerKind.CONTACT, new_member_id()), JoinInvitation(link))

    def create_address(self, *, auto_accept: bool = False, auto_reply: str | None = None) -> str:
        """Start a contact address; returns its id (ADDRESS_LINK brings the link)."""
        owner = Owner(OwnerKind.ADDRESS, new_member_id())
        return self._ask(owner, CreateAddress(auto_accept, auto_reply))

    def create_relay_address(self) -> str:
        """Serve as a chat relay: make the relay address owners invite us on; returns its id
        (ADDRESS_LINK brings the address, for owners' `create_relay_group`)."""
        owner = Owner(OwnerKind.ADDRESS, new_member_id())
        return self._ask(owner, CreateAddress(auto_accept=True, relay=True))

    def accept_request(self, address_id: str, request_id: str) -> str:
        """Accept a CONTACT_REQUEST; returns the new contact's id."""
        return self._ask(Owner(OwnerKind.ADDRESS, address_id), AcceptRequest(request_id))

    def send_contact_message(self, contact_id: str, text: str) -> str:
        """Send a direct message; returns its shared message id."""
        return self._ask(Owner(OwnerKind.CONTACT, contact_id), SendContactMessage(text))

    # ------------------------------------------------------------------ groups

    def create_group(self, name: str, description: str = "") -> str:
        """Create a group hosted by this user; returns its id."""
        owner = Owner(OwnerKind.GROUP, new_group_id())
        return self._ask(owner, CreateGroup(GroupProfile(name, description)))

    def create_relay_group(self, name: str, relays: Sequence[str], description: str = "") -> str:
        """Create a group served by chat relays (their relay addresses); returns its id.
        GROUP_LINK_READY brings the group link once a relay's link is verified (and again
        each time another is): joiners `prepare_group` with it."""
        owner = Owner(OwnerKind.GROUP, new_group_id())
        return self._ask(owner, CreateRelayGroup(GroupProfile(name, description), tuple(relays)))

    def add_group_relay(self, group_id: str, relay_address: str) -> None:
        """The owner of a relay group: invite one more relay (its relay address). The group
        link lists it once its relay link is verified: GROUP_LINK_READY again, one relay
        more. AgentError DUPLICATE if that relay serves the group already."""
        self._ask(Owner(OwnerKind.GROUP, group_id), AddGroupRelay(relay_address))

    def remove_group_relay(self, group_id: str, relay_address: str) -> None:
        """The owner of a relay group: the relay of `relay_address` no longer serves it —
        the group link is published again without it (GROUP_LINK_READY, one relay less),
        so new members do not join it, and our connection to it is deleted. The relay is
        told (x.grp.relay.rem): it tells its members, which drop it and keep the group's
        other relays, and it serves the group no more. AgentError NO_RELAY if
        no relay of the group has that address, PROHIBITED for the last relay the link
        lists (add another first)."""
        self._ask(Owner(OwnerKind.GROUP, group_id), RemoveGroupRelay(relay_address))

    def prepare_group(self, group_link: str) -> str:
        """Read a relay group's link and store the group, joined nowhere yet; returns its id.
        The link is read synchronously: GroupLinkError if it cannot be (nothing stored)."""
        data = self._group_link_data(group_link)
        return self._ask(Owner(OwnerKind.GROUP, data.group_id), PrepareGroup(group_link, data))

    def connect_prepared_group(self, group_id: str, incognito: bool = False) -> str:
        """Join a prepared group through every relay its link lists.

        First the group link and every relay link are read synchronously: if one cannot be
        read, or does not name this group, GroupLinkError is raised and nothing changes (try
        again). Then each relay is joined by itself, asynchronously: GROUP_JOINED at the first
        relay that took our join (what we send from then on is delivered once a relay is
        connected), GROUP_CONNECTED at the first relay connected, GROUP_JOIN_FAILED only if
        every relay's join failed for good; `group(group_id).relays_active` says how many are
        connected. With `incognito`, one random name is shown to every relay instead of our
        profile. A group connecting already is left as it is."""
        group = Owner(OwnerKind.GROUP, group_id)
        link = self._ask(group, PreparedLink())
        if link is None:
            return group_id
        data = self._group_link_data(link)
        if data.group_id != group_id:
            raise GroupLinkError(f"the group link now names group {data.group_id}")
        targets = []
        for relay_link in data.relays:
            address, user_data = self._link_data(relay_link)
            relay = self._decoded(user_data, RelayLinkData, relay_link)
            if relay.group_id != group_id:
                raise GroupLinkError(f"relay link {relay_link} is for another group")
            targets.append((relay_link, address))
        incognito_name = f"guest-{secrets.token_hex(4)}" if incognito else None
        return self._ask(group, ConnectPrepared(tuple(targets), incognito_name))

    def _group_link_data(self, group_link: str) -> GroupLinkData:
        _, user_data = self._link_data(group_link)
        return self._decoded(user_data, GroupLinkData, group_link)

    def _link_data(self, link: str) -> tuple[str, bytes]:
        try:
            return self.agent.get_link_data(link)
        except DuplexError as exc:
            raise GroupLinkError(f"{link} could not be read: {exc}") from exc

    @staticmethod
    def _decoded(user_data: bytes, kind: type[_LinkData], link: str) -> _LinkData:
        try:
            data = decode_link_data(user_data)
        except DuplexError as exc:
            raise GroupLinkError(f"{link} holds no chat link data: {exc}") from exc
        if not isinstance(data, kind):
            raise GroupLinkError(f"{link} is not a {kind.__name__} link")
        return data

    def add_member(self, group_id: str, contact_id: str, role: GroupRole = GroupRole.MEMBER) -> str:
        """Invite a connected contact to a group we host; returns its member id.

        The member's invitation is created synchronously (a failure is raised and the user
        retries); everything after it runs by itself."""
        conn_id, link = self.agent.create_connection(conn_id=new_member_id())
        return self._ask(
            Owner(OwnerKind.GROUP, group_id), AddMember(contact_id, conn_id, link, role)
        )

    def join_group(self, group_id: str) -> str:
        """Accept a GROUP_INVITATION: join through the host; GROUP_CONNECTED follows."""
        return self._ask(Owner(OwnerKind.GROUP, group_id), JoinGroup())

    def send_group_message(self, group_id: str, text: str) -> str:
        """Send a message to every member; returns its shared message id."""
        return self._ask(Owner(OwnerKind.GROUP, group_id), SendGroupMessage(text))

    def leave_group(self, group_id: str) -> None:
        """Leave a group: every member is told (x.grp.leave), our connections to them are
        deleted, and the group is LEFT; sending to it then raises AgentError GROUP_ENDED.
        In a relay group the relays are told, stop forwarding to us and delete their
        connections, as we delete ours. Leaving a group left already does nothing."""
        self._ask(Owner(OwnerKind.GROUP, group_id), LeaveGroup())

    def remove_member(self, group_id: str, member_id: str) -> None:
        """Remove a member (we must be an owner or admin, of a role not below its own;
        AgentError PROHIBITED otherwise): every member, the removed one included, is told
        (x.grp.mem.del) and our connection to it is deleted. Removing it again does nothing."""
        self._ask(Owner(OwnerKind.GROUP, group_id), RemoveMember(member_id))

    def delete_group(self, group_id: str) -> None:
        """Delete a group we own (AgentError PROHIBITED otherwise): every member is told
        (x.grp.del), our connections are deleted, and the group is DELETED. Deleting it
        again does nothing."""
        self._ask(Owner(OwnerKind.GROUP, group_id), DeleteGroup())

    def group(self, group_id: str) -> GroupView | None:
        """The group and its members as stored (None if there is no such group)."""
        return self._ask(Owner(OwnerKind.GROUP, group_id), GroupState())

    # ------------------------------------------------------------------ runtime

    def tree(self) -> TreeNode:
        return self.runtime.tree()

    def close(self) -> None:
        self.agent.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ask(self, owner: Owner, message: object) -> object:
        with mapped_kernel_errors():
            return self.runtime.ask(owner_address(owner), message)
