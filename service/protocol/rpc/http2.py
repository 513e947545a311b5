"""gRPC's HTTP/2 (RFC 9113), one connection, in the worker's event loop: frames in, calls out to server.py,
answers back as frames. Only what gRPC uses of HTTP/2: no server push, no priorities (read and ignored),
answers never compressed.

Why not grpcio's server: it spends about 300 us of CPU per unary call of its own on this 2-core machine,
more than nnserve's whole HTTP prediction; this connection about 58 us for the same bare call
(loadtests/grpc_transport.py). The price is owning the protocol's edge cases: tests/unit/test_http2.py
reads them frame by frame, the grpc integration tests with grpcio's client, tritonclient and a fuzzer.

Limits, each answered as the protocol says and none able to take the worker down:
- memory: a message beyond the largest (NNSERVE_MAX_BODY_BYTES) is refused RESOURCE_EXHAUSTED from its
  5-byte prefix, before its bytes are kept; a connection holds at most `budget` bytes of unfinished
  messages (past it, its window is not reopened until messages finish); streams at once per connection are
  capped (SETTINGS_MAX_CONCURRENT_STREAMS, beyond: REFUSED_STREAM, which clients retry);
- headers: decoded size capped (HPACK bombs), the block across CONTINUATION frames capped;
- a peer that breaks the protocol gets GOAWAY with the error's code and the connection closes; any
  exception in here closes only that connection (INTERNAL_ERROR), logged;
- a connection that does not finish its handshake within NNSERVE_HEADER_TIMEOUT_S is closed; one whose
  client does not read its answers is not read from (no new calls) until it does.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from hpack import Decoder
from hpack.exceptions import HPACKError

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x5, 0x6, 0x7, 0x9, 0xB
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = (
    range(1, 7)
)
MAX_WINDOW = 2**31 - 1
FRAME_LIMIT = 1 << 20  # our SETTINGS_MAX_FRAME_SIZE: a 256-row batch in one or two frames, not twenty
STREAM_WINDOW = 4 << 20  # what a client may send on a stream before we reopen it
CONNECTION_WINDOW = 16 << 20
_head = struct.Struct(">HBBBI")  # a frame's 9 bytes: length (2 + 1), type, flags, stream id
_u32 = struct.Struct(">I")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _head.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def _integer(value: int, prefix: int, first: int = 0) -> bytes:
    """HPACK's integer (RFC 7541 5.1) with an N-bit prefix, `first` holding the bits above it."""
    top = (1 << prefix) - 1
    if value < top:
        return bytes((first | value,))
    out, value = bytearray((first | top,)), value - top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal never put in the peer's table (RFC 7541 6.2.2), no Huffman: the answer's
    headers cost no state on either side, and the same bytes every time."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


# ":status: 200" is the static table's entry 8; content-type is entry 31's name.
RESPONSE_HEADERS = b"\x88" + _integer(31, 4) + _integer(16, 7) + b"application/grpc"


def _all_indexed(block: bytes) -> bool:
    """Whether a header block is only references to table entries: decoding it changes no table, so the
    same bytes decode to the same headers until a block that is not like it (most requests of a channel)."""
    i, n = 0, len(block)
    while i < n:
        if block[i] < 0x80:
            return False
        if block[i] & 0x7F == 0x7F:
            i += 1
            while i < n and block[i] & 0x80:
                i += 1
        i += 1
    return True


