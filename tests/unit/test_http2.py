"""The gRPC port's HTTP/2 (service/protocol/rpc/http2.py), frame by frame: a client's bytes in, the frames it
gets back read with hpack's decoder, the calls' layer a recorder. The end-to-end behaviour (tritonclient,
grpcio's client, hostile calls) is tests/integration/test_grpc.py's."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest
from hpack import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from service.protocol.rpc import http2
from service.protocol.rpc.http2 import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Connection,
    frame,
)

GRPC = [(":method", "POST"), (":scheme", "http"), (":path", "/pkg.Svc/Call"), (":authority", "x"),
        ("content-type", "application/grpc"), ("te", "trailers")]  # fmt: skip


class Transport:
    def __init__(self) -> None:
        self.written, self.closed = bytearray(), False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str):
        return ("127.0.0.1", 5000) if name == "peername" else None

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        """The frames written since the last call, as (type, flags, stream, payload)."""
        data, out, pos = bytes(self.written), [], 0
        while pos < len(data):
            length = int.from_bytes(data[pos : pos + 3], "big")
            kind, flags, stream = data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5 : pos + 9], "big")
            out.append((kind, flags, stream, data[pos + 9 : pos + 9 + length]))
            pos += 9 + length
        self.written.clear()
        return out


class Calls:
    """Records what the connection tells; answers nothing unless a test does."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def connected(self, conn):
        pass

    def disconnected(self, conn):
        self.events.append(("disconnected",))

    def opened(self, conn, stream):
        self.events.append(("opened", stream.id, dict(stream.headers).get(b":path")))

    def refuse_headers(self, conn, stream):
        self.events.append(("refuse_headers", stream.id))

    def message(self, conn, stream, compressed, data):
        self.events.append(("message", stream.id, bytes(data)))

    def ended(self, conn, stream):
        self.events.append(("ended", stream.id))

    def truncated(self, conn, stream):
        self.events.append(("truncated", stream.id))

    def too_large(self, conn, stream, size):
        self.events.append(("too_large", stream.id, size))
        stream.refused = True

    def reset(self, conn, stream):
        self.events.append(("reset", stream.id))


def _connect(max_message=1000, max_streams=4, settings=None) -> tuple[Connection, Transport, Calls, Encoder]:
    calls, transport = Calls(), Transport()

    async def made() -> Connection:  # the handshake timer needs a running loop
        conn = Connection(calls, max_message, 4096, max_streams, handshake_s=5)
        conn.connection_made(transport)
        return conn

    conn = asyncio.run(made())
    assert not transport.written  # nothing until the client's preface shows it speaks HTTP/2
    payload = b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items())
    conn.data_received(PREFACE + frame(SETTINGS, 0, 0, payload))
    ours = transport.frames()  # our settings, the connection's window, the client's settings acknowledged
    assert [f[:2] for f in ours] == [(SETTINGS, 0), (WINDOW_UPDATE, 0), (SETTINGS, 1)]
    return conn, transport, calls, Encoder()


def _message(data: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(data)) + data


def _call(conn, encoder, stream_id: int, body: bytes, headers=GRPC) -> None:
    conn.data_received(frame(HEADERS, END_HEADERS, stream_id, encoder.encode(headers))
                       + frame(DATA, END_STREAM, stream_id, _message(body)))  # fmt: skip


def _goaway(transport: Transport) -> int:
    frames = transport.frames()
    assert frames[-1][0] == GOAWAY and transport.closed, frames
    return struct.unpack(">II", frames[-1][3][:8])[1]


def test_a_call_in_and_its_answer_out_with_trailers():
    conn, transport, calls, encoder = _connect()
    _call(conn, encoder, 1, b"hello")
    assert calls.events == [("opened", 1, b"/pkg.Svc/Call"), ("message", 1, b"hello"), ("ended", 1)]
    stream = conn.streams[1]
    conn.send(stream, b"answer", http2.literal(b"grpc-status", b"0"))
    (h, hf, _, hp), (d, _, _, dp), (t, tf, _, tp) = transport.frames()
    decoder = Decoder()
    assert (h, d, t) == (HEADERS, DATA, HEADERS) and tf & END_STREAM and not hf & END_STREAM
    assert decoder.decode(hp) == [(":status", "200"), ("content-type", "application/grpc")]
    assert dp == _message(b"answer") and decoder.decode(tp) == [("grpc-status", "0")]
    assert 1 not in conn.streams  # both sides ended: forgotten


