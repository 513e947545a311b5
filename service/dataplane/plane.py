"""The data plane: the one way to a model for every protocol and verb.

    route(model, version or None, routing key)   -> the version that answers, and a shadow that also runs
    predict(routed, action, validated request)     -> the answer   (the typed /v1 routes)
    infer(routed, the graph's own tensors)         -> its output   (the Open Inference Protocol)
    feedback(model, outcomes)                      -> the join     (outcome feedback)

What every request to a model needs happens here, once, whichever protocol brought it: the version
policy's draw (a pinned version answers alone; else the canary takes its weight of requests, the same
ones for the same key, and the shadow runs on its sample), the drift windows, the shadow run after
the answer, the payload log, and the prediction metrics. A protocol reads and checks its own format,
names the model, validates the request with the adapter's types, and sends the answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import telemetry
from service.dataplane.drift import FOLD_EVERY_S, DriftBoard
from service.dataplane.feedback import PUBLISH_EVERY_S, Feedback
from service.dataplane.payloads import PayloadLog, make_payload_log
from service.dataplane.shadows import Shadows
from service.errors import InvalidInput, NotFound, field_error
from service.models.registry import Registry
from service.settings import Settings
from service.tasks.base import Adapter, Inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Routed:
    adapter: Adapter  # the version that answers
    shadow: Adapter | None = None  # a version that also runs on the request, its answer never sent


class DataPlane:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.payloads: PayloadLog | None = make_payload_log(settings)
        self.drift = DriftBoard(settings, registry.workers)
        self.figures: dict[tuple[str, str], dict[str, Any]] = {}  # the last service-wide drift figures
        self.shadows = Shadows()

    # --- which version answers --------------------------------------------------------------------------
    def route(self, name: str, version: str | None, key: str = "") -> Routed:
        """A pinned version answers alone; else the default, or the canary for its weight of requests
        (the same requests for the same key, X-Request-Key; at random without one), and the shadow
        runs on its sample."""
        if version is not None:
            return Routed(self.registry.get(name, version))
        served = self.registry.served(name)
        chosen = served.default
        if served.canary is not None:
            draw = zlib.crc32(key.encode()) % 10_000 / 100 if key else random.random() * 100
            if draw < served.canary.weight:
                chosen = served.canary.version
        shadow = served.shadow
        if shadow is not None and shadow.version != chosen and random.random() < shadow.sample:
            return Routed(served.versions[chosen], served.versions[shadow.version])
        return Routed(served.versions[chosen])

    def route_group(self, task: type[Adapter], name: str | None, version: str | None, key: str = "") -> Routed:
        """For a task whose models share their routes (photos): the model the request names, or the task's
        default among those served."""
        names = sorted(n for n, a in self.registry.adapters.items() if isinstance(a, task))
        name = name or task.default_model(names) or ""
        routed = self.route(name, version, key)
        if not isinstance(routed.adapter, task):
            raise InvalidInput(f"model {name} is not {task.noun}",
                               [field_error(["model"], f"one of {names}", name, f"not_{task.task}")])  # fmt: skip
        return Routed(routed.adapter, routed.shadow if isinstance(routed.shadow, task) else None)

    # --- the verbs ---------------------------------------------------------------------------------------------
    async def predict(self, routed: Routed, action: str, request: Any, request_id: str, route: str) -> dict[str, Any]:
        """A validated request answered; its drift rows, shadow and payload log entry taken care of."""
        adapter = routed.adapter
        prediction = await adapter.predict(action, request)
        self.drift.record(adapter, prediction.parts)
        if routed.shadow is not None:
            self.shadows.submit(adapter, routed.shadow, prediction.inputs, prediction.compared)
        payloads = self.payloads
        if payloads is not None and payloads.sampled():
            payloads.submit({"request_id": request_id, "model": adapter.name, "version": adapter.version,
                             "route": route, "request": prediction.logged, "answer": prediction.answer},
                            prediction.outputs)  # fmt: skip
        return prediction.answer

    async def explain(self, routed: Routed, action: str, request: Any, picture: bool = False) -> Any:
        """A validated request explained by the version routed to. An explanation is not a prediction: it is
        neither logged, nor counted for drift, nor shadowed (its cost would skew the shadow's comparison)."""
        return await routed.adapter.explain(action, request, picture)

    async def infer(self, routed: Routed, inputs: Inputs) -> np.ndarray:
        """The graph's own inputs (checked against its signature by the protocol) -> its first output.
        Its rows count for drift; tensors are not logged."""
        output, parts = await routed.adapter.infer(inputs)
        self.drift.record(routed.adapter, parts)
        return output

    def count(self, model: str, version: str, status: int, seconds: float) -> None:
        """A prediction answered (or refused) by a version: nnserve_predictions_total and its latency."""
        telemetry.count_prediction(model, version, status, seconds)

    # --- outcome feedback -----------------------------------------------------------------------------------
    def takes_feedback(self, name: str, path: str) -> None:
        """NotFound for a model not served, or when there is no payload log to join outcomes to."""
        self.registry.get(name)
        if self.payloads is None:
            raise NotFound(f"no route {path}: outcome feedback needs the payload log (NNSERVE_PAYLOAD_LOG_DIR)")

    async def feedback(self, name: str, body: Feedback) -> dict[str, Any]:
        """An observed outcome joined to its logged prediction (service/dataplane/feedback.py). A prediction
        answered by this worker a moment ago and still queued for the log is stored first: feedback sent
        right after its answer is joined."""
        adapter = self.registry.get(name)
        assert self.payloads is not None  # takes_feedback() said so
        self.payloads.remember_now(body.request_id)
        return await self.payloads.outcomes.join(name, adapter.check_outcome, body)

    def online(self, name: str) -> dict[str, Any] | None:
        if self.payloads is None:
            return None
        return self.payloads.outcomes.online(name, self.registry.get(name).measures)

    # --- drift ---------------------------------------------------------------------------------------------------
    def fold(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every served version's drift figures, over every worker's rows, now."""
        self.figures = self.drift.fold(self.registry.table.adapters())
        return self.figures

    def drift_warnings(self) -> list[str]:
        return self.drift.warnings()

    async def watch(self) -> None:
        """Once a second: drift folded and shared, its gauges set; every PUBLISH_EVERY_S the online
        measures of outcome feedback as gauges."""
        loop, published = asyncio.get_running_loop(), 0.0
        while True:
            await asyncio.sleep(FOLD_EVERY_S)
            try:
                for (model, version), figures in self.fold().items():
                    telemetry.publish_drift(model, version, figures)
                if self.payloads is not None and loop.time() - published >= PUBLISH_EVERY_S:
                    published = loop.time()
                    for name in list(self.registry.adapters):
                        for version, online in (self.online(name) or {}).items():
                            telemetry.publish_online(name, version, online)
            except Exception:  # say it, try again next time: the watch must not end
                log.exception("drift or online measures failed")
