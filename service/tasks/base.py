"""What every task's adapter is: the card checked against the graph, what its models answer (their
actions and types), how a request becomes the graph's inputs and an answer, and the one place that
decides how those inputs reach the model (a shared batch, inline, or a thread).

An adapter wraps one loaded model version, in the spirit of LitServe's LitAPI and MLServer's MLModel:
decode, run, encode. It knows nothing of HTTP: the protocol layer reads bodies and sends answers, the
data plane routes, logs, shadows and measures; both reach the model through an adapter's `predict`
and `infer`. A task is a package under service/tasks/ and one line in service/tasks/__init__.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import anyio
import numpy as np
from pydantic import BaseModel, Field

from service.runtime import LoadedModel, ModelLoadError
from service.settings import Settings
from service.tasks.batching import Batcher

Inputs = tuple[np.ndarray, ...]  # the graph's inputs, in its order, rows first


class Served(BaseModel):
    model: str = Field(description="Name of the model that answered.", examples=["housing-price"])
    version: str = Field(description="Version of that model (from its card).", examples=["1"])


@dataclass(frozen=True)
class Form:
    """A multipart form: a file field (repeated, 1 to `max_files` times, when `many`), and text fields
    that `fields` validates (lax: "3" is 3), as FastAPI's Form() would."""

    file: str
    description: str
    fields: type[BaseModel]
    many: bool = False
    max_files: int = 1


@dataclass(frozen=True)
class Action:
    """One thing a model answers: what a request holds (a JSON `request`, or a multipart `form`) and what
    the answer is. The protocol layer makes its typed route, its OpenAPI entry and its BentoML client
    method from these."""

    name: str  # predict, predict-batch, predict-base64, ...
    client_name: str  # the method of BentoML's client, e.g. housing_price_batch
    summary: str
    response: type[BaseModel]
    request: type[BaseModel] | None = None
    form: Form | None = None
    verb: str = "predict"  # or "explain": the data plane answers it without logging, drift or shadow
    picture: bool = False  # the answer may also be a PNG (Accept: image/png)


@dataclass
class Prediction:
    """One request answered, and what the data plane keeps of it."""

    answer: dict[str, Any]  # what the client is sent
    logged: Any  # the request as the payload log keeps it (validated rows; photos by their size)
    outputs: list[Any]  # one per row or photo: what outcome feedback is joined to
    parts: tuple[np.ndarray, ...]  # what drift keeps of the run: references, no copy
    inputs: Any  # the decoded request: a shadow version answers it too
    compared: Any  # what a shadow's answer is compared with (`differences`)


