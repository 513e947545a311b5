"""The gRPC server of one worker: every worker process of the service serves the gRPC port beside HTTP, with
the same models, data plane, admission and drain (one process's requests of both protocols share them).

The workers listen on one port with SO_REUSEPORT (the kernel shares connections among them, as BentoML's
arbiter shares the HTTP socket). SO_REUSEPORT would also let a second server of the same user bind the same
port and quietly take half its connections, so the first worker of a server to start (a lock in the
workers' folder) checks that nothing listens there before any binds: a port in use stops start-up, named.

Limits, from the settings: the largest message NNSERVE_MAX_BODY_BYTES (RESOURCE_EXHAUSTED beyond, before
it is read whole), metadata NNSERVE_MAX_HEADER_BYTES, calls at once the worker's admission (in flight +
queue) and room for probes: beyond, RESOURCE_EXHAUSTED. Streams per connection are not capped apart: an
HTTP/2 cap makes the client's extra streams fail UNAVAILABLE (REFUSED_STREAM), where the call cap names
the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from service.errors import ConfigError
from service.protocol.rpc.edge import Malformed
from service.protocol.rpc.health import Health
from service.protocol.rpc.inference import Inference
from service.protocol.rpc.proto import grpc_service_pb2 as pb
from service.settings import Settings

log = logging.getLogger(__name__)
PROBE_ROOM = 32  # calls beyond the admission's for probes, metadata and management


class GrpcServer:
    def __init__(self, settings: Settings, inference: Inference, health: Health) -> None:
        self.address = f"{settings.grpc_host}:{settings.grpc_port}"
        admitted = settings.max_in_flight + settings.max_queue
        options = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_metadata_size", settings.max_header_bytes),
            ("grpc.so_reuseport", 1),
        ]
        self.server = grpc.aio.server(
            options=options, maximum_concurrent_rpcs=admitted + PROBE_ROOM if settings.max_in_flight else None
        )
        services = [(pb.DESCRIPTOR.services_by_name["GRPCInferenceService"], inference),
                    (health_pb2.DESCRIPTOR.services_by_name["Health"], health)]  # fmt: skip
        for descriptor, servicer in services:
            self.server.add_generic_rpc_handlers((handlers(descriptor, servicer),))
        reflection.enable_server_reflection([d.full_name for d, _ in services] + [reflection.SERVICE_NAME], self.server)

    def bind(self, folder: Path, port: int) -> None:
        """Binds the port (after the check above, once per server); ConfigError naming it when it cannot."""
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            checked = folder / f"grpc-port-{port}"
            if not checked.exists():
                _nothing_listens(self.address, port)
                checked.touch()
            try:
                self.server.add_insecure_port(self.address)
            except RuntimeError as e:
                raise ConfigError(f"NNSERVE_GRPC_PORT={port}: cannot listen on {self.address} ({e})") from None
        finally:
            os.close(fd)

    async def start(self) -> None:
        await self.server.start()
        log.info("gRPC (Open Inference Protocol, health, reflection) on %s", self.address)

    async def stop(self, grace_s: float) -> None:
        """Calls in progress get `grace_s` to finish; new ones are refused (UNAVAILABLE)."""
        await self.server.stop(grace_s)


def handlers(service: ServiceDescriptor, servicer: Any) -> grpc.GenericRpcHandler:
    """The service's methods that the servicer has, read from its descriptor: requests that do not parse
    reach the method as Malformed (the edge answers INVALID_ARGUMENT naming the message) where the generated
    registration would fail them INTERNAL before any of our code runs. Methods the servicer lacks, and the
    client-streaming ones (Triton's ModelStreamInfer), answer UNIMPLEMENTED."""
    methods = {}
    for method in service.methods:
        if method.client_streaming or not hasattr(servicer, method.name):
            continue
        request, reply = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        methods[method.name] = make(getattr(servicer, method.name), request_deserializer=_reader(request),
                                    response_serializer=reply.SerializeToString)  # fmt: skip
    return grpc.method_handlers_generic_handler(service.full_name, methods)


def _reader(message: Any) -> Callable[[bytes], Any]:
    def read(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as e:
            return Malformed(message.DESCRIPTOR.name, str(e))

    return read


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
