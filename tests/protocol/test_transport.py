"""Sans-io pieces of the session transport: one-pass framing (protocol/transport.py) and the
server's frame-header guard (protocol/server/guard.py), without sockets."""

from __future__ import annotations

import random

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from protocol.server.guard import FrameGuard, FrameRefused
from protocol.transport import encode_frames

MESSAGES = [b"", b"a", b"x" * 125, b"y" * 126, bytes(range(256)) * 5, b"z" * 65_535, b"w" * 70_000]


@pytest.mark.parametrize("mask", [True, False])
def test_a_burst_framed_in_one_pass_reads_back_frame_by_frame(mask: bool) -> None:
    # a client's frames are masked and read by a server, a server's the other way round
    reader = FrameProtocol(client=not mask, extensions=[])
    reader.receive_bytes(encode_frames(MESSAGES, mask=mask))
    frames = list(reader.received_frames())
    assert [bytes(f.payload) for f in frames] == MESSAGES
    assert all(f.opcode is Opcode.BINARY and f.frame_finished for f in frames)


def test_masks_differ_from_frame_to_frame() -> None:
    data = encode_frames([b"same payload"] * 2, mask=True)
    first, second = data[: len(data) // 2], data[len(data) // 2 :]
    assert first[:2] == second[:2] and first[2:6] != second[2:6]


REQUEST = b"GET / HTTP/1.1\r\nHost: q\r\nUpgrade: websocket\r\n\r\n"


def test_the_guard_follows_requests_and_frames_split_anywhere() -> None:
    data = REQUEST + encode_frames(MESSAGES, mask=True)
    rng = random.Random(7)
    for _ in range(50):
        guard = FrameGuard(max_frame=100_000)
        i = 0
        while i < len(data):
            step = rng.choice((1, 2, 3, 7, 64, 4096, 70_000))
            guard.feed(data[i : i + step])
            i += step
        assert not guard._skip and not guard._header  # ended on a frame boundary


@pytest.mark.parametrize("announced", [70_001, 2**32, 2**63 - 1])
def test_the_guard_refuses_a_frame_from_its_header(announced: int) -> None:
    guard = FrameGuard(max_frame=70_000)
    guard.feed(REQUEST + encode_frames([b"fine"], mask=True))
    header = bytes((0x82, 0xFF)) + announced.to_bytes(8, "big")
    guard.feed(header[:5])  # half a header: nothing to say yet
    with pytest.raises(FrameRefused):
        guard.feed(header[5:] + b"mask")  # no byte of the body was needed


def test_the_guard_refuses_an_endless_upgrade_request() -> None:
    guard = FrameGuard(max_frame=1000, max_request=4096)
    guard.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(FrameRefused):
        for _ in range(100):
            guard.feed(b"X-Padding: " + b"p" * 100 + b"\r\n")
