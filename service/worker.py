"""One worker's service, built in one step from the settings: the models (registry), the data plane, the
routes of both HTTP APIs (/v1 and /v2) in one router, the API's descriptions, and the gRPC server.

`Worker` is what the BentoML service makes in each worker process (service/app.py). `standalone`
serves the same thing without BentoML, behind the same edge, for in-process tests that vary the
settings.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp

from service import __version__
from service.dataplane.plane import DataPlane
from service.models.control import Control
from service.models.registry import Registry
from service.protocol import openapi, views
from service.protocol.admission import Admission
from service.protocol.auth import ApiKeyAuth, load_keys
from service.protocol.edge import Edge
from service.protocol.observe import Observe
from service.protocol.oip import OIP
from service.protocol.router import Router
from service.protocol.rpc.edge import RpcEdge
from service.protocol.rpc.health import Health
from service.protocol.rpc.inference import Inference
from service.protocol.rpc.server import GrpcServer
from service.protocol.v1 import V1
from service.settings import Settings
from service.shutdown import drain
from service.workers import Workers

GRPC_STOP_GRACE_S = 1.0  # for calls other than predictions still open at exit (the drain waited for those)


class Worker:
    def __init__(self, settings: Settings, workers: Workers | None = None, admission: Admission | None = None) -> None:
        self.settings = settings
        # The process's admission control: its HTTP edge and its gRPC edge take predictions from one count.
        self.admission = admission or Admission(settings.max_in_flight, settings.max_queue)
        self.registry = Registry(settings, workers)
        self.plane = DataPlane(self.registry, settings)
        self.control = Control(self.registry, settings.management)
        self.v1 = V1(self.registry, self.plane, self.control, settings)
        self.oip = OIP(self.registry, self.plane, self.control, settings, __version__)
        self.router = Router([*self.v1.routes(), *self.oip.routes()])
        self._documents: tuple[int, bytes, bytes] = (-1, b"", b"")

    def start(self) -> list[asyncio.Task]:
        """The worker's own tasks, in its event loop: the models directory watched (and other workers'
        management calls followed), drift folded and shared, online measures published."""
        loop = asyncio.get_running_loop()
        return [loop.create_task(self.registry.watch(self.settings.model_poll_s)), loop.create_task(self.plane.watch())]

    def serve_grpc(self, keys: ApiKeyAuth, observe: Observe | None) -> GrpcServer:
        """The gRPC form of the Open Inference Protocol on this worker's models and data plane, bound (a
        ConfigError naming the port when it cannot be) and starting; stopped by the drain on SIGTERM."""
        settings = self.settings
        edge = RpcEdge(keys, self.admission, settings.request_timeout_s, self.plane, observe)
        inference = Inference(edge, self.registry, self.plane, self.control, __version__)
        server = GrpcServer(settings, inference, Health(edge, self.registry))
        server.bind(self.registry.workers.folder, settings.grpc_port)
        asyncio.get_running_loop().create_task(server.start())
        drain.on_exit(lambda: server.stop(GRPC_STOP_GRACE_S))
        return server

    def health(self) -> dict[str, Any]:
        return views.health(self.registry, self.plane)

    def documents(self) -> tuple[bytes, bytes]:
        """The OpenAPI document (/docs.json) and BentoML's client schema (/schema.json), of the models'
        default versions; built again after a swap."""
        generation = self.registry.generation
        if self._documents[0] != generation:
            endpoints = openapi.endpoints(list(self.registry.adapters.values()))
            names = sorted(self.registry.adapters)
            doc = openapi.to_bytes(openapi.document(endpoints, names, __version__))
            self._documents = (generation, doc, openapi.to_bytes(openapi.client_schema(endpoints)))
        return self._documents[1], self._documents[2]


def auth(settings: Settings) -> ApiKeyAuth:
    exempt = frozenset(p.strip() for p in settings.auth_exempt_paths.split(",") if p.strip())
    return ApiKeyAuth(load_keys(settings.api_keys, settings.api_keys_file), exempt)


def standalone(settings: Settings) -> ASGIApp:
    """The whole HTTP surface of one worker without BentoML: the edge (no access log or request series:
    those are BentoML's, in its server) in front of a stand-in for BentoML's own routes."""
    worker = Worker(settings)
    below = Starlette(routes=[StarletteRoute("/livez", lambda _: PlainTextResponse("\n"))])
    return Edge(below, settings, auth(settings), lambda: worker, admission=worker.admission)