class Fault(Exception):
    """The peer broke the protocol: GOAWAY with `code`, and the connection closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Stream:
    __slots__ = ("id", "headers", "buf", "ended", "done", "window", "pending", "trailers", "sent_headers",
                 "unacked", "refused", "call")  # fmt: skip

    def __init__(self, stream_id: int, window: int) -> None:
        self.id = stream_id
        self.headers: list[tuple[bytes, bytes]] = []
        self.buf = bytearray()  # an unfinished message's bytes
        self.ended = False  # the client sent END_STREAM
        self.done = False  # we sent ours (or reset it)
        self.window = window  # what we may still send on it
        self.pending = bytearray()  # answer bytes waiting for the client's window
        self.trailers: bytes | None = None  # sent once `pending` is
        self.sent_headers = False
        self.unacked = 0  # bytes received and not yet given back by WINDOW_UPDATE
        self.refused = False  # answered before its message was read: the rest of its bytes are dropped
        self.call: Any = None  # server.py's state for the call


class Connection(asyncio.Protocol):
    """`calls` (server.py) is told of each stream's headers (opened), messages, end and reset; it answers with
    `send`, `finish` and `http_error`."""

    def __init__(self, calls: Any, max_message: int, max_header_bytes: int, max_streams: int,
                 handshake_s: float) -> None:  # fmt: skip
        self.calls, self.max_message, self.max_header_bytes = calls, max_message, max_header_bytes
        self.max_streams, self.handshake_s = max_streams, handshake_s
        self.budget = max(4 * max_message, 64 << 20)
        self.transport: Any = None
        self.peer = ""
        self.inbox = bytearray()
        self.greeted = False  # the client's preface and first SETTINGS arrived
        self.streams: dict[int, Stream] = {}
        self.last_id = 0  # the highest stream the client opened
        self.decoder = Decoder(max_header_list_size=4 * max_header_bytes)
        self.decoded: dict[bytes, list] = {}  # header blocks that are only table references, decoded
        self.block: bytearray | None = None  # a header block waiting for its CONTINUATION frames
        self.block_head = (0, 0)  # its stream and flags
        self.window = 65535  # what we may still send on the connection
        self.peer_window, self.peer_frame = 65535, 16384  # the client's settings for what we send
        self.unacked = 0
        self.buffered = 0  # bytes of unfinished messages on all streams
        self.going_away = False
        self.out: list[bytes] | None = None  # frames gathered while reading, written once
        self.late: asyncio.TimerHandle | None = None

    # The connection's life ---------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"ipv6:[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"ipv4:{peer[0]}:{peer[1]}"
        self.late = asyncio.get_running_loop().call_later(self.handshake_s, self._handshake_late)
        self.calls.connected(self)

    def _handshake_late(self) -> None:
        if not self.greeted:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.late is not None:
            self.late.cancel()
        for stream in list(self.streams.values()):
            self.calls.reset(self, stream)
        self.streams.clear()
        self.calls.disconnected(self)

    def pause_writing(self) -> None:
        """The client is not reading its answers: nothing more is read from it (no new calls) until it has."""
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def goaway(self, code: int = NO_ERROR, message: str = "") -> None:
        """No new streams: those open finish (the server's drain), or none after an error."""
        if not self.transport.is_closing():
            self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_id, code) + message.encode()[:200]))
        self.going_away = True

    def close(self) -> None:
        self.transport.close()

    # Reading -----------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.out = []
        try:
            self._read(data)
        except Fault as e:
            self.goaway(e.code, str(e))
            self.transport.close()
        except Exception:
            log.exception("gRPC connection from %s failed; closed", self.peer)
            self.goaway(INTERNAL_ERROR, "internal error")
            self.transport.close()
        out, self.out = self.out, None
        if out and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def _read(self, data: bytes) -> None:
        inbox = self.inbox
        if inbox:
            inbox += data
            data = bytes(inbox)
        if not self.greeted:
            if len(data) < 24:
                if not PREFACE.startswith(data):
                    self._not_http2()
                    return
                self.inbox = bytearray(data)
                return
            if data[:24] != PREFACE:
                self._not_http2()
                return
            data = data[24:]
            self.greeted = True
            if self.late is not None:
                self.late.cancel()
            self.out.append(self._preface())
            if len(data) >= 9 and data[3] != SETTINGS:
                raise Fault(PROTOCOL_ERROR, "the connection must begin with SETTINGS")
        pos, n = 0, len(data)
        while n - pos >= 9:
            hi, lo, kind, flags, stream_id = _head.unpack_from(data, pos)
            length = (hi << 8) | lo
            if length > FRAME_LIMIT:
                raise Fault(FRAME_SIZE_ERROR, f"a frame of {length} bytes (SETTINGS_MAX_FRAME_SIZE {FRAME_LIMIT})")
            end = pos + 9 + length
            if end > n:
                break
            self._frame(kind, flags, stream_id & 0x7FFFFFFF, data[pos + 9 : end])
            pos = end
            if self.transport.is_closing():
                return
        self.inbox = bytearray(data[pos:]) if pos < n else bytearray()
        self._credit()

    def _preface(self) -> bytes:
        """Our SETTINGS and the connection's window, sent once the client's preface shows it speaks HTTP/2
        (so that an HTTP/1 client reads a plain 400)."""
        settings = b"".join(struct.pack(">HI", k, v) for k, v in (
            (ENABLE_PUSH, 0), (MAX_CONCURRENT_STREAMS, self.max_streams), (INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (MAX_FRAME_SIZE, FRAME_LIMIT), (MAX_HEADER_LIST_SIZE, self.max_header_bytes)))  # fmt: skip
        return frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, _u32.pack(CONNECTION_WINDOW - 65535))

    def _not_http2(self) -> None:
        """An HTTP/1 request (curl, a browser) on the gRPC port: told so, and closed."""
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                             b"This port speaks gRPC (HTTP/2 with prior knowledge).\n")  # fmt: skip
        self.transport.close()

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.block is not None and kind != CONTINUATION:
            raise Fault(PROTOCOL_ERROR, "a header block was interrupted before its END_HEADERS")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            if stream_id or len(payload) != 8:
                raise Fault(PROTOCOL_ERROR if stream_id else FRAME_SIZE_ERROR, "a malformed PING")
            if not flags & ACK:
                self.out.append(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise Fault(PROTOCOL_ERROR if not stream_id else FRAME_SIZE_ERROR, "a malformed RST_STREAM")
            if stream_id > self.last_id:
                raise Fault(PROTOCOL_ERROR, "RST_STREAM on a stream never opened")
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self._drop(stream)
                self.calls.reset(self, stream)
        elif kind == GOAWAY:
            self.going_away = True  # the client opens no more streams; those open finish
        elif kind == PRIORITY:
            if not stream_id or len(payload) != 5:
                raise Fault(PROTOCOL_ERROR if not stream_id else FRAME_SIZE_ERROR, "a malformed PRIORITY")
        elif kind == PUSH_PROMISE:
            raise Fault(PROTOCOL_ERROR, "a client cannot push")
        # frames of unknown types are ignored (RFC 9113 5.5)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise Fault(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise Fault(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise Fault(FRAME_SIZE_ERROR, "SETTINGS of a length not a multiple of 6")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise Fault(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                change, self.peer_window = value - self.peer_window, value
                for stream in self.streams.values():
                    stream.window += change
            elif key == MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise Fault(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.peer_frame = value
            elif key == ENABLE_PUSH and value > 1:
                raise Fault(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
        self.out.append(frame(SETTINGS, ACK, 0))
        self._pump_all()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise Fault(FRAME_SIZE_ERROR, "a WINDOW_UPDATE not of 4 bytes")
        increment = _u32.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise Fault(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.window += increment
            if self.window > MAX_WINDOW:
                raise Fault(FLOW_CONTROL_ERROR, "the connection's window over 2^31-1")
            self._pump_all()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # a stream that has just finished
        stream.window += increment
        if not increment or stream.window > MAX_WINDOW:
            self._reset(stream, PROTOCOL_ERROR if not increment else FLOW_CONTROL_ERROR)
            return
        self._pump(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise Fault(PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise Fault(FRAME_SIZE_ERROR, "a padded HEADERS without its pad length")
            start, end = 1, end - payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if start > end:
            raise Fault(PROTOCOL_ERROR, "HEADERS padding longer than the frame")
        block = payload[start:end]
        if len(block) > 2 * self.max_header_bytes:  # (decoding one costs CPU before its size is known)
            raise Fault(ENHANCE_YOUR_CALM, f"a header block over {2 * self.max_header_bytes} bytes")
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, block)
        else:
            self.block, self.block_head = bytearray(block), (stream_id, flags)

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self.block is None or stream_id != self.block_head[0]:
            raise Fault(PROTOCOL_ERROR, "CONTINUATION without the HEADERS before it")
        self.block += payload
        if len(self.block) > 2 * self.max_header_bytes:
            raise Fault(ENHANCE_YOUR_CALM, f"a header block over {2 * self.max_header_bytes} bytes")
        if flags & END_HEADERS:
            block, self.block = bytes(self.block), None
            self._header_block(self.block_head[0], self.block_head[1], block)

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self.decoded.get(block)
        if headers is None:
            try:
                headers = self.decoder.decode(block, raw=True)
            except HPACKError as e:
                raise Fault(COMPRESSION_ERROR, f"a header block that does not decode ({type(e).__name__})") from None
            if _all_indexed(block):
                if len(self.decoded) < 64:
                    self.decoded[block] = headers
            else:
                self.decoded.clear()  # the table may have changed: what was decoded may now read otherwise
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: they end its side (gRPC clients send none)
            if not flags & END_STREAM:
                raise Fault(PROTOCOL_ERROR, "a second header block without END_STREAM")
            self._end(stream)
            return
        if stream_id <= self.last_id:
            if stream_id % 2:
                return  # a stream we have closed: ignored (its headers decoded, the table kept in step)
            raise Fault(PROTOCOL_ERROR, "a client stream of an even id")
        if not stream_id % 2:
            raise Fault(PROTOCOL_ERROR, "a client stream of an even id")
        self.last_id = stream_id
        if self.going_away or len(self.streams) >= self.max_streams:
            self.out.append(frame(RST_STREAM, 0, stream_id, _u32.pack(REFUSED_STREAM)))
            return
        stream = self.streams[stream_id] = Stream(stream_id, self.peer_window)
        stream.headers, stream.ended = headers, bool(flags & END_STREAM)
        if sum(len(k) + len(v) + 32 for k, v in headers) > self.max_header_bytes:
            self.calls.refuse_headers(self, stream)
        else:
            self.calls.opened(self, stream)
        if stream.ended and not stream.done:
            self.calls.ended(self, stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise Fault(PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        self.unacked += length
        if stream_id > self.last_id:
            raise Fault(PROTOCOL_ERROR, "DATA on a stream never opened")
        stream = self.streams.get(stream_id)
        if stream is None or stream.ended:
            if stream is not None:
                self._reset(stream, STREAM_CLOSED)
            return  # a stream already closed: its bytes counted for the connection, dropped
        if flags & PADDED:
            if not length or payload[0] >= length:
                raise Fault(PROTOCOL_ERROR, "DATA padding longer than the frame")
            payload = payload[1 : length - payload[0]]
        stream.unacked += length
        if not stream.refused:
            self._message_bytes(stream, payload)
        if flags & END_STREAM:
            self._end(stream)
        elif stream.unacked >= STREAM_WINDOW // 2 and not stream.done:
            self.out.append(frame(WINDOW_UPDATE, 0, stream_id, _u32.pack(stream.unacked)))
            stream.unacked = 0

    def _message_bytes(self, stream: Stream, payload: bytes) -> None:
        """gRPC's messages in a stream's bytes: a flag, a 4-byte length, the message."""
        buf = stream.buf
        if not buf and len(payload) >= 5:
            size = _u32.unpack_from(payload, 1)[0]
            if len(payload) == 5 + size and size <= self.max_message:
                self.calls.message(self, stream, payload[0], payload[5:])  # the usual case: one whole message
                return
        self.buffered -= len(buf)
        buf += payload
        while len(buf) >= 5:
            size = _u32.unpack_from(buf, 1)[0]
            if size > self.max_message:
                buf.clear()
                self.calls.too_large(self, stream, size)
                return
            if len(buf) < 5 + size:
                break
            compressed, message = buf[0], bytes(buf[5 : 5 + size])
            del buf[: 5 + size]
            self.calls.message(self, stream, compressed, message)
            if stream.refused or stream.done:
                buf.clear()
                return
        self.buffered += len(buf)

    def _end(self, stream: Stream) -> None:
        stream.ended = True
        if stream.buf:
            self.buffered -= len(stream.buf)
            stream.buf.clear()
            if not stream.refused:
                self.calls.truncated(self, stream)
        if stream.done:
            self.streams.pop(stream.id, None)
        elif not stream.refused:
            self.calls.ended(self, stream)

    def _credit(self) -> None:
        """The connection's window given back, unless unfinished messages hold more than the budget."""
        if self.unacked >= CONNECTION_WINDOW // 4 and self.buffered <= self.budget and not self.transport.is_closing():
            self.transport.write(frame(WINDOW_UPDATE, 0, 0, _u32.pack(self.unacked)))
            self.unacked = 0

    # Writing -----------------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.out is not None:
            self.out.append(data)  # while reading: gathered, one write
        elif not self.transport.is_closing():
            self.transport.write(data)

    def send(self, stream: Stream, message: bytes, trailers: bytes | None = None) -> None:
        """One message on the stream (after its headers if they are not out yet), then, if given, the
        trailers that end it."""
        if stream.done:
            return
        head = b""
        if not stream.sent_headers:
            head, stream.sent_headers = frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS), True
        size = len(message)
        data = b"\x00" + _u32.pack(size) + message
        if (not stream.pending and size + 5 <= stream.window and size + 5 <= self.window
                and size + 5 <= self.peer_frame):  # fmt: skip
            stream.window -= size + 5
            self.window -= size + 5
            out = head + frame(DATA, 0, stream.id, data)
            if trailers is None:
                self._write(out)
                return
            self._write(out + frame(HEADERS, END_HEADERS | END_STREAM, stream.id, trailers))
            self._done(stream)
            return
        if head:
            self._write(head)
        stream.pending += data
        if trailers is not None:
            stream.trailers = trailers
        self._pump(stream)

    def finish(self, stream: Stream, trailers: bytes) -> None:
        """The stream ended with these trailers (grpc-status and the rest); alone, they are gRPC's
        trailers-only answer, after the response headers."""
        if stream.done:
            return
        if not stream.sent_headers:
            stream.sent_headers = True
            trailers = RESPONSE_HEADERS + trailers
        if stream.pending:
            stream.trailers = trailers
            self._pump(stream)
            return
        self._write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, trailers))
        self._done(stream)

    def http_error(self, stream: Stream, status: int) -> None:
        """A request that is not gRPC (RFC: answered with the HTTP status, no grpc-status)."""
        stream.sent_headers = True
        self._write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, literal(b":status", str(status).encode())))
        self._done(stream)

    def _pump(self, stream: Stream) -> None:
        """A stream's waiting bytes, as far as both windows and the client's frame size let them go."""
        pending = stream.pending
        out = []
        while pending:
            size = min(len(pending), stream.window, self.window, self.peer_frame)
            if size <= 0:
                break
            out.append(frame(DATA, 0, stream.id, bytes(pending[:size])))
            del pending[:size]
            stream.window -= size
            self.window -= size
        ends = not pending and stream.trailers is not None
        if ends:
            out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, stream.trailers))
            stream.trailers = None
        if out:
            self._write(b"".join(out))
        if ends:
            self._done(stream)

    def _pump_all(self) -> None:
        for stream in list(self.streams.values()):
            if stream.pending or stream.trailers is not None:
                self._pump(stream)

    def _done(self, stream: Stream) -> None:
        """We sent our END_STREAM: the stream closes, and a client still sending is told to stop."""
        stream.done = True
        if stream.ended:
            self.streams.pop(stream.id, None)
            return
        self._write(frame(RST_STREAM, 0, stream.id, _u32.pack(NO_ERROR)))
        self._drop(stream)
        self.streams.pop(stream.id, None)

    def _reset(self, stream: Stream, code: int) -> None:
        self._write(frame(RST_STREAM, 0, stream.id, _u32.pack(code)))
        self._drop(stream)
        self.streams.pop(stream.id, None)
        self.calls.reset(self, stream)

    def _drop(self, stream: Stream) -> None:
        stream.done = stream.ended = True
        self.buffered -= len(stream.buf)
        stream.buf.clear()
