"""The queue server's command processing: one transmission in, frames for sessions out.

Theory of operation
-------------------
`QueueBroker.handle(session, frame)` decodes a transmission (protocol/queue.py), checks its
authorisation, applies it to the store (storage/server.py) and returns the frames to send:
the reply to `session` and any pushes to other sessions (`MSG` to a queue's subscriber after
a SEND, `END` to the session that lost a subscription). It knows no sockets: the trio shell
(protocol/server/shell.py) calls it and writes what it returns; tests call it directly.

`handle` is `prepare` then `apply`. A shell that receives a burst of frames from one
session prepares them all (decode, look the queue up, name the signature check), verifies
every check at once off its event loop (`verify_prepared`: Ed25519 releases the GIL), and
applies them in one store transaction, posting the frames only after it commits.

State kept here, in memory, per running server (the store keeps everything durable):

* ``subscriber[rcv_id]``   the session subscribed to a queue; a new SUB takes it over and
  the old session is told `END`;
* ``delivered[rcv_id]``    the message id handed to the recipient and not yet ACKed: at most
  one per queue, and it is always the queue's oldest message. `ACK` of anything else is
  `NO_MSG`; `ACK` of it deletes it and answers with the next `MSG`, or `OK`. A push the
  shell could not hand to a busy session (`defer`) leaves the queue *pending*: no later SEND
  pushes, and `deliver_pending` hands the oldest message over once the session has room;
* queue records and derived keys, cached (the store stays the truth, writes go to both).

Commands on one queue are serialised by a striped lock, so a SEND and an ACK on the same queue
cannot interleave between the store and the delivery bookkeeping; different queues proceed in
parallel.

No existence oracle: authorisation failures (unknown entity, bad signature, replay from
another session) all answer `AUTH`, and every refusal takes the same path whether or not the
queue exists: exactly one signature verification (against a fixed decoy key when there is no
queue) and exactly one store lookup of the entity (a queue found in the cache is looked up in
the store once more when the command is refused), and a store lookup returns and decodes a
decoy row when the queue is missing (`ServerStore.queue_by_rcv_id`), so neither the cache
nor the store tells a prober anything. Successful commands keep the cache's speed: only the
owner of a key can make one. bench/server_abuse.py measures the two refusal times.

Limits (protocol/server/limits.py): queues created per session per window (`ERR QUOTA`),
messages and bytes per queue and bytes in the store (the quota marker, then `ERR QUOTA`),
AUTH refusals per session per window (`Session.abusive`: the shell closes the session).

Message bodies are encrypted for the recipient *at SEND*, with the queue's server↔recipient
secret and the fresh message id as nonce, and stored that way: what goes in and what comes out
cannot be matched by content, and the store never holds a body in clear.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol import crypto
from protocol.queue import (
    ID_SIZE,
    Ack,
    Command,
    Del,
    End,
    Err,
    ErrorCode,
    Get,
    Ids,
    Key,
    LDel,
    LGet,
    Lnk,
    LSet,
    MessageContent,
    Msg,
    MsgFlag,
    New,
    Off,
    Ok,
    Ping,
    Pong,
    QueueMode,
    Reply,
    Send,
    SKey,
    Sub,
    Transmission,
    WireError,
    decode_command,
    decode_transmission,
    encode_content,
    encode_reply,
    signed_payload,
)
from protocol.server.limits import Limits, SlidingWindow
from storage.server import (
    AppendOutcome,
    DuplicateLinkId,
    QueueRecord,
    QueueStatus,
    Quota,
    ServerStore,
    StoredMessage,
)

log = logging.getLogger(__name__)

_LOCK_STRIPES = 64
_CACHE_LIMIT = 200_000  # queue records; past it the cache starts again (the store has all)
# Verifying against this key makes an unknown entity cost what a known one costs.
_DECOY_KEY = crypto.SigningKey.generate().public
# `delivered` of a queue whose MSG the shell could not hand over (see `defer`): not an id.
_PENDING = b""

# What one signature check needs: (public key, signature, signed payload).
SignatureCheck = tuple[bytes, bytes, bytes]


class Session:
    """One client connection as the broker sees it; the shell owns the socket."""

    def __init__(self, session_id: bytes | None = None, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        self.session_id = session_id or os.urandom(32)
        self.subscriptions: set[bytes] = set()
        self.pending: set[bytes] = set()  # subscribed queues whose MSG waits for room
        self.consecutive_errors = 0  # undecodable frames in a row
        self.new_queues = SlidingWindow(limits.new_queues, limits.new_queue_window)
        self.auth_failures = SlidingWindow(limits.auth_failures, limits.auth_failure_window)
        self.abusive = False  # set when it earned too many AUTH refusals
        self.closed = False
        self.outbox: Any = None  # the shell's way to reach the connection

    def __repr__(self) -> str:
        return f"Session({self.session_id.hex()[:8]})"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame for a session: the reply to the sender, or a push to a subscriber.

    `pushed` is the queue of a `MSG` pushed unasked (after a SEND, or after SUB's `OK`): a
    shell whose session has no room for it may `defer` it instead of sending it."""

    session: Session
    frame: bytes
    pushed: bytes | None = None
    msg_id: bytes | None = None


