"""One worker's service, built in one step from the settings: the models (registry), their typed
endpoints (/v1), the Open Inference Protocol (/v2), and the API's descriptions.

`build` is what the BentoML service runs in each worker (service/app.py). `standalone` serves the
same thing without BentoML, behind the same edge, for in-process tests that vary the settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from service import __version__, openapi
from service.api import V1
from service.auth import ApiKeyAuth, load_keys
from service.edge import Edge
from service.oip import OIP
from service.registry import Registry
from service.settings import Settings
from service.tasks import image, tabular


@dataclass
class Server:
    registry: Registry
    v1: V1
    v2: OIP
    openapi: bytes  # /docs.json
    client_schema: bytes  # /schema.json, for BentoML's client


def build(settings: Settings) -> Server:
    registry = Registry(settings)
    adapters = list(registry.adapters.values())
    endpoints = tabular.endpoints(adapters)
    endpoints += image.endpoints(adapters, registry.get, settings.max_batch_images, settings.max_body_bytes)
    names = sorted(registry.adapters)
    return Server(
        registry,
        V1(registry, endpoints),
        OIP(registry, settings, __version__),
        openapi.to_bytes(openapi.document(endpoints, names, __version__)),
        openapi.to_bytes(openapi.client_schema(endpoints)),
    )


def auth(settings: Settings) -> ApiKeyAuth:
    exempt = frozenset(p.strip() for p in settings.auth_exempt_paths.split(",") if p.strip())
    return ApiKeyAuth(load_keys(settings.api_keys, settings.api_keys_file), exempt)


def standalone(settings: Settings) -> ASGIApp:
    """The whole HTTP surface of one worker without BentoML (no metrics, access log or timeout layers)."""
    server = build(settings)
    app = Starlette(
        routes=[
            Route("/livez", lambda _: PlainTextResponse("\n")),
            Mount("/v1", server.v1),
            Mount("/v2", server.v2),
        ]
    )
    return Edge(app, settings, auth(settings), lambda: server)
