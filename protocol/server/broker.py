"""The queue server's command processing: one transmission in, frames for sessions out.

Theory of operation
-------------------
`QueueBroker.handle(session, frame)` decodes a transmission (protocol/queue.py), checks its
authorisation, applies it to the store (storage/server.py) and returns the frames to send:
the reply to `session` and any pushes to other sessions (`MSG` to a queue's subscriber after
a SEND, `END` to the session that lost a subscription). It knows no sockets: the trio shell
(protocol/server/shell.py) calls it from worker threads and writes what it returns; tests call it
directly.

State kept here, in memory, per running server (the store keeps everything durable):

* ``subscriber[rcv_id]``   the session subscribed to a queue; a new SUB takes it over and
  the old session is told `END`;
* ``delivered[rcv_id]``    the message id handed to the recipient and not yet ACKed: at most
  one per queue, and it is always the queue's oldest message. `ACK` of anything else is
  `NO_MSG`; `ACK` of it deletes it and answers with the next `MSG`, or `OK`.

Commands on one queue are serialised by a striped lock, so a SEND and an ACK on the same queue
cannot interleave between the store and the delivery bookkeeping; different queues proceed in
parallel. Authorisation failures (unknown entity, bad signature, replay from another session)
all answer `AUTH`, and an unknown entity still costs one signature verification so the two
cases take the same time.

A shell that receives a burst of frames from one session may verify their signatures ahead
of `handle`, off its event loop (`signature_checks`, `verify_signatures`, `Session.verified`),
and may run several `handle` calls in one store transaction, posting their frames only after
it commits (protocol/server/shell.py does both); `handle` itself is the same either way.

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
from storage.server import (
    AppendOutcome,
    DuplicateLinkId,
    QueueRecord,
    QueueStatus,
    ServerStore,
    StoredMessage,
)

log = logging.getLogger(__name__)

DEFAULT_QUOTA = 128
DEFAULT_MESSAGE_TTL = 21 * 24 * 3600.0
_LOCK_STRIPES = 64
# Verifying against this key makes an unknown entity cost what a known one costs.
_DECOY_KEY = crypto.SigningKey.generate().public


# What one signature check needs: (public key, signature, signed payload).
SignatureCheck = tuple[bytes, bytes, bytes]


class Session:
    """One client connection as the broker sees it; the shell owns the socket."""

    def __init__(self, session_id: bytes | None = None) -> None:
        self.session_id = session_id or os.urandom(32)
        self.subscriptions: set[bytes] = set()
        self.consecutive_errors = 0  # undecodable frames in a row
        self.consecutive_auth_failures = 0  # commands answered AUTH in a row
        # Signature checks done ahead of `handle` (see `QueueBroker.signature_checks`):
        # (key, signature, signed payload) -> valid. Filled and cleared by the shell.
        self.verified: dict[SignatureCheck, bool] = {}
        self.closed = False
        self.outbox: Any = None  # the shell's way to reach the connection (a trio channel)

    def __repr__(self) -> str:
        return f"Session({self.session_id.hex()[:8]})"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame for a session: the reply to the sender, or a push to a subscriber."""

    session: Session
    frame: bytes


