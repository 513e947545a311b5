"""What every task's adapter is: the card checked against the graph, the typed endpoints, and the one
place that decides how a request's inputs reach the model (a shared batch, inline, or a thread).

An adapter wraps one loaded model, in the spirit of LitServe's LitAPI and MLServer's MLModel:
decode (the endpoint's handler), run (here), encode (the handler again). /v1 and the Open Inference
Protocol (/v2) both run through `run`, so both share the batcher and the threading decision.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import numpy as np
from bentoml._internal.context import trace_context
from pydantic import BaseModel, Field

from service import telemetry
from service.dataplane.drift import Drift, check_names, make_drift
from service.dataplane.payloads import PayloadLog
from service.dataplane.shadows import shadows
from service.protocol.bodies import Form
from service.runtime import LoadedModel, ModelLoadError
from service.settings import Settings
from service.tasks.batching import Batcher


class Served(BaseModel):
    model: str = Field(description="Name of the model that answered.", examples=["housing-price"])
    version: str = Field(description="Version of that model (from its card).", examples=["1"])


Handler = Callable[[dict[str, Any], Any, Any], Awaitable[None]]  # ASGI: scope, receive, send
Inputs = tuple[np.ndarray, ...]


def answered_by(scope: dict[str, Any], adapter: Adapter) -> None:
    """Tells the edge which model and version answered, for the per-version metrics, and the request
    metrics that the path names a route (service/protocol/http_metrics.py)."""
    answer = scope.get("nnserve.answer")
    if answer is not None:
        answer.model, answer.version = adapter.name, adapter.model.card.version
    routed = scope.get(telemetry.ROUTED)
    if routed is not None:
        routed()
    else:
        telemetry.endpoint(scope["path"], routed=True)


@dataclass(frozen=True)
class Endpoint:
    """A typed POST route: what it takes (a JSON body of `request`, or a multipart `form`), what it
    answers, and the handler that does it. OpenAPI and BentoML's client schema are built from these."""

    route: str
    name: str  # the method of BentoML's client, e.g. housing_price
    summary: str
    response: type[BaseModel]
    handler: Handler
    request: type[BaseModel] | None = None
    form: Form | None = None


class Adapter:
    """One served model of a task. Subclasses check their card and say whether preparing a request's
    inputs is heavy (decoding photos: a thread) or light (encoding table rows: inline)."""

    task: ClassVar[str]
    heavy: ClassVar[bool] = False  # preparing inputs and running the model take milliseconds, not microseconds
    payloads: PayloadLog | None = None  # the worker's payload log, set by the registry (service/dataplane/payloads.py)

    def __init__(self, model: LoadedModel, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self.check()
        self.batcher = self.make_batcher()
        self.drift = self.make_drift()

    @property
    def name(self) -> str:
        return self.model.name

    def check(self) -> None:
        """Refuses (ModelLoadError) a card that does not describe its graph the way the task needs, and
        builds from the card what the adapter serves with (its types, its encoder)."""

    def fail(self, problem: str) -> ModelLoadError:
        return ModelLoadError(f"{self.model.directory / 'card.json'}: {problem}")

    def make_batcher(self) -> Batcher | None:
        return None

    def make_drift(self) -> Drift | None:
        """The window drift is measured over (service/dataplane/drift.py), when the card has a reference; a
        reference that does not name this task's features and outputs in order refuses the version."""
        reference = self.model.card.reference
        if reference is not None and (problem := check_names(reference, self.drift_names())):
            raise self.fail(problem)
        return make_drift(f"{self.name} v{self.model.card.version}", reference, self.drift_columns, self.settings)

    def drift_names(self) -> list[str]:
        """The distributions drift tracks, in the order of `drift_columns` and of the card's reference."""
        return []

    def drift_parts(self, inputs: Inputs, output: np.ndarray) -> tuple[np.ndarray, ...]:
        """What one run keeps for drift: references to arrays, no work (the last one has a row per row)."""
        return (output,)

    def drift_columns(self, parts: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        """Many runs' parts, concatenated -> one 1-D array per tracked distribution (off the request path)."""
        return []

    def smoke(self) -> None:
        """A prediction the card's own example must pass before the version serves (ModelLoadError)."""

    def shadow(self, scope: dict[str, Any], compute: Callable[[Adapter], Awaitable[Any]], live: Any) -> None:
        """When the request drew a shadow version (service/models/registry.py), runs `compute` on it in the
        background, after the live answer has gone, and records how it differs (`differences`)."""
        candidate = scope.get("nnserve.shadow")
        if candidate is not None:
            shadows.submit(self, candidate, compute, live)

    def log_payload(self, scope: dict[str, Any], request: Any, answer: Any, outputs: list[Any]) -> None:
        """The request and its answer (and its per-row outputs, for outcome feedback) to the payload log
        when there is one, after the answer has gone."""
        if self.payloads is not None and self.payloads.sampled():
            request_id = trace_context.request_id
            self.payloads.submit({
                "request_id": format(request_id if request_id is not None else random.getrandbits(64), "016x"),
                "model": self.name, "version": self.model.card.version, "route": scope["path"],
                "request": request, "answer": answer,
            }, outputs)  # fmt: skip

    def differences(self, live: Any, shadow: Any) -> tuple[str, list[float]]:
        """What the shadow metric records for one request: its measure, and one value per row."""
        raise NotImplementedError

    async def run(self, prepare: Callable[[], Inputs], heavy: bool | None = None) -> np.ndarray:
        """The model's (first) output for the inputs `prepare` makes. The one place that decides how
        they reach the model: the batcher, shared with concurrent requests (GPU photos, table rows);
        else heavy work in one thread hop (decoding and running together); else inline in the event
        loop, where the work takes less than a thread hop costs. `heavy` overrides the task's
        default for one request (a small photo is light)."""
        heavy = self.heavy if heavy is None else heavy
        if self.batcher is not None:
            inputs = await anyio.to_thread.run_sync(prepare) if heavy else prepare()
            output = await self.batcher(*inputs)
        elif heavy:
            inputs, output = await anyio.to_thread.run_sync(self._prepare_and_run, prepare)
        else:
            inputs = prepare()
            output = self.model.run(*inputs)
        if self.drift is not None:
            self.drift.record(self.drift_parts(inputs, output))
        return output

    def _prepare_and_run(self, prepare: Callable[[], Inputs]) -> tuple[Inputs, np.ndarray]:
        inputs = prepare()
        return inputs, self.model.run(*inputs)

    def describe(self) -> dict[str, Any]:
        """The task's OIP metadata parameters: how a client builds the graph's inputs."""
        card = self.model.card
        return {
            "task": card.task,
            "description": card.description,
            **({"bar_status": "not met"} if card.bar_failed() else {}),
        }
