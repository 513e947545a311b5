"""One worker's service, built in one step from the settings: the models (registry), their typed
endpoints (/v1), the Open Inference Protocol (/v2), and the API's descriptions.

`build` is what the BentoML service runs in each worker (service/app.py). `standalone` serves the
same thing without BentoML, behind the same edge, for in-process tests that vary the settings.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from service import __version__
from service.glue.patches import RequestId
from service.models.control import Control
from service.models.registry import Registry
from service.protocol import openapi
from service.protocol.auth import ApiKeyAuth, load_keys
from service.protocol.edge import Edge
from service.protocol.oip import OIP
from service.protocol.v1 import V1
from service.settings import Settings
from service.tasks.image import adapter as image
from service.tasks.tabular import adapter as tabular


class Server:
    def __init__(self, settings: Settings) -> None:
        self.registry = registry = Registry(settings)
        self.photos = image.endpoints(registry, settings.max_batch_images, settings.max_body_bytes)
        handlers = {e.route.rsplit("/", 1)[1]: e.handler for e in self.photos}
        self.v1 = V1(registry, handlers, Control(registry, settings.management), settings.max_body_bytes)
        self.v2 = OIP(registry, settings, __version__, Control(registry, settings.management))
        self._documents: tuple[int, bytes, bytes] = (-1, b"", b"")

    def documents(self) -> tuple[bytes, bytes]:
        """The OpenAPI document (/docs.json) and BentoML's client schema (/schema.json), of the models'
        default versions; built again after a swap."""
        generation = self.registry.generation
        if self._documents[0] != generation:
            adapters = list(self.registry.adapters.values())
            endpoints = tabular.endpoints(adapters)
            if any(isinstance(a, image.ImageClassification) for a in adapters):
                endpoints += self.photos
            names = sorted(self.registry.adapters)
            doc = openapi.to_bytes(openapi.document(endpoints, names, __version__))
            self._documents = (generation, doc, openapi.to_bytes(openapi.client_schema(endpoints)))
        return self._documents[1], self._documents[2]


def build(settings: Settings) -> Server:
    return Server(settings)


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
    return RequestId(Edge(app, settings, auth(settings), lambda: server))  # an id per request, as under BentoML