def test_ping_is_answered_and_the_same_headers_decode_the_same_from_the_cache():
    conn, transport, calls, encoder = _connect()
    conn.data_received(frame(PING, 0, 0, b"12345678"))
    assert transport.frames() == [(PING, 1, 0, b"12345678")]
    _call(conn, encoder, 1, b"a")
    _call(conn, encoder, 3, b"b")  # the encoder now sends only table references
    _call(conn, encoder, 5, b"c", headers=[*GRPC[:2], (":path", "/pkg.Svc/Other"), *GRPC[3:]])
    opened = [e for e in calls.events if e[0] == "opened"]
    assert opened == [("opened", 1, b"/pkg.Svc/Call"), ("opened", 3, b"/pkg.Svc/Call"),
                      ("opened", 5, b"/pkg.Svc/Other")]  # fmt: skip
    assert http2._all_indexed(bytes([0x82, 0x86, 0xBE])) and not http2._all_indexed(bytes([0x82, 0x40, 0x01]))


def test_padding_priority_and_continuation_frames_are_read():
    conn, _, calls, encoder = _connect()
    block = encoder.encode(GRPC)
    padded = bytes([3]) + struct.pack(">IB", 0, 16) + block[:5] + b"\x00" * 3
    conn.data_received(frame(HEADERS, PADDED | PRIORITY_FLAG, 1, padded)
                       + frame(CONTINUATION, END_HEADERS, 1, block[5:])
                       + frame(DATA, PADDED, 1, bytes([2]) + _message(b"xy")[:4] + b"\x00\x00")
                       + frame(DATA, END_STREAM, 1, _message(b"xy")[4:]))  # fmt: skip
    assert calls.events == [("opened", 1, b"/pkg.Svc/Call"), ("message", 1, b"xy"), ("ended", 1)]


def test_an_answer_waits_for_the_clients_window_and_the_trailers_for_the_answer():
    conn, transport, calls, encoder = _connect(settings={http2.INITIAL_WINDOW_SIZE: 10})
    _call(conn, encoder, 1, b"q")
    transport.frames()
    conn.send(conn.streams[1], b"x" * 30, http2.literal(b"grpc-status", b"0"))
    frames = transport.frames()
    assert [f[0] for f in frames] == [HEADERS, DATA] and len(frames[1][3]) == 10  # 10 bytes: the stream's window
    conn.data_received(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 15)))
    frames = transport.frames()
    assert [(f[0], len(f[3])) for f in frames] == [(DATA, 15)]
    conn.data_received(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)))
    frames = transport.frames()
    assert [f[0] for f in frames] == [DATA, HEADERS] and frames[1][1] & END_STREAM and len(frames[0][3]) == 10


def test_a_message_over_the_limit_is_refused_from_its_prefix_before_its_bytes_are_kept():
    conn, transport, calls, encoder = _connect(max_message=1000)
    conn.data_received(frame(HEADERS, END_HEADERS, 1, encoder.encode(GRPC))
                       + frame(DATA, 0, 1, b"\x00" + struct.pack(">I", 10**9) + b"z" * 100))  # fmt: skip
    assert ("too_large", 1, 10**9) in calls.events and conn.buffered == 0
    conn.data_received(frame(DATA, END_STREAM, 1, b"z" * 500))  # the rest is dropped
    assert not [e for e in calls.events if e[0] == "message"] and conn.buffered == 0


def test_a_call_ending_inside_its_message_is_told_and_a_message_in_pieces_is_joined():
    conn, _, calls, encoder = _connect()
    whole = _message(b"abcdefgh")
    conn.data_received(frame(HEADERS, END_HEADERS, 1, encoder.encode(GRPC)) + frame(DATA, 0, 1, whole[:3]))
    conn.data_received(frame(DATA, 0, 1, whole[3:9]))
    assert conn.buffered == 9
    conn.data_received(frame(DATA, END_STREAM, 1, whole[9:]))
    assert ("message", 1, b"abcdefgh") in calls.events and conn.buffered == 0
    conn.data_received(frame(HEADERS, END_HEADERS, 3, encoder.encode(GRPC)) + frame(DATA, END_STREAM, 3, whole[:7]))
    assert ("truncated", 3) in calls.events and conn.buffered == 0


