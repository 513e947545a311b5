"""The gRPC server of one worker: every worker process of the service serves the gRPC port beside HTTP, with
the same models, data plane, admission and drain (one process's requests of both protocols share them). The
HTTP/2 is nnserve's own (http2.py, in the worker's event loop; why, there); this file is gRPC on top of it:
the methods from the services' descriptors, each call's metadata, deadline, messages and status.

The workers listen on one port with SO_REUSEPORT (the kernel shares connections among them, as BentoML's
arbiter shares the HTTP socket). SO_REUSEPORT would also let a second server of the same user bind the same
port and quietly take half its connections, so the first worker of a server to start (a lock in the
workers' folder) checks that nothing listens there before any binds: a port in use stops start-up, named.

Limits, from the settings: the largest message NNSERVE_MAX_BODY_BYTES (RESOURCE_EXHAUSTED from its length
prefix, before it is read), metadata NNSERVE_MAX_HEADER_BYTES (RESOURCE_EXHAUSTED), calls at once the
worker's admission (in flight + queue) and room for probes: beyond, RESOURCE_EXHAUSTED; streams at once per
connection the same number (SETTINGS_MAX_CONCURRENT_STREAMS: a client queues the rest). Messages may come
gzip- or deflate-compressed (grpc-encoding), inflated no larger than the largest message; answers are not
compressed. The client's deadline (grpc-timeout) ends a call DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import socket
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service.errors import ConfigError
from service.protocol.rpc.edge import Malformed
from service.protocol.rpc.health import Health
from service.protocol.rpc.http2 import Connection, Stream, literal
from service.protocol.rpc.inference import Inference
from service.protocol.rpc.proto import grpc_service_pb2 as pb
from service.settings import Settings

log = logging.getLogger(__name__)
PROBE_ROOM = 32  # calls beyond the admission's for probes, metadata and management
Code = grpc.StatusCode
UNARY, SERVER_STREAM, BIDI = "unary", "server-stream", "bidi"
RESERVED = frozenset({b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"})
TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
INFLATE = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


class Method:
    __slots__ = ("kind", "handler", "parse", "serialize")

    def __init__(self, kind: str, handler: Callable, parse: Callable, serialize: Callable) -> None:
        self.kind, self.handler, self.parse, self.serialize = kind, handler, parse, serialize


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Call:
    """One call's state, and what a servicer's context offers (the part of grpc.aio.ServicerContext that
    nnserve's servicers and grpcio's reflection use)."""

    __slots__ = ("conn", "stream", "method", "request", "queue", "task", "timeout", "timer", "expired",
                 "encoding", "trailing", "_metadata")  # fmt: skip

    def __init__(self, conn: Connection, stream: Stream, method: Method) -> None:
        self.conn, self.stream, self.method = conn, stream, method
        self.request: bytes | None = None
        self.queue: asyncio.Queue | None = None  # a bidirectional call's messages, None at the client's end
        self.task: asyncio.Task | None = None
        self.timeout: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.expired = False
        self.encoding = b"identity"
        self.trailing: tuple = ()
        self._metadata: tuple | None = None

    def invocation_metadata(self) -> tuple:
        if self._metadata is None:
            pairs = []
            for key, value in self.stream.headers:
                if key[:1] == b":" or key in RESERVED:
                    continue
                if key.endswith(b"-bin"):
                    pairs.append((key.decode("latin-1"), _unbase64(value)))
                else:
                    pairs.append((key.decode("latin-1"), value.decode("latin-1")))
            self._metadata = tuple(pairs)
        return self._metadata

    def peer(self) -> str:
        return self.conn.peer

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Abort(code, details)

    def time_remaining(self) -> float | None:
        return None if self.timer is None else max(0.0, self.timer.when() - asyncio.get_running_loop().time())


def trailers(code: grpc.StatusCode, details: str = "", metadata: tuple = ()) -> bytes:
    """grpc-status, grpc-message (percent-encoded, as the protocol asks) and the call's trailing metadata."""
    out = literal(b"grpc-status", str(code.value[0]).encode())
    if details:
        out += literal(b"grpc-message", quote(details, safe=" !\"#$&'()*+,-./:;<=>?@[]^_`{|}~").encode())
    for key, value in metadata:
        value = base64.b64encode(value).rstrip(b"=") if isinstance(value, bytes) else str(value).encode()
        out += literal(key.lower().encode(), value)
    return out


