"""The /v1 routes: the typed endpoints of every loaded model, model metadata, health.

A dispatcher on exact paths (a dict lookup) rather than a routing framework: a prediction's path is
known, and the lookup is the cheapest part of the request. Failures are answered by
transport.guarded.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from service.errors import ServiceError
from service.registry import Registry
from service.tasks.base import Endpoint, Handler
from service.transport import guarded, send_error, send_json

MODELS = "/v1/models/"


class V1:
    def __init__(self, registry: Registry, endpoints: list[Endpoint]) -> None:
        self.registry = registry
        self.posts: dict[str, Handler] = {e.route: e.handler for e in endpoints}
        self.gets: dict[str, Handler] = {"/v1/models": self.list_models, "/v1/health": self.health}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        handler = self.posts.get(path) if method == "POST" else self.gets.get(path) if method == "GET" else None
        if handler is None and method == "GET" and path.startswith(MODELS) and "/" not in path[len(MODELS) :]:
            handler = self.model_metadata
        if handler is None:
            await self.not_routed(path, method, send)
            return
        await guarded(handler(scope, receive, send), scope, send)

    async def not_routed(self, path: str, method: str, send: Send) -> None:
        allowed = "POST" if path in self.posts else "GET" if path in self.gets or path.startswith(MODELS) else None
        if allowed is not None:
            await send_error(send, 405, "method not allowed", [(b"allow", allowed.encode())])
            return
        _, _, name, action = (path.split("/", 3) + [""])[:4]
        if method == "POST" and action.startswith("predict"):
            try:  # a model that is not loaded (404), or failed to load (503), says so
                self.registry.get(name)
            except ServiceError as e:
                await send_json(send, e.status, e.body())
                return
        await send_error(send, 404, f"no route {path}")

    async def list_models(self, scope: Scope, receive: Receive, send: Send) -> None:
        reg = self.registry
        await send_json(send, 200, {**reg.health(), "models": [reg.describe(a) for a in reg.adapters.values()]})

    async def model_metadata(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.registry.describe(self.registry.get(scope["path"][len(MODELS) :])))

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        health = self.registry.health()
        await send_json(send, 200 if health["ready"] else 503, health)