@dataclass(slots=True)
class BrokerStats:
    commands: int = 0
    errors: int = 0
    delivered: int = 0


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
        quota: int = DEFAULT_QUOTA,
        message_ttl: float = DEFAULT_MESSAGE_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.quota = quota
        self.message_ttl = message_ttl
        self.clock = clock
        self.stats = BrokerStats()
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._state_lock = threading.Lock()
        self._queues: dict[bytes, _QueueState] = {}
        self._cache = _Caches()

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

    def forget_cached_queues(self) -> None:
        """Drop every cached queue record and key: the next use reads the store again."""
        self._cache = _Caches()

    def subscriber_count(self) -> int:
        with self._state_lock:
            return sum(1 for s in self._queues.values() if s.subscriber is not None)

    # ------------------------------------------------------------------ commands

    def handle(self, session: Session, frame: bytes) -> list[Outgoing]:
        """Process one frame from `session`; never raises."""
        self.stats.commands += 1
        try:
            transmission = decode_transmission(frame)
            command = decode_command(transmission)
        except WireError as exc:
            session.consecutive_errors += 1
            self.stats.errors += 1
            return [Outgoing(session, encode_reply(exc.corr_id, b"", Err(exc.code)))]
        auth_failures = session.consecutive_auth_failures
        try:
            out = self._dispatch(session, transmission, command)
        except Exception:
            log.exception("command failed", extra={"command": type(command).__name__})
            out = [self._reply(session, transmission, Err(ErrorCode.INTERNAL))]
        session.consecutive_errors = 0
        if session.consecutive_auth_failures == auth_failures:
            # Not refused as AUTH (`_error` counts those): the run of failures is over.
            # Undecodable frames neither count nor end it, so alternating them with AUTH
            # failures cannot dodge both limits.
            session.consecutive_auth_failures = 0
        return out

    def signature_checks(self, session: Session, frames: list[bytes]) -> list[SignatureCheck]:
        """The signature checks `handle` will make for `frames`, as far as known now.

        For a shell that verifies a burst of frames at once, off its event loop (Ed25519
        verification does not hold the GIL): it passes the checks to `verify_signatures`,
        puts the results in `session.verified`, and `handle` then takes each result from
        there instead of verifying again. A check is keyed by everything its outcome depends
        on, so a key that changes in between (a KEY in the same burst) only means a check
        made twice, never a wrong answer. Looks queues up like `handle` (cache, then store).
        """
        checks: list[SignatureCheck] = []
        for frame in frames:
            try:
                t = decode_transmission(frame)
                command = decode_command(t)
            except WireError:
                continue
            if not t.signature or isinstance(command, Ping | LGet):
                continue
            key: bytes | None
            if isinstance(command, New):
                key = command.rcv_auth_key
            elif isinstance(command, SKey | Send):
                record = self._sender_record(t.entity_id)
                if isinstance(command, SKey):
                    key = command.snd_auth_key if record else None
                elif record is None or record.status is not QueueStatus.ACTIVE:
                    key = None
                elif record.mode is QueueMode.CONTACT or record.snd_auth_key is None:
                    continue  # refused without a check (HAS_AUTH, AUTH)
                else:
                    key = record.snd_auth_key
            else:
                record = self._record(t.entity_id)
                key = record.rcv_auth_key if record else None
            payload = signed_payload(session.session_id, t.corr_id, t.entity_id, t.command)
            checks.append((key or _DECOY_KEY, t.signature, payload))
        return checks

    def _dispatch(self, session: Session, t: Transmission, command: Command) -> list[Outgoing]:
        match command:
            case Ping():
                return [self._reply(session, t, Pong())]
            case New():
                return self._new(session, t, command)
            case LGet(link_id=link_id):
                record = self.store.queue_by_link_id(link_id)
                if record is None or record.link_data is None:
                    return [self._error(session, t, ErrorCode.AUTH)]
                return [self._reply(session, t, Lnk(record.snd_id, record.link_data))]
            case SKey() | Send():
                return self._sender_command(session, t, command)
            case _:
                return self._recipient_command(session, t, command)

    # ------------------------------------------------------------------ NEW

    def _new(self, session: Session, t: Transmission, command: New) -> list[Outgoing]:
        payload = signed_payload(session.session_id, t.corr_id, t.entity_id, t.command)
        if crypto.is_weak_signing_key(command.rcv_auth_key) or not _verified(
            session, (command.rcv_auth_key, t.signature, payload)
        ):
            return [self._error(session, t, ErrorCode.AUTH)]
        server_dh = crypto.DhKey.generate()
        try:
            crypto.DhKey.from_private(server_dh.private).shared_secret(command.rcv_dh_key)
        except crypto.CryptoError:
            return [self._error(session, t, ErrorCode.CMD_SYNTAX)]
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
        self, session: Session, t: Transmission, command: Command
    ) -> list[Outgoing]:
        rcv_id = t.entity_id
        record = self._record(rcv_id)
        if not self._authorised(session, t, record.rcv_auth_key if record else None):
            return [self._error(session, t, ErrorCode.AUTH)]
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
            if previous is not None and previous is not session:
                previous.subscriptions.discard(rcv_id)
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
            if state.subscriber is not session:
                out.append(Outgoing(state.subscriber, encode_reply(b"", record.rcv_id, End())))
        return out

    # ------------------------------------------------------------------ sender commands

    def _sender_command(
        self, session: Session, t: Transmission, command: SKey | Send
    ) -> list[Outgoing]:
        record = self._sender_record(t.entity_id)
        if isinstance(command, SKey):
            if not self._authorised(session, t, command.snd_auth_key if record else None):
                return [self._error(session, t, ErrorCode.AUTH)]
            assert record is not None
            if record.mode is QueueMode.CONTACT:
                return [self._error(session, t, ErrorCode.CMD_PROHIBITED)]
            with self._stripe(record.rcv_id):
                return [
                    self._secure(
                        session, t, self._record(record.rcv_id) or record, command.snd_auth_key
                    )
                ]
        return self._send(session, t, command, record)

    def _send(
        self, session: Session, t: Transmission, command: Send, record: QueueRecord | None
    ) -> list[Outgoing]:
        if record is None or record.status is not QueueStatus.ACTIVE:
            self._authorised(session, t, None)
            return [self._error(session, t, ErrorCode.AUTH)]
        if record.mode is QueueMode.CONTACT:
            if t.signature:
                return [self._error(session, t, ErrorCode.CMD_HAS_AUTH)]
        elif record.snd_auth_key is not None:
            if not t.signature or not self._authorised(session, t, record.snd_auth_key):
                return [self._error(session, t, ErrorCode.AUTH)]
        elif t.signature:
            return [self._error(session, t, ErrorCode.AUTH)]
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
        return Outgoing(
            session, encode_reply(corr_id, rcv_id, Msg(message.msg_id, message.enc_body))
        )

    def _authorised(self, session: Session, t: Transmission, key: bytes | None) -> bool:
        payload = signed_payload(session.session_id, t.corr_id, t.entity_id, t.command)
        valid = _verified(session, (key or _DECOY_KEY, t.signature, payload))
        return valid and key is not None

    def _sender_record(self, snd_id: bytes) -> QueueRecord | None:
        rcv_id = self._cache.by_snd.get(snd_id)
        record = self._record(rcv_id) if rcv_id else None
        if record is None:
            record = self.store.queue_by_snd_id(snd_id)
            if record is not None:
                self._remember(record)
        return record

    def _record(self, rcv_id: bytes) -> QueueRecord | None:
        record = self._cache.by_rcv.get(rcv_id)
        if record is None:
            record = self.store.queue_by_rcv_id(rcv_id)
            if record is not None:
                self._remember(record)
        return record

    def _remember(self, record: QueueRecord) -> None:
        if len(self._cache.by_rcv) > 200_000:  # bound memory; the store has everything
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
            session.consecutive_auth_failures += 1
        return self._reply(session, t, Err(code))


def verify_signatures(checks: list[SignatureCheck]) -> dict[SignatureCheck, bool]:
    """Run signature checks (from `QueueBroker.signature_checks`); pure, any thread."""
    return {check: crypto.is_valid_signature(*check) for check in checks}


def _verified(session: Session, check: SignatureCheck) -> bool:
    """A check's outcome: made ahead of time for this session, or made now."""
    valid = session.verified.pop(check, None)
    return crypto.is_valid_signature(*check) if valid is None else valid


def _sealed(box_key: bytes, ts: int, flags: int, body: bytes) -> StoredMessage:
    msg_id = os.urandom(ID_SIZE)
    content = encode_content(MessageContent(ts, int(flags), body))
    return StoredMessage(
        msg_id=msg_id,
        ts=ts,
        enc_body=crypto.seal_with_id(box_key, msg_id, content),
        quota_marker=bool(flags & MsgFlag.QUOTA_MARKER),
    )