OK_TRAILERS = trailers(Code.OK)


class GrpcServer:
    def __init__(self, settings: Settings, inference: Inference, health: Health) -> None:
        self.host, self.address = settings.grpc_host, f"{settings.grpc_host}:{settings.grpc_port}"
        self.max_message, self.max_header_bytes = settings.max_body_bytes, settings.max_header_bytes
        self.handshake_s = settings.header_timeout_s
        admitted = settings.max_in_flight + settings.max_queue
        self.cap = admitted + PROBE_ROOM if settings.max_in_flight else None
        services = [(pb.DESCRIPTOR.services_by_name["GRPCInferenceService"], inference),
                    (health_pb2.DESCRIPTOR.services_by_name["Health"], health)]  # fmt: skip
        names = [d.full_name for d, _ in services] + [reflection.SERVICE_NAME]
        services.append((reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
                         reflection.aio.ReflectionServicer(names)))  # fmt: skip
        self.methods: dict[bytes, Method] = {}
        for descriptor, servicer in services:
            self.methods.update(methods(descriptor, servicer))
        self.active = 0
        self.connections: set[Connection] = set()
        self.sock: socket.socket | None = None
        self.listener: asyncio.Server | None = None
        self.idle = asyncio.Event()

    def bind(self, folder: Path, port: int) -> None:
        """Binds the port (after the check above, once per server); ConfigError naming it when it cannot."""
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            checked = folder / f"grpc-port-{port}"
            if not checked.exists():
                _nothing_listens(self.address, port)
                checked.touch()
            host = self.host.strip("[]")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.bind((host, port))
                sock.listen(2048)
            except OSError as e:
                sock.close()
                raise ConfigError(f"NNSERVE_GRPC_PORT={port}: cannot listen on {self.address} ({e.strerror})") from None
            sock.setblocking(False)
            self.sock = sock
        finally:
            os.close(fd)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(self.connection, sock=self.sock)
        log.info("gRPC (Open Inference Protocol, health, reflection) on %s", self.address)

    def connection(self) -> Connection:
        streams = self.cap or 1000
        return Connection(self, self.max_message, self.max_header_bytes, streams, self.handshake_s)

    async def stop(self, grace_s: float) -> None:
        """No new connections or streams (GOAWAY); calls in progress get `grace_s` to finish; then the
        connections close (a call still open ends UNAVAILABLE at its client)."""
        if self.listener is not None:
            self.listener.close()
        elif self.sock is not None:  # stopped before it started
            self.sock.close()
        for conn in list(self.connections):
            conn.goaway()
        if self.active:
            self.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), grace_s)
        for conn in list(self.connections):
            conn.close()

    # What the connections tell of their streams (http2.Connection's `calls`) ----------------------------------

    def connected(self, conn: Connection) -> None:
        self.connections.add(conn)

    def disconnected(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def opened(self, conn: Connection, stream: Stream) -> None:
        headers = dict(stream.headers)
        if headers.get(b":method") != b"POST":
            conn.http_error(stream, 405)
            return
        if not headers.get(b"content-type", b"").startswith(b"application/grpc"):
            conn.http_error(stream, 415)
            return
        path = headers.get(b":path", b"")
        method = self.methods.get(path)
        if method is None:
            conn.finish(stream, trailers(Code.UNIMPLEMENTED, f"Method not found: {path.decode('latin-1')}"))
            return
        if self.cap is not None and self.active >= self.cap:
            conn.finish(stream, trailers(Code.RESOURCE_EXHAUSTED, f"Concurrent RPC limit exceeded: {self.cap} calls "
                                         "at once in a worker (NNSERVE_MAX_IN_FLIGHT+NNSERVE_MAX_QUEUE)"))  # fmt: skip
            return
        call = stream.call = Call(conn, stream, method)
        encoding = headers.get(b"grpc-encoding", b"identity")
        if encoding not in INFLATE and encoding != b"identity":
            conn.finish(stream, trailers(Code.UNIMPLEMENTED, f"grpc-encoding {encoding.decode('latin-1')} is not "
                                         "supported (identity, gzip, deflate)"))  # fmt: skip
            return
        call.encoding = encoding
        timeout = headers.get(b"grpc-timeout")
        if timeout is not None:
            call.timeout = _timeout(timeout)
            if call.timeout is None:
                conn.finish(stream, trailers(Code.INVALID_ARGUMENT, f"grpc-timeout {timeout.decode('latin-1')!r} "
                                             "is not <digits><H|M|S|m|u|n>"))  # fmt: skip
                return
        if method.kind == BIDI:
            call.queue = asyncio.Queue()
            self._start(call, self._streamed(call, self._requests(call)))

    def refuse_headers(self, conn: Connection, stream: Stream) -> None:
        conn.finish(stream, trailers(Code.RESOURCE_EXHAUSTED, f"the metadata is larger than {self.max_header_bytes} "
                                     "bytes (NNSERVE_MAX_HEADER_BYTES)"))  # fmt: skip

    def too_large(self, conn: Connection, stream: Stream, size: int) -> None:
        stream.refused = True
        self._refuse(conn, stream, Code.RESOURCE_EXHAUSTED, f"Received message larger than max ({size} vs. "
                     f"{self.max_message}; NNSERVE_MAX_BODY_BYTES)")  # fmt: skip

    def message(self, conn: Connection, stream: Stream, compressed: int, data: bytes) -> None:
        call = stream.call
        if call is None or stream.done:
            return
        if compressed:
            data = self._inflate(call, data)
            if data is None:
                return
        if call.queue is not None:
            call.queue.put_nowait(data)
        elif call.request is None:
            call.request = data
        else:
            self._refuse(conn, stream, Code.INVALID_ARGUMENT, "a second request message on a unary call")

    def ended(self, conn: Connection, stream: Stream) -> None:
        call = stream.call
        if call is None or stream.done:
            return
        if call.queue is not None:
            call.queue.put_nowait(None)
        elif call.request is None:
            self._refuse(conn, stream, Code.INVALID_ARGUMENT, "the call ended without its request message")
        elif call.method.kind == UNARY:
            self._start(call, self._unary(call))
        else:
            self._start(call, self._streamed(call, call.method.parse(call.request)))

    def truncated(self, conn: Connection, stream: Stream) -> None:
        self._refuse(conn, stream, Code.INVALID_ARGUMENT, "the call ended inside a message (its prefix promised more)")

    def reset(self, conn: Connection, stream: Stream) -> None:
        """The client cancelled the stream, or the connection is gone: the call's task is cancelled."""
        call = stream.call
        if call is not None and call.task is not None and not call.task.done():
            call.task.cancel()

    # Running a call ------------------------------------------------------------------------------------------

    def _refuse(self, conn: Connection, stream: Stream, code: grpc.StatusCode, details: str) -> None:
        """The call answered `code` before its handler has (or while it runs: it is cancelled)."""
        call, stream.call = stream.call, None
        if call is not None and call.task is not None:
            call.task.cancel()
        conn.finish(stream, trailers(code, details))

    def _inflate(self, call: Call, data: bytes) -> bytes | None:
        wbits = INFLATE.get(call.encoding)
        if wbits is None:
            self._refuse(call.conn, call.stream, Code.INVALID_ARGUMENT, "a compressed message without a grpc-encoding")
            return None
        try:
            inflater = zlib.decompressobj(wbits)
            out = inflater.decompress(data, self.max_message + 1)
        except zlib.error as e:
            self._refuse(call.conn, call.stream, Code.INVALID_ARGUMENT,
                         f"the message does not inflate ({call.encoding.decode()}: {e})")  # fmt: skip
            return None
        if len(out) > self.max_message or inflater.unconsumed_tail:
            self._refuse(call.conn, call.stream, Code.RESOURCE_EXHAUSTED,
                         f"the message inflates past {self.max_message} bytes (NNSERVE_MAX_BODY_BYTES)")  # fmt: skip
            return None
        return out

    def _start(self, call: Call, work: Any) -> None:
        self.active += 1
        call.task = asyncio.get_running_loop().create_task(work)
        if call.timeout is not None:
            call.timer = asyncio.get_running_loop().call_later(call.timeout, self._expire, call)

    def _expire(self, call: Call) -> None:
        if call.task is not None and not call.task.done():
            call.expired = True
            call.task.cancel()

    def _ended(self, call: Call) -> None:
        self.active -= 1
        if call.timer is not None:
            call.timer.cancel()
        if not self.active:
            self.idle.set()

    async def _unary(self, call: Call) -> None:
        method, stream = call.method, call.stream
        try:
            reply = await method.handler(method.parse(call.request), call)
            call.conn.send(stream, method.serialize(reply),
                           trailers(Code.OK, "", call.trailing) if call.trailing else OK_TRAILERS)  # fmt: skip
        except BaseException as e:  # noqa: BLE001  (each way a call can end is answered below)
            self._failed(call, e)
        finally:
            self._ended(call)

    async def _streamed(self, call: Call, requests: Any) -> None:
        """A call answered by a stream of messages: server streaming (`requests` the one request) or
        bidirectional (`requests` an iterator over the client's messages)."""
        method, stream = call.method, call.stream
        try:
            async for reply in method.handler(requests, call):
                call.conn.send(stream, method.serialize(reply))
            call.conn.finish(stream, trailers(Code.OK, "", call.trailing))
        except BaseException as e:  # noqa: BLE001
            self._failed(call, e)
        finally:
            self._ended(call)

    async def _requests(self, call: Call) -> AsyncIterator[Any]:
        while (data := await call.queue.get()) is not None:
            request = call.method.parse(data)
            if isinstance(request, Malformed):
                raise Abort(Code.INVALID_ARGUMENT, f"the request is not a {request.message} message: {request.error}")
            yield request

    def _failed(self, call: Call, error: BaseException) -> None:
        """A call's end other than its answer: an abort's code, the client's deadline, nothing for a call the
        client cancelled, INTERNAL (logged) for a failure of ours."""
        conn, stream = call.conn, call.stream
        if isinstance(error, Abort):
            conn.finish(stream, trailers(error.code, error.details, call.trailing))
        elif isinstance(error, asyncio.CancelledError):
            if call.expired:
                conn.finish(stream, trailers(Code.DEADLINE_EXCEEDED, "Deadline Exceeded"))
            elif not stream.done and not conn.transport.is_closing():
                conn.finish(stream, trailers(Code.CANCELLED, "the call was cancelled"))
        else:
            log.error("gRPC call failed", exc_info=error)
            conn.finish(stream, trailers(Code.INTERNAL, "internal error; see the server log"))


def methods(service: ServiceDescriptor, servicer: Any) -> dict[bytes, Method]:
    """The service's methods that the servicer has, read from its descriptor: requests that do not parse
    reach the method as Malformed (the edge answers INVALID_ARGUMENT naming the message). Methods the servicer
    lacks, and the client-streaming ones (Triton's ModelStreamInfer), answer UNIMPLEMENTED; a bidirectional
    one is served when the servicer has it (reflection's)."""
    found = {}
    for method in service.methods:
        if not hasattr(servicer, method.name) or (method.client_streaming and not method.server_streaming):
            continue
        if method.client_streaming and service.full_name != reflection.SERVICE_NAME:
            continue
        kind = BIDI if method.client_streaming else SERVER_STREAM if method.server_streaming else UNARY
        request, reply = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
        path = f"/{service.full_name}/{method.name}".encode()
        found[path] = Method(kind, getattr(servicer, method.name), _reader(request), reply.SerializeToString)
    return found


def _reader(message: Any) -> Callable[[bytes], Any]:
    def read(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as e:
            return Malformed(message.DESCRIPTOR.name, str(e))

    return read


def _unbase64(value: bytes) -> bytes:
    """A binary header's value (base64, padded or not); as sent when it is not base64 (the servicers that
    read metadata read text keys only)."""
    try:
        return base64.b64decode(value + b"=" * (-len(value) % 4))
    except ValueError:
        return value


def _timeout(value: bytes) -> float | None:
    """gRPC's grpc-timeout header (at most 8 digits and a unit) in seconds; None when it is not one."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in TIMEOUT_UNITS:
        return None
    return int(digits) * TIMEOUT_UNITS[unit]


def _nothing_listens(address: str, port: int) -> None:
    """A bind without SO_REUSEPORT fails when any socket holds the port, SO_REUSEPORT or not."""
    host = address.rsplit(":", 1)[0].strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind((host, port))
    except OSError as e:
        raise ConfigError(f"NNSERVE_GRPC_PORT={port}: {address} is in use ({e.strerror}): another server listens "
                          "there; set another port, or 0 for no gRPC") from None  # fmt: skip
    finally:
        with contextlib.suppress(OSError):
            probe.close()
