"""gRPC's standard health service (grpc.health.v1.Health), for probes and load balancers: Kubernetes'
`grpc:` probes, grpc_health_probe, Envoy. The server ("") and the inference service are SERVING while the
worker is ready (its models loaded, not draining), NOT_SERVING otherwise; any other service is NOT_FOUND,
as the protocol asks. Watch sends the status, then each change (looked at every WATCH_POLL_S)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from grpc_health.v1 import health_pb2

from service.models.registry import Registry
from service.protocol.context import Context
from service.protocol.rpc.edge import RpcEdge, code_of
from service.protocol.rpc.inference import SERVICE
from service.protocol.tensors import OIPError
from service.shutdown import drain

PATH = "/grpc.health.v1.Health/"
WATCH_POLL_S = 1.0
Status = health_pb2.HealthCheckResponse


class Health:
    def __init__(self, edge: RpcEdge, registry: Registry) -> None:
        self.edge, self.registry = edge, registry

    def status(self, service: str) -> int | None:
        if service not in ("", SERVICE):
            return None
        return Status.SERVING if self.registry.ready and not drain.draining else Status.NOT_SERVING

    async def Check(self, request: Any, context: Any) -> Status:  # noqa: N802
        return await self.edge.call(context, PATH + "Check", self.check, request)

    async def check(self, ctx: Context, request: health_pb2.HealthCheckRequest) -> Status:
        status = self.status(request.service)
        if status is None:
            raise OIPError(404, f"no service {request.service!r}: ask for '' (the server) or {SERVICE!r}")
        return Status(status=status)

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Status]:  # noqa: N802
        headers = [(k.encode(), v.encode()) for k, v in context.invocation_metadata() or () if isinstance(v, str)]
        refused = self.edge.auth.refusal(PATH + "Watch", headers)
        if refused is not None:
            await context.abort(code_of(refused[0]), refused[1])
        last = None
        while True:
            status = self.status(request.service)
            status = Status.SERVICE_UNKNOWN if status is None else status
            if status != last:
                yield Status(status=status)
                last = status
            await asyncio.sleep(WATCH_POLL_S)  # a stream the client holds open: polled, until it cancels