def test_streams_past_the_limit_are_refused_and_a_reset_is_passed_on():
    conn, transport, calls, encoder = _connect(max_streams=2)
    for sid in (1, 3, 5):
        conn.data_received(frame(HEADERS, END_HEADERS, sid, encoder.encode(GRPC)))
    assert transport.frames() == [(RST_STREAM, 0, 5, struct.pack(">I", http2.REFUSED_STREAM))]
    conn.data_received(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
    assert ("reset", 1) in calls.events and set(conn.streams) == {3}


@pytest.mark.parametrize(
    ("what", "data", "code"),
    [
        ("DATA on stream 0", frame(DATA, 0, 0, b"x"), http2.PROTOCOL_ERROR),
        ("a frame over the size limit", struct.pack(">I", http2.FRAME_LIMIT + 1)[1:] + b"\x00" * 6,
         http2.FRAME_SIZE_ERROR),
        ("an even stream", frame(HEADERS, END_HEADERS, 2, b"\x82"), http2.PROTOCOL_ERROR),
        ("a header block cut by another frame", frame(HEADERS, 0, 1, b"\x82") + frame(PING, 0, 0, b"8" * 8),
         http2.PROTOCOL_ERROR),
        ("a header block that does not decode", frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"),
         http2.COMPRESSION_ERROR),
        ("a PING of 3 bytes", frame(PING, 0, 0, b"abc"), http2.FRAME_SIZE_ERROR),
        ("SETTINGS of 5 bytes", frame(SETTINGS, 0, 0, b"abcde"), http2.FRAME_SIZE_ERROR),
        ("a window past 2^31-1", frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)), http2.FLOW_CONTROL_ERROR),
        ("a push from the client", frame(http2.PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02"),
         http2.PROTOCOL_ERROR),
        ("DATA on a stream never opened", frame(DATA, 0, 9, b"x"), http2.PROTOCOL_ERROR),
        ("a header block over twice the header limit", frame(HEADERS, END_HEADERS, 1, b"\x82" * 9000),
         http2.ENHANCE_YOUR_CALM),
    ],
)  # fmt: skip
def test_a_broken_protocol_gets_goaway_with_its_code_and_the_connection_closes(what, data, code):
    conn, transport, calls, _ = _connect()
    conn.data_received(data)
    assert _goaway(transport) == code, what


def test_a_bug_in_a_call_closes_only_its_connection(caplog):
    conn, transport, calls, encoder = _connect()

    def broken(conn, stream):
        raise RuntimeError("a bug")

    calls.opened = broken
    conn.data_received(frame(HEADERS, END_HEADERS, 1, encoder.encode(GRPC)))
    assert _goaway(transport) == http2.INTERNAL_ERROR and "a bug" in caplog.text


def test_http1_on_the_grpc_port_is_told_what_the_port_speaks():
    calls, transport = Calls(), Transport()

    async def go():
        conn = Connection(calls, 1000, 4096, 4, handshake_s=5)
        conn.connection_made(transport)
        conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    asyncio.run(go())
    assert transport.written.startswith(b"HTTP/1.1 400") and b"gRPC" in transport.written and transport.closed


def test_a_connection_that_never_greets_is_closed_after_the_handshake_time():
    calls, transport = Calls(), Transport()

    async def go():
        conn = Connection(calls, 1000, 4096, 4, handshake_s=0.05)
        conn.connection_made(transport)
        conn.data_received(PREFACE[:10])
        await asyncio.sleep(0.2)

    asyncio.run(go())
    assert transport.closed


def test_headers_past_the_limit_are_refused_before_the_call_opens():
    conn, _, calls, encoder = _connect()
    conn.data_received(frame(HEADERS, END_HEADERS, 1, encoder.encode([*GRPC, ("x-big", "v" * 5000)])))
    assert calls.events == [("refuse_headers", 1)]


frames = st.lists(
    st.tuples(
        st.integers(0, 10), st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]), st.binary(max_size=40)
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(sequence=frames, valid_headers=st.booleans())
def test_any_frames_are_answered_by_the_protocol_never_by_a_fault_of_ours(sequence, valid_headers):
    """Frames of any type, flags, stream and payload (after a valid start, with or without a real call
    open): each is read or refused with GOAWAY; none reaches the catch-all for our own faults."""
    faults = []
    handler = logging.Handler()
    handler.emit = faults.append
    http2.log.addHandler(handler)
    try:
        conn, transport, calls, encoder = _connect()
        if valid_headers:
            conn.data_received(frame(HEADERS, END_HEADERS, 1, encoder.encode(GRPC)))
        for kind, flags, stream_id, payload in sequence:
            conn.data_received(frame(kind, flags, stream_id, payload))
            if transport.closed:
                break
    finally:
        http2.log.removeHandler(handler)
    assert not faults, faults[0].getMessage()