@dataclass(slots=True)
class Prepared:
    """A decoded transmission with what `apply` needs from before: the queue it names (as
    looked up then), whether that took a store lookup, and its signature check."""

    transmission: Transmission | None  # None: undecodable, `error` says why
    command: Command | None = None
    error: WireError | None = None
    record: QueueRecord | None = None
    from_store: bool = False
    check: SignatureCheck | None = None
    valid: bool | None = None  # the check's outcome, when verified ahead of `apply`


@dataclass(slots=True)
class BrokerStats:
    commands: int = 0
    errors: int = 0
    delivered: int = 0
    store_lookups: int = 0  # queue lookups that went to the store (cache misses, refusals)


@dataclass(slots=True)
class _QueueState:
    subscriber: Session | None = None
    delivered: bytes | None = None


@dataclass(slots=True)
class _Caches:
    """Queue records and derived keys; the store stays the truth, writes go through both."""

    by_rcv: dict[bytes, QueueRecord] = field(default_factory=dict)
    by_snd: dict[bytes, bytes] = field(default_factory=dict)
    box_keys: dict[bytes, bytes] = field(default_factory=dict)


class QueueBroker:
    """Applies queue commands to a `ServerStore`; see the module docstring."""

    def __init__(
        self,
        store: ServerStore,
        *,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.quota = Quota(self.limits.quota, self.limits.quota_bytes, self.limits.store_bytes)
        self.message_ttl = self.limits.message_ttl
        self.clock = clock
        self.stats = BrokerStats()
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._state_lock = threading.Lock()
        self._queues: dict[bytes, _QueueState] = {}
        self._cache = _Caches()

    def new_session(self, session_id: bytes | None = None) -> Session:
        return Session(session_id, self.limits)

    # ------------------------------------------------------------------ sessions

    def close_session(self, session: Session) -> None:
        """Forget a session's subscriptions; its delivered messages will be delivered again."""
        session.closed = True
        with self._state_lock:
            for rcv_id in session.subscriptions:
                state = self._queues.get(rcv_id)
                if state is not None and state.subscriber is session:
                    self._queues.pop(rcv_id, None)
            session.subscriptions.clear()
            session.pending.clear()

    def forget_cached_queues(self) -> None:
        """Drop every cached queue record and key: the next use reads the store again."""
        self._cache = _Caches()

    def subscriber_count(self) -> int:
        with self._state_lock:
            return sum(1 for s in self._queues.values() if s.subscriber is not None)

    def defer(self, item: Outgoing) -> None:
        """The shell did not send `item` (a pushed MSG) for lack of room: the queue waits,
        with no MSG delivered, until `deliver_pending` hands its oldest message over."""
        rcv_id, session = item.pushed, item.session
        if rcv_id is None:
            return
        with self._state_lock:
            state = self._queues.get(rcv_id)
            if state is not None and state.subscriber is session and state.delivered == item.msg_id:
                state.delivered = _PENDING
                session.pending.add(rcv_id)

    def deliver_pending(self, session: Session, limit: int) -> list[Outgoing]:
        """MSGs for up to `limit` of the session's pending queues (see `defer`)."""
        out: list[Outgoing] = []
        while session.pending and len(out) < limit:
            rcv_id = session.pending.pop()
            with self._stripe(rcv_id):
                state = self._queue_state(rcv_id)
                if state is None or state.subscriber is not session:
                    continue
                if state.delivered != _PENDING:
                    continue
                first = self.store.first_message(rcv_id)
                if first is None:
                    with self._state_lock:
                        state.delivered = None
                    continue
                out.append(self._deliver(session, rcv_id, first, b""))
        return out

    # ------------------------------------------------------------------ commands

    def handle(self, session: Session, frame: bytes) -> list[Outgoing]:
        """Process one frame from `session`; never raises."""
        return self.apply(session, self.prepare(session, frame))

    def prepare(self, session: Session, frame: bytes) -> Prepared:
        """Decode `frame` and look up what `apply` will check it against; never raises.

        Looks the named queue up in the cache, else in the store (remembering it), and
        names the signature check: against the key of the queue or of the command, or
        against the decoy key when there is no queue.
        """
        try:
            t = decode_transmission(frame)
            command = decode_command(t)
        except WireError as exc:
            return Prepared(None, error=exc)
        p = Prepared(t, command)
        try:
            if isinstance(command, Ping | LGet):
                return p
            if isinstance(command, New):
                key: bytes | None = command.rcv_auth_key
            elif isinstance(command, SKey | Send):
                p.record, p.from_store = self._sender_record(t.entity_id)
                key = self._sender_key(p.record, command)
                if key is _NO_CHECK:
                    assert p.record is not None
                    if not t.signature or p.record.mode is QueueMode.CONTACT:
                        return p
                    key = None  # signed, to an unsecured queue: refused, see `_send`
            else:
                p.record, p.from_store = self._record(t.entity_id)
                key = p.record.rcv_auth_key if p.record else None
        except Exception:  # the store failed: apply looks again and answers INTERNAL
            log.exception("lookup failed", extra={"command": type(command).__name__})
            return p
        payload = signed_payload(session.session_id, t.corr_id, t.entity_id, t.command)
        p.check = (key or _DECOY_KEY, t.signature, payload)
        return p

    def apply(self, session: Session, p: Prepared) -> list[Outgoing]:
        """Process a prepared frame; never raises."""
        self.stats.commands += 1
        t, command = p.transmission, p.command
        if t is None or command is None:
            assert p.error is not None
            session.consecutive_errors += 1
            self.stats.errors += 1
            return [Outgoing(session, encode_reply(p.error.corr_id, b"", Err(p.error.code)))]
        try:
            out = self._dispatch(session, t, command, p)
        except Exception:
            log.exception("command failed", extra={"command": type(command).__name__})
            out = [self._reply(session, t, Err(ErrorCode.INTERNAL))]
        session.consecutive_errors = 0
        return out

    def _dispatch(
        self, session: Session, t: Transmission, command: Command, p: Prepared
    ) -> list[Outgoing]:
        match command:
            case Ping():
                return [self._reply(session, t, Pong())]
            case New():
                return self._new(session, t, command, p)
            case LGet(link_id=link_id):
                record = self.store.queue_by_link_id(link_id)
                if record is None or record.link_data is None:
                    return [self._error(session, t, ErrorCode.AUTH)]
                return [self._reply(session, t, Lnk(record.snd_id, record.link_data))]
            case SKey() | Send():
                return self._sender_command(session, t, command, p)
            case _:
                return self._recipient_command(session, t, command, p)

    # ------------------------------------------------------------------ authorisation

    def _current(self, p: Prepared, by_sender: bool) -> tuple[QueueRecord | None, bool]:
        """The queue `p` names, as it is now: the prepared record while the cache still
        holds that very record (nothing changed it since), else looked up again."""
        t = p.transmission
        assert t is not None
        cache = self._cache
        if by_sender:
            rcv_id = cache.by_snd.get(t.entity_id)
            cached = cache.by_rcv.get(rcv_id) if rcv_id is not None else None
        else:
            cached = cache.by_rcv.get(t.entity_id)
        if p.record is None and cached is None and (p.from_store or p.check is not None):
            return None, p.from_store  # still unknown: ids are random, not made meanwhile
        if p.record is not None and cached is p.record:
            return p.record, p.from_store
        record, from_store = (
            self._sender_record(t.entity_id) if by_sender else self._record(t.entity_id)
        )
        return record, from_store or p.from_store

    def _authorised(
        self, session: Session, t: Transmission, key: bytes | None, p: Prepared
    ) -> bool:
        """One verification against `key`, or against the decoy key if there is none."""
        payload = signed_payload(session.session_id, t.corr_id, t.entity_id, t.command)
        check = (key or _DECOY_KEY, t.signature, payload)
        valid = p.valid if p.check == check and p.valid is not None else None
        if valid is None:
            valid = crypto.is_valid_signature(*check)
        return valid and key is not None

    def _refused(
        self, session: Session, t: Transmission, from_store: bool, by_sender: bool
    ) -> Outgoing:
        """AUTH, after the store lookup a refusal always costs (see the module docstring)."""
        if not from_store:
            self.stats.store_lookups += 1
            if by_sender:
                self.store.queue_by_snd_id(t.entity_id)
            else:
                self.store.queue_by_rcv_id(t.entity_id)
        return self._error(session, t, ErrorCode.AUTH)

    # ------------------------------------------------------------------ NEW

    def _new(self, session: Session, t: Transmission, command: New, p: Prepared) -> list[Outgoing]:
        if crypto.is_weak_signing_key(command.rcv_auth_key) or not self._authorised(
            session, t, command.rcv_auth_key, p
        ):
            return [self._error(session, t, ErrorCode.AUTH)]
        now = self.clock()
        if session.new_queues.full(now):
            return [self._error(session, t, ErrorCode.QUOTA)]
        server_dh = crypto.DhKey.generate()
        try:
            crypto.DhKey.from_private(server_dh.private).shared_secret(command.rcv_dh_key)
        except crypto.CryptoError:
            return [self._error(session, t, ErrorCode.CMD_SYNTAX)]
        session.new_queues.add(now)
        record = self.store.create_queue(
            QueueRecord(
                rcv_id=os.urandom(ID_SIZE),
                snd_id=os.urandom(ID_SIZE),
                rcv_auth_key=command.rcv_auth_key,
                rcv_dh_key=command.rcv_dh_key,
                srv_dh_private=server_dh.private,
                srv_dh_public=server_dh.public,
                mode=command.mode,
            )
        )
        out = [self._reply(session, t, Ids(record.rcv_id, record.snd_id, record.srv_dh_public))]
        if command.subscribe:
            with self._stripe(record.rcv_id):
                out += self._subscribe(session, record.rcv_id)
        return out

    # ------------------------------------------------------------------ recipient commands

    def _recipient_command(
        self, session: Session, t: Transmission, command: Command, p: Prepared
    ) -> list[Outgoing]:
        rcv_id = t.entity_id
        record, from_store = self._current(p, by_sender=False)
        if not self._authorised(session, t, record.rcv_auth_key if record else None, p):
            return [self._refused(session, t, from_store, by_sender=False)]
        assert record is not None
        with self._stripe(rcv_id):
            match command:
                case Sub():
                    return [self._reply(session, t, Ok()), *self._subscribe(session, rcv_id)]
                case Key(snd_auth_key=key):
                    if record.mode is QueueMode.CONTACT:
                        return [self._error(session, t, ErrorCode.CMD_PROHIBITED)]
                    return [self._secure(session, t, record, key)]
                case Ack(msg_id=msg_id):
                    return [self._ack(session, t, rcv_id, msg_id)]
                case Get():
                    return [self._get(session, t, rcv_id)]
                case Off():
                    self.store.suspend(rcv_id)
                    self._forget(rcv_id)
                    return [self._reply(session, t, Ok())]
                case Del():
                    return self._delete(session, t, record)
                case LSet(link_id=link_id, data=data):
                    if record.mode is not QueueMode.CONTACT:
                        return [self._error(session, t, ErrorCode.CMD_PROHIBITED)]
                    try:
                        self.store.set_link(rcv_id, link_id, data)
                    except DuplicateLinkId:
                        return [self._error(session, t, ErrorCode.AUTH)]
                    self._forget(rcv_id)
                    return [self._reply(session, t, Ok())]
                case LDel():
                    self.store.delete_link(rcv_id)
                    self._forget(rcv_id)
                    return [self._reply(session, t, Ok())]
        return [self._error(session, t, ErrorCode.CMD_PROHIBITED)]  # pragma: no cover

    def _subscribe(self, session: Session, rcv_id: bytes) -> list[Outgoing]:
        out: list[Outgoing] = []
        with self._state_lock:
            state = self._queues.setdefault(rcv_id, _QueueState())
            previous = state.subscriber
            state.subscriber = session
            state.delivered = None
            session.subscriptions.add(rcv_id)
            session.pending.discard(rcv_id)
            if previous is not None and previous is not session:
                previous.subscriptions.discard(rcv_id)
                previous.pending.discard(rcv_id)
                out.append(Outgoing(previous, encode_reply(b"", rcv_id, End())))
        first = self.store.first_message(rcv_id)
        if first is not None:
            out.append(self._deliver(session, rcv_id, first, b""))
        return out

    def _secure(self, session: Session, t: Transmission, record: QueueRecord, key: bytes):
        if crypto.is_weak_signing_key(key):  # anyone could "sign" as this key
            return self._error(session, t, ErrorCode.AUTH)
        current = record.snd_auth_key
        if current is None:
            updated = self.store.set_sender_key(record.rcv_id, key)
            self._forget(record.rcv_id)
            current = updated.snd_auth_key if updated is not None else None
        if current != key:
            return self._error(session, t, ErrorCode.AUTH)
        return self._reply(session, t, Ok())

    def _ack(self, session: Session, t: Transmission, rcv_id: bytes, msg_id: bytes) -> Outgoing:
        state = self._queue_state(rcv_id)
        if state is None or state.delivered != msg_id:
            return self._error(session, t, ErrorCode.NO_MSG)
        deleted, following = self.store.ack_message(rcv_id, msg_id)
        with self._state_lock:
            state.delivered = None
        if not deleted:
            # The delivered message expired meanwhile: hand over whatever is oldest now.
            following = self.store.first_message(rcv_id)
        if following is not None and state.subscriber is session:
            return self._deliver(session, rcv_id, following, t.corr_id)
        return self._reply(session, t, Ok())

    def _get(self, session: Session, t: Transmission, rcv_id: bytes) -> Outgoing:
        state = self._queue_state(rcv_id)
        if state is not None and state.subscriber not in (None, session):
            return self._error(session, t, ErrorCode.CMD_PROHIBITED)
        first = self.store.first_message(rcv_id)
        if first is None:
            return self._reply(session, t, Ok())
        with self._state_lock:
            self._queues.setdefault(rcv_id, _QueueState())
        return self._deliver(session, rcv_id, first, t.corr_id)

    def _delete(self, session: Session, t: Transmission, record: QueueRecord) -> list[Outgoing]:
        self.store.delete_queue(record.rcv_id)
        self._forget(record.rcv_id)
        out = [self._reply(session, t, Ok())]
        with self._state_lock:
            state = self._queues.pop(record.rcv_id, None)
        if state is not None and state.subscriber is not None:
            state.subscriber.subscriptions.discard(record.rcv_id)
            state.subscriber.pending.discard(record.rcv_id)
            if state.subscriber is not session:
                out.append(Outgoing(state.subscriber, encode_reply(b"", record.rcv_id, End())))
        return out

    # ------------------------------------------------------------------ sender commands

    @staticmethod
    def _sender_key(record: QueueRecord | None, command: SKey | Send) -> Any:
        """The key a sender command is checked against (None: the decoy), or _NO_CHECK for a
        SEND that needs no signature check (an open queue: refused or taken by its mode)."""
        if isinstance(command, SKey):
            return command.snd_auth_key if record else None
        if record is None or record.status is not QueueStatus.ACTIVE:
            return None
        if record.mode is QueueMode.MESSAGING and record.snd_auth_key is not None:
            return record.snd_auth_key
        return _NO_CHECK

    def _sender_command(
        self, session: Session, t: Transmission, command: SKey | Send, p: Prepared
    ) -> list[Outgoing]:
        record, from_store = self._current(p, by_sender=True)
        if isinstance(command, SKey):
            if not self._authorised(session, t, command.snd_auth_key if record else None, p):
                return [self._refused(session, t, from_store, by_sender=True)]
            assert record is not None
            if record.mode is QueueMode.CONTACT:
                return [self._error(session, t, ErrorCode.CMD_PROHIBITED)]
            with self._stripe(record.rcv_id):
                current, _ = self._record(record.rcv_id)
                return [self._secure(session, t, current or record, command.snd_auth_key)]
        return self._send(session, t, command, p, record=record, from_store=from_store)

    def _send(
        self,
        session: Session,
        t: Transmission,
        command: Send,
        p: Prepared,
        *,
        record: QueueRecord | None,
        from_store: bool,
    ) -> list[Outgoing]:
        key = self._sender_key(record, command)
        if key is _NO_CHECK and t.signature:  # an open queue takes unsigned SENDs only
            assert record is not None
            if record.mode is QueueMode.CONTACT:
                return [self._error(session, t, ErrorCode.CMD_HAS_AUTH)]
            # Signed, to an unsecured queue: refused like any AUTH, verification and lookup
            # included, so that it does not tell such a queue from none.
            key = None
        if key is not _NO_CHECK and (not self._authorised(session, t, key, p) or record is None):
            return [self._refused(session, t, from_store, by_sender=True)]
        assert record is not None
        now_ms = int(self.clock() * 1000)
        box_key = self._box_key(record)
        message = _sealed(box_key, now_ms, command.flags & ~MsgFlag.QUOTA_MARKER, command.body)
        markers: list[StoredMessage] = []  # sealed only when the queue turns out to be full

        def marker() -> StoredMessage:
            markers.append(_sealed(box_key, now_ms, MsgFlag.QUOTA_MARKER, b""))
            return markers[-1]

        expire_before = now_ms - int(self.message_ttl * 1000)
        with self._stripe(record.rcv_id):
            outcome = self.store.append_message(
                record.rcv_id, message, marker, self.quota, expire_before
            )
            if outcome is AppendOutcome.QUOTA:
                return [self._error(session, t, ErrorCode.QUOTA)]
            stored = message if outcome is AppendOutcome.STORED else markers[-1]
            reply = Ok() if outcome is AppendOutcome.STORED else Err(ErrorCode.QUOTA)
            out = [self._reply(session, t, reply)]
            state = self._queue_state(record.rcv_id)
            if state is not None and state.subscriber is not None and state.delivered is None:
                # Subscribed with nothing delivered means the queue was empty (every SUB and
                # ACK hands over the oldest message): the one just stored is the oldest.
                out.append(self._deliver(state.subscriber, record.rcv_id, stored, b""))
            return out

    # ------------------------------------------------------------------ helpers

    def _deliver(
        self, session: Session, rcv_id: bytes, message: StoredMessage, corr_id: bytes
    ) -> Outgoing:
        with self._state_lock:
            self._queues.setdefault(rcv_id, _QueueState()).delivered = message.msg_id
        self.stats.delivered += 1
        frame = encode_reply(corr_id, rcv_id, Msg(message.msg_id, message.enc_body))
        pushed = None if corr_id else rcv_id
        return Outgoing(session, frame, pushed, message.msg_id)

    def _sender_record(self, snd_id: bytes) -> tuple[QueueRecord | None, bool]:
        """The queue with this sender id, and whether the store was asked."""
        rcv_id = self._cache.by_snd.get(snd_id)
        record = self._cache.by_rcv.get(rcv_id) if rcv_id is not None else None
        if record is not None:
            return record, False
        self.stats.store_lookups += 1
        record = self.store.queue_by_snd_id(snd_id)
        if record is not None:
            self._remember(record)
        return record, True

    def _record(self, rcv_id: bytes) -> tuple[QueueRecord | None, bool]:
        """The queue with this recipient id, and whether the store was asked."""
        record = self._cache.by_rcv.get(rcv_id)
        if record is not None:
            return record, False
        self.stats.store_lookups += 1
        record = self.store.queue_by_rcv_id(rcv_id)
        if record is not None:
            self._remember(record)
        return record, True

    def _remember(self, record: QueueRecord) -> None:
        if len(self._cache.by_rcv) > _CACHE_LIMIT:  # bound memory; the store has everything
            self._cache = _Caches()
        self._cache.by_rcv[record.rcv_id] = record
        self._cache.by_snd[record.snd_id] = record.rcv_id

    def _forget(self, rcv_id: bytes) -> None:
        record = self._cache.by_rcv.pop(rcv_id, None)
        if record is not None:
            self._cache.by_snd.pop(record.snd_id, None)
        self._cache.box_keys.pop(rcv_id, None)

    def _box_key(self, record: QueueRecord) -> bytes:
        key = self._cache.box_keys.get(record.rcv_id)
        if key is None:
            secret = crypto.DhKey.from_private(record.srv_dh_private).shared_secret(
                record.rcv_dh_key
            )
            key = crypto.hkdf(secret, crypto.SERVER_RECIPIENT_INFO)
            self._cache.box_keys[record.rcv_id] = key
        return key

    def _queue_state(self, rcv_id: bytes) -> _QueueState | None:
        with self._state_lock:
            return self._queues.get(rcv_id)

    def _stripe(self, rcv_id: bytes) -> threading.Lock:
        return self._stripes[hash(rcv_id) % _LOCK_STRIPES]

    @staticmethod
    def _reply(session: Session, t: Transmission, reply: Reply) -> Outgoing:
        return Outgoing(session, encode_reply(t.corr_id, t.entity_id, reply))

    def _error(self, session: Session, t: Transmission, code: ErrorCode) -> Outgoing:
        self.stats.errors += 1
        if code is ErrorCode.AUTH:
            now = self.clock()
            session.auth_failures.add(now)
            if session.auth_failures.full(now):  # `auth_failures` of them within the window
                session.abusive = True
        return self._reply(session, t, Err(code))


_NO_CHECK: Any = object()  # see QueueBroker._sender_key


def verify_prepared(prepared: list[Prepared]) -> None:
    """Make the signature checks of `prepared` (from `QueueBroker.prepare`), filling in
    `valid`; pure apart from that, any thread (Ed25519 verification releases the GIL)."""
    for p in prepared:
        if p.check is not None:
            p.valid = crypto.is_valid_signature(*p.check)


def _sealed(box_key: bytes, ts: int, flags: int, body: bytes) -> StoredMessage:
    msg_id = os.urandom(ID_SIZE)
    content = encode_content(MessageContent(ts, int(flags), body))
    return StoredMessage(
        msg_id=msg_id,
        ts=ts,
        enc_body=crypto.seal_with_id(box_key, msg_id, content),
        quota_marker=bool(flags & MsgFlag.QUOTA_MARKER),
    )
