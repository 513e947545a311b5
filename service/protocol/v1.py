"""The /v1 routes: the typed endpoints of every model served, model metadata and policy, health.

    POST /v1/<model>/predict, /v1/<model>/predict-batch                 the default version, or the canary
    POST /v1/<model>/versions/<version>/predict[-batch]                 a pinned version
    POST /v1/image-tagging/[versions/<version>/]predict[-batch][-base64] any classifier, by its `model` field
    GET  /v1/models, /v1/models/<model>, /v1/health
    GET, PUT /v1/models/<model>/policy                                  management (service/models/control.py)
    GET  /v1/models/<model>/drift                                       what it is sent against its card
    POST /v1/<model>/feedback                                           an outcome, joined to its logged prediction

A dispatcher on the path's segments rather than a routing framework: the model and version are looked
up in the registry's table at each request, so versions swapped in are served at once. Failures are
answered by transport.guarded.
"""

from __future__ import annotations

import os

from starlette.types import Receive, Scope, Send

from service.dataplane.feedback import Feedback
from service.errors import NotFound
from service.models.control import Control
from service.models.registry import Registry
from service.protocol.bodies import JSON, check_media_type, parse_json, read_body, received_value
from service.protocol.transport import guarded, send_error, send_json
from service.tasks.base import Handler, answered_by
from service.tasks.image.adapter import ROUTE as IMAGE_ROUTE
from service.telemetry import endpoint

PREDICT = ("predict", "predict-batch")
READ = ("GET", "HEAD")  # HEAD: the GET's status and headers (uvicorn drops the body)
IMAGE = IMAGE_ROUTE.rsplit("/", 1)[1]


class V1:
    def __init__(self, registry: Registry, image: dict[str, Handler], control: Control, max_body: int) -> None:
        self.registry = registry
        self.image = image  # the photo routes' handlers, by action: predict, predict-base64, ...
        for action in image:  # routes whatever the model: their errors are labelled by path from the start
            endpoint(f"{IMAGE_ROUTE}/{action}", routed=True)
        self.control = control
        self.max_body = max_body
        self.gets: dict[str, Handler] = {"/v1/models": self.list_models, "/v1/health": self.health}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path in self.gets:
            handling = self.gets[path](scope, receive, send) if method in READ else None
            await (guarded(handling, scope, send) if handling is not None else _405(send, "GET, HEAD"))
            return
        parts = path.split("/")  # "", "v1", ...
        if len(parts) in (4, 5) and parts[2] == "models" and parts[3] and parts[4:] in ([], ["policy"], ["drift"]):
            await self.model_route(scope, receive, send, parts[3], parts[4] if len(parts) == 5 else "")
            return
        if len(parts) == 6 and parts[3] == "versions" and parts[4]:
            name, version, action = parts[2], parts[4], parts[5]
        elif len(parts) == 4:
            name, version, action = parts[2], None, parts[3]
        else:
            name = version = action = None
        if name is not None and version is None and action == "feedback":
            await (guarded(self.feedback(scope, receive, send, name), scope, send) if method == "POST"
                   else _405(send, "POST"))  # fmt: skip
        elif name is None or not (action in PREDICT or (name == IMAGE and action in self.image)):
            await send_error(send, 404, f"no route {received_value(path)}")
        elif method != "POST":
            await _405(send, "POST")
        else:
            await guarded(self.predict(scope, receive, send, name, version, action), scope, send)

    async def predict(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None, action: str
    ) -> None:
        scope["nnserve.version"] = version
        if name == IMAGE:
            await self.image[action](scope, receive, send)
            return
        adapter, shadow = self.registry.route(name, version, scope)
        handler = getattr(adapter, "handlers", {}).get(action)
        if handler is None:
            raise NotFound(f"model {name} ({adapter.model.card.task}) has no route {action}")
        scope["nnserve.shadow"] = shadow
        answered_by(scope, adapter)
        await handler(scope, receive, send)

    async def model_route(self, scope: Scope, receive: Receive, send: Send, name: str, sub: str) -> None:
        method, policy = scope["method"], sub == "policy"
        if method in READ:
            handling = {
                "": lambda: self.model_metadata(send, name),
                "policy": lambda: send_json(send, 200, self.control.policy(name)),
                "drift": lambda: self.drift(send, name),
            }[sub]()
        elif method == "PUT" and policy:
            handling = self.set_policy(scope, receive, send, name)
        else:
            await _405(send, "GET, HEAD, PUT" if policy else "GET, HEAD")
            return
        await guarded(handling, scope, send)

    async def drift(self, send: Send, name: str) -> None:
        """Each served version's drift window against its card (service/dataplane/drift.py), folded now, and the
        online measures of outcome feedback (service/dataplane/feedback.py) when the payload log is on."""
        served = self.registry.served(name)
        versions = {v: a.drift.fold() if a.drift is not None else None for v, a in served.versions.items()}
        payloads, task = self.registry.payloads, served.versions[served.default].model.card.task
        online = payloads.outcomes.online(name, task) if payloads is not None else None
        await send_json(send, 200, {"model": name, "worker": os.getpid(), "versions": versions, "online": online})

    async def feedback(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        """An observed outcome joined to its logged prediction (service/dataplane/feedback.py)."""
        card = self.registry.get(name).model.card  # 404 for a model not served
        payloads = self.registry.payloads
        if payloads is None:
            raise NotFound(
                f"no route {scope['path']}: outcome feedback needs the payload log (NNSERVE_PAYLOAD_LOG_DIR)"
            )
        check_media_type(scope, JSON)
        body = parse_json(await read_body(scope, receive, self.max_body), Feedback)
        await send_json(send, 200, await payloads.outcomes.join(name, card.task, card.labels, body))

    async def set_policy(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        check_media_type(scope, JSON)
        body = await read_body(scope, receive, self.max_body)
        await send_json(send, 200, await self.control.set_policy(name, body))

    async def list_models(self, scope: Scope, receive: Receive, send: Send) -> None:
        reg = self.registry
        await send_json(send, 200, {**reg.health(), "models": [reg.describe(a) for a in reg.adapters.values()]})

    async def model_metadata(self, send: Send, name: str) -> None:
        await send_json(send, 200, self.registry.describe(self.registry.get(name)))

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        """This worker's health, with its process id in X-NNServe-Worker: each worker swaps versions
        in on its own, and a rollout is done when every worker says so."""
        health = self.registry.health()
        await send_json(
            send, 200 if health["ready"] else 503, health, [(b"x-nnserve-worker", str(os.getpid()).encode())]
        )


async def _405(send: Send, allowed: str) -> None:
    await send_error(send, 405, "method not allowed", [(b"allow", allowed.encode())])
