"""The stream under a queue session's websocket, shared by both ends (client and server).

Owns: `SharedStream`, the one stream that trio-websocket and our own frame writer both send
on, and `encode_frames`, which frames a whole burst of binary messages in one pass. Must not:
know commands, sessions, storage or the server; it is wire (docs/architecture.md).

Why not `WebSocketConnection.send_message` per frame: every call is a wsproto event, a lock,
a TLS record and a system call, and on loopback the system call also wakes the peer, which
may take the CPU from us right there. A writer that has N frames queued frames them all at
once (`encode_frames`) and hands them to the stream as one write: one TLS record, one system
call. trio-websocket keeps sending its own control frames (pongs, the close) on the same
stream; `SharedStream` serialises the two senders so that frames never interleave, and every
send is made of whole frames, so the byte stream stays a valid sequence of frames.
"""

from __future__ import annotations

import os
import struct

import trio

# Frames the websocket's reader may queue before it stops reading: a pipelined burst of
# frames is parsed from one read without a task switch per frame.
MESSAGE_QUEUE = 64
RECEIVE_BYTES = 64 * 1024  # one read takes a whole burst, not 4 KiB of it

_BINARY_FIN = 0x82  # FIN + opcode 2 (binary): one whole message per frame
_MASK_BIT = 0x80
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def encode_frames(messages: list[bytes], *, mask: bool) -> bytes:
    """`messages` as consecutive websocket binary frames, one frame per message.

    `mask=True` for frames a client sends (RFC 6455 5.3: a fresh random key per frame),
    False for a server's.
    """
    parts: list[bytes] = []
    keys = os.urandom(4 * len(messages)) if mask else b""
    for i, payload in enumerate(messages):
        size = len(payload)
        flag = _MASK_BIT if mask else 0
        if size < 126:
            parts.append(bytes((_BINARY_FIN, flag | size)))
        elif size < 1 << 16:
            parts.append(_LEN16.pack(_BINARY_FIN, flag | 126, size))
        else:
            parts.append(_LEN64.pack(_BINARY_FIN, flag | 127, size))
        if mask:
            key = keys[4 * i : 4 * i + 4]
            parts.append(key)
            if size:
                pad = (key * (size // 4 + 1))[:size]
                masked = int.from_bytes(payload, "little") ^ int.from_bytes(pad, "little")
                parts.append(masked.to_bytes(size, "little"))
        else:
            parts.append(payload)
    return b"".join(parts)


class SharedStream(trio.abc.Stream):
    """A stream that two senders share: the websocket (control frames) and a frame writer.

    trio allows one `send_all` at a time on a stream; this one queues the second sender
    behind the first (FIFO), so each sender's bytes go out whole and in order.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self._send_lock = trio.StrictFIFOLock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()
