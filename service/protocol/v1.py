"""The /v1 routes: the typed endpoints of every model served, model metadata and policy, health.

    POST /v1/<model>/<action>                          predict, predict-batch (a model's own routes); the
    POST /v1/<model>/versions/<version>/<action>       photo routes are the image task's group's, any
                                                       classifier by the request's `model` (predict,
                                                       predict-batch, predict-base64, predict-batch-base64)
    GET  /v1/models, /v1/models/<model>, /v1/health
    GET, PUT /v1/models/<model>/policy                 management (service/models/control.py)
    GET  /v1/models/<model>/drift                      what it is sent against its card, every worker's rows
    POST /v1/<model>/feedback                          an outcome, joined to its logged prediction

The actions a model answers, and their request and response types, are its task adapter's
(service/tasks/): a handler reads the body, validates it with the type of the version that answers,
and hands it to the data plane, which answers. Failures are raised and answered by the edge.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Send

from service.dataplane.feedback import Feedback
from service.dataplane.plane import DataPlane
from service.errors import NotFound, parse_json, received_value
from service.models.control import Control
from service.models.registry import Registry
from service.protocol import views
from service.protocol.bodies import JSON, MULTIPART, check_media_type, parse_form, read_body
from service.protocol.context import REQUEST_KEY, Context
from service.protocol.router import Route
from service.protocol.transport import json_bytes, respond, respond_json
from service.settings import Settings
from service.tasks import ADAPTERS
from service.tasks.base import Action, Adapter


def _action_names() -> frozenset[str]:
    return frozenset(name for task in ADAPTERS.values() for name in task.action_names)


ACTION_NAMES = _action_names()  # every task's: a route to a model not served yet says why it is not


class V1:
    def __init__(self, registry: Registry, plane: DataPlane, control: Control, settings: Settings) -> None:
        self.registry, self.plane, self.control = registry, plane, control
        self.max_body = settings.max_body_bytes
        self._routes: tuple[object, dict[str, tuple[type[Adapter], dict[str, Action]]]] = (None, {})

    def routes(self) -> list[Route]:
        model, name = self.labelled_by_model, self.labelled_by_name
        return [
            Route("/v1/models", ("GET",), self.list_models),
            Route("/v1/health", ("GET",), self.health),
            Route("/v1/models/{name}", ("GET",), self.model_metadata, label=name),
            Route("/v1/models/{name}/policy", ("GET",), self.get_policy, label=name),
            Route("/v1/models/{name}/policy", ("PUT",), self.set_policy, label=name),
            Route("/v1/models/{name}/drift", ("GET",), self.drift, label=name),
            Route("/v1/{model}/feedback", ("POST",), self.feedback, label=model),
            Route("/v1/{model}/{action}", ("POST",), self.predict, prediction=True, label=model),
            Route("/v1/{model}/versions/{version}/{action}", ("POST",), self.predict, prediction=True, label=model),
        ]

    # --- how the request metrics label these routes: served models by name, the rest as unmatched ---------
    def labelled_by_name(self, route: Route, params: dict[str, str]) -> str | None:
        return (
            route.template.replace("{name}", params["name"]) if params["name"] in self.registry.table.models else None
        )

    def labelled_by_model(self, route: Route, params: dict[str, str]) -> str | None:
        actions = self.actions_of(params["model"])
        action = params.get("action", "feedback")
        if actions is None or (action not in actions[1] and action != "feedback"):
            return None
        return route.template.replace("{model}", params["model"]).replace("{action}", action)

    def actions_of(self, name: str) -> tuple[type[Adapter], dict[str, Action]] | None:
        """The task and actions of the model, or the group, that answers at /v1/<name>/..., when served:
        worked out once per table (every request asks, twice)."""
        table = self.registry.table
        if self._routes[0] is not table:
            routes: dict[str, tuple[type[Adapter], dict[str, Action]]] = {}
            for adapter in self.registry.adapters.values():  # a group's first model speaks for it
                routes.setdefault(adapter.route_name, (type(adapter), adapter.action_map))
            self._routes = (table, routes)
        return self._routes[1].get(name)

    # --- predictions -----------------------------------------------------------------------------------------
    async def predict(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        name, version, action = params["model"], params.get("version"), params["action"]
        found = self.actions_of(name)
        if found is None or action not in found[1]:
            if found is None and action in ACTION_NAMES:
                self.registry.served(name)  # not loaded, unloaded, failed: the registry says which
            raise NotFound(f"no route {received_value(ctx.path)}")
        task, actions = found
        key = ctx.header(REQUEST_KEY)
        if task.group is None:  # a model's own routes: the version first, its types then
            routed = self.plane.route(name, version, key)
            ctx.answered_by(routed.adapter.name, routed.adapter.version)
            own = routed.adapter.action_map
            if action not in own:
                raise NotFound(f"model {name} ({task.task}) has no route {action}")
            request = await self.read(ctx, receive, own[action])
        else:  # a group's routes (photos): the request names its model
            request = await self.read(ctx, receive, actions[action])
            routed = self.plane.route_group(task, task.requested_model(request), version, key)
            ctx.answered_by(routed.adapter.name, routed.adapter.version)
        chosen = routed.adapter.action_map[action]
        if chosen.verb == "explain":
            picture = chosen.picture and "image/png" in ctx.header(b"accept")
            answer = await self.plane.explain(routed, action, request, picture)
            if isinstance(answer, bytes):  # the photo with its heat map (Accept: image/png)
                await respond(ctx, send, 200, answer, media_type=b"image/png")
                return
        else:
            answer = await self.plane.predict(routed, action, request, ctx.request_hex, ctx.path)
        await respond(ctx, send, 200, json_bytes(answer))

    async def read(self, ctx: Context, receive: Receive, action: Action) -> Any:
        """The body, validated as the action takes it: a JSON document of its type, or its multipart form."""
        if action.form is not None:
            content_type = check_media_type(ctx, MULTIPART)
            return parse_form(await read_body(ctx, receive, self.max_body), content_type, action.form)
        check_media_type(ctx, JSON)
        assert action.request is not None
        return parse_json(await read_body(ctx, receive, self.max_body), action.request)

    async def feedback(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        name = params["model"]
        self.plane.takes_feedback(name, ctx.path)  # 404 for a model not served, or no payload log: before the body
        check_media_type(ctx, JSON)
        body = parse_json(await read_body(ctx, receive, self.max_body), Feedback)
        await respond_json(ctx, send, 200, await self.plane.feedback(name, body))

    # --- what the service says about its models ---------------------------------------------------------------
    async def list_models(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        """A line per model; `?full=true`: the service's health and every model's full card, as
        /v1/models/{name} gives one (tens of kilobytes)."""
        if parse_qs(ctx.query.decode("latin-1")).get("full", ["false"])[-1].lower() in ("true", "1"):
            models = [views.describe(self.registry, a) for a in self.registry.adapters.values()]
            await respond_json(ctx, send, 200, {**views.health(self.registry, self.plane), "models": models})
            return
        await respond_json(ctx, send, 200, {"ready": self.registry.ready, "models": views.summary(self.registry)})

    async def model_metadata(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        await respond_json(ctx, send, 200, views.describe(self.registry, self.registry.get(params["name"])))

    async def health(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        """This worker's health, with its process id in X-NNServe-Worker."""
        health = views.health(self.registry, self.plane)
        await respond_json(ctx, send, 200 if health["ready"] else 503, health,
                           [(b"x-nnserve-worker", str(os.getpid()).encode())])  # fmt: skip

    async def drift(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        """Each served version's drift figures over every worker's rows (service/dataplane/drift.py), and
        the online measures of outcome feedback (service/dataplane/feedback.py) when the payload log is on."""
        name = params["name"]
        served = self.registry.served(name)
        figures = self.plane.fold()
        versions = {v: figures.get((name, v)) for v in served.versions}
        answer = {"model": name, "worker": os.getpid(), "versions": versions, "online": self.plane.online(name)}
        await respond_json(ctx, send, 200, answer)

    # --- the version policy ---------------------------------------------------------------------------------------
    async def get_policy(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        await respond_json(ctx, send, 200, self.control.policy(params["name"]))

    async def set_policy(self, ctx: Context, params: dict[str, str], receive: Receive, send: Send) -> None:
        check_media_type(ctx, JSON)
        body = await read_body(ctx, receive, self.max_body)
        await respond_json(ctx, send, 200, await self.control.set_policy(params["name"], body))
