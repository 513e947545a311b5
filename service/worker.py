"""One worker's service, built in one step from the settings: the models (registry), the data plane, the
routes of both protocols (/v1 and /v2) in one router, and the API's descriptions.

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
from service.protocol.auth import ApiKeyAuth, load_keys
from service.protocol.edge import Edge
from service.protocol.oip import OIP
from service.protocol.router import Router
from service.protocol.v1 import V1
from service.settings import Settings
from service.workers import Workers


class Worker:
    def __init__(self, settings: Settings, workers: Workers | None = None) -> None:
        self.settings = settings
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
    return Edge(below, settings, auth(settings), lambda: worker)