class Adapter:
    """One served model version of a task. Subclasses check their card, declare their actions, decode,
    answer, and say whether preparing a request's inputs is heavy (decoding photos: a thread) or light
    (encoding table rows: inline)."""

    task: ClassVar[str]
    heavy: ClassVar[bool] = False  # preparing inputs and running the model take milliseconds, not microseconds
    # A route name every model of the task shares, each request naming its model (photos: any classifier
    # answers at /v1/image-tagging/...); None: a model's routes are its own name's.
    group: ClassVar[str | None] = None
    noun: ClassVar[str] = "a model of this task"  # for messages: "model x is not <noun>"
    action_names: ClassVar[tuple[str, ...]] = ()  # what `actions` names, known before any model is served

    def __init__(self, model: LoadedModel, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self.version = model.card.version
        self.check()
        self.check_reference()
        self.batcher = self.make_batcher()

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def route_name(self) -> str:
        return self.group or self.name

    @classmethod
    def default_model(cls, names: list[str]) -> str | None:
        """Of a group's models served (`names`), the one a request naming none is answered by: the one
        named as the group, or the only one."""
        return cls.group if cls.group in names or len(names) != 1 else names[0]

    @staticmethod
    def requested_model(request: Any) -> str | None:
        """The model a request to a group's route names (its `model` field), or None."""
        options = request[1] if isinstance(request, tuple) else request
        return getattr(options, "model", None)

    def fail(self, problem: str) -> ModelLoadError:
        return ModelLoadError(f"{self.model.directory / 'card.json'}: {problem}")

    # --- what a task declares -----------------------------------------------------------------------
    def check(self) -> None:
        """Refuses (ModelLoadError) a card that does not describe its graph the way the task needs, and
        builds from the card what the adapter serves with (its types, its encoder)."""

    def actions(self) -> list[Action]:
        return []

    @cached_property
    def action_map(self) -> dict[str, Action]:
        """The actions by name, made once: a version's types do not change while it serves."""
        return {a.name: a for a in self.actions()}

    def smoke(self) -> None:
        """A prediction the card's own example must pass before the version serves (ModelLoadError)."""

    def batch_limit(self) -> tuple[int, str]:
        """Most rows (photos) in one request, and the setting that says so."""
        return self.settings.max_batch_rows, "NNSERVE_MAX_BATCH_ROWS"

    def explanations(self) -> dict[str, Any] | None:
        """How this version explains its answers (the method and its cost), for its metadata; None: it does not."""
        return None

    def describe(self) -> dict[str, Any]:
        """The task's OIP metadata parameters: how a client builds the graph's inputs."""
        card = self.model.card
        return {"task": card.task, "description": card.description,
                **({"bar_status": "not met"} if card.bar_failed() else {})}  # fmt: skip

    # --- a request, answered ---------------------------------------------------------------------------
    async def predict(self, action: str, request: Any) -> Prediction:
        """A validated request of one of the actions -> its answer, and what the data plane keeps."""
        raise NotImplementedError

    async def explain(self, action: str, request: Any, picture: bool = False) -> Any:
        """A validated request of an explain action -> its explanation (a PNG's bytes when `picture` and
        the task draws one)."""
        raise NotImplementedError

    async def compute(self, inputs: Any) -> tuple[Any, tuple[np.ndarray, ...]]:
        """Decoded inputs -> what is compared with a shadow's (see Prediction.compared), and drift's parts.
        A shadow version answers the live request's inputs through this."""
        raise NotImplementedError

    def differences(self, live: Any, shadow: Any) -> tuple[str, list[float]]:
        """What the shadow metric records for one request: its measure, and one value per row."""
        raise NotImplementedError

    async def infer(self, inputs: Inputs) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """The graph's own inputs (the Open Inference Protocol) -> its (first) output, and drift's parts."""
        ran, output = await self.run(lambda: inputs)
        return output, self.parts(ran, output)

    # --- outcome feedback --------------------------------------------------------------------------------
    def check_outcome(self, outcome: Any, loc: list[str | int]) -> None:
        """An observed outcome this task can measure, or InvalidInput naming it at `loc`."""
        raise NotImplementedError

    def measures(self, outputs: list[Any], outcomes: list[Any]) -> dict[str, float | int | None]:
        """What joined (output, outcome) rows say, by the trainers' own measures."""
        raise NotImplementedError

    # --- drift ---------------------------------------------------------------------------------------------
    def drift_names(self) -> list[str]:
        """The distributions drift tracks, in the order of `drift_columns` and of the card's reference."""
        return []

    def parts(self, inputs: Inputs, output: np.ndarray) -> tuple[np.ndarray, ...]:
        """What drift keeps of one run: references to arrays, no work (the last one has a row per row)."""
        return (output,)

    def drift_columns(self, parts: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        """Many runs' parts, concatenated -> one 1-D array per tracked distribution (off the request path)."""
        return []

    def check_reference(self) -> None:
        """A card's reference must name this task's distributions in order: else the version is refused."""
        reference = self.model.card.reference
        if reference is None:
            return
        names = [d.name for d in reference.distributions]
        if names != self.drift_names():
            raise self.fail(f"reference distributions {names}; this task tracks {self.drift_names()} in that order")
        for d in reference.distributions:
            if d.bins() != len(d.fractions) or (d.edges is None) == (d.codes is None):
                raise self.fail(f"reference distribution {d.name}: give edges or codes, and one fraction per bin")

    # --- how inputs reach the model -------------------------------------------------------------------------
    def make_batcher(self) -> Batcher | None:
        return None

    async def run(self, prepare: Callable[[], Inputs], heavy: bool | None = None) -> tuple[Inputs, np.ndarray]:
        """The inputs `prepare` makes, and the model's (first) output for them. The one place that decides
        how they reach the model: the batcher, shared with concurrent requests (table rows; small CPU
        photos, in the event loop, where the batcher is inline: heavy work never goes there);
        else heavy work in one thread hop (decoding and running together); else inline in the event
        loop, where the work takes less than a thread hop costs. `heavy` overrides the task's default
        for one request (a small photo is light).

        A heavy task's light request (a photo of milliseconds' work) waits one turn of the loop before
        it runs, as every request did when BentoML's timeout layer ran it in a task of its own. Run in
        the step that read it, 224 px photos on one worker and 16 connections were answered at p99
        340-520 ms (p50 82-97); with the turn 155-176 ms, as before the data plane (128-192), for
        the same throughput (bench A/B, alternating runs)."""
        heavy = self.heavy if heavy is None else heavy
        batcher = self.batcher
        if batcher is not None and not batcher.inline:  # a batcher in a thread takes every request
            inputs = await anyio.to_thread.run_sync(prepare) if heavy else prepare()
            return inputs, await batcher(*inputs)
        if heavy:  # an inline batcher takes light work only: heavy work keeps its thread, unbatched
            return await anyio.to_thread.run_sync(self._prepare_and_run, prepare)
        if self.heavy:  # one turn of the loop first (the docstring)
            await asyncio.sleep(0)
        inputs = prepare()
        return inputs, await batcher(*inputs) if batcher is not None else self.model.run(*inputs)

    def _prepare_and_run(self, prepare: Callable[[], Inputs]) -> tuple[Inputs, np.ndarray]:
        inputs = prepare()
        return inputs, self.model.run(*inputs)
