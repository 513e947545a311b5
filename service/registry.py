"""The models this worker serves: every folder of the models directory, loaded once at start-up.

A folder that fails to load is not served and keeps the worker not-ready (/readyz answers 503),
with one error line in the log naming the file and the problem. A half-loaded model is never served.
"""

from __future__ import annotations

import logging
from typing import Any

from service.batching import Batcher
from service.contract import TABULAR
from service.errors import InvalidInput, ModelUnavailable, NotFound, field_error
from service.runtime import LoadedModel, ModelLoadError, discover, load_model
from service.settings import Settings
from service.shutdown import drain
from service.tabular import TabularEncoder
from service.telemetry import batch_size_observer

log = logging.getLogger(__name__)
DEFAULT_CLASSIFIER = "image-tagging"


def image_batcher(model: LoadedModel, settings: Settings) -> Batcher | None:
    """The dynamic batcher of an image model, or None for none. A GPU gets batches of up to 32 photos,
    a 2 ms wait to fill them, and batches padded to a few sizes, warmed up now. The CPU gets none by
    default: there a batch of 32 CIFAR photos runs only 14% more photos/s than batch 1 (2,497 vs
    2,181 on this project's 2-core machine), less than the extra thread hop costs."""
    gpu = model.on_gpu
    max_rows = settings.dynamic_batch_max or (32 if gpu else 1)
    if max_rows == 1:
        return None
    wait_ms = settings.dynamic_batch_wait_ms if settings.dynamic_batch_wait_ms >= 0 else (2.0 if gpu else 0.0)
    batcher = Batcher(model.run, max_rows, wait_ms / 1000, pad=gpu, observe=batch_size_observer(model.name))
    model.warm_up(batcher.buckets)
    return batcher


def tabular_batcher(model: LoadedModel, settings: Settings) -> Batcher | None:
    """The batcher of a tabular model: requests already waiting share one run, in the event loop (the
    model takes tens of microseconds: a thread hop would cost more), never waiting for more. On 2
    cores, one-row ad-click requests at 64 connections went from 5,231 to 7,201 requests/s (0.94x to
    1.31x the plain Starlette reference) and a lone request still runs at once."""
    if settings.tabular_batch_max <= 1:
        return None
    return Batcher(model.run, settings.tabular_batch_max, inline=True, observe=batch_size_observer(model.name))


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.models: dict[str, LoadedModel] = {}
        self.errors: dict[str, str] = {}
        try:
            directories = discover(settings.models_dir)
        except ModelLoadError as e:
            directories = []
            self.errors["models_dir"] = str(e)
        for directory in directories:
            try:
                model = load_model(directory, settings.execution())
            except ModelLoadError as e:
                log.error("model not served: %s", e)
                self.errors[directory.name] = str(e)
                continue
            self.models[model.name] = model
        if not self.models and not self.errors:
            self.errors["models_dir"] = f"{settings.models_dir}: no model folders in it"
        for problem in self.errors.values():
            log.error("not ready: %s", problem)
        self.encoders = {n: TabularEncoder(TABULAR[n], m.card) for n, m in self.models.items() if n in TABULAR}
        self.classifiers = sorted(n for n, m in self.models.items() if m.card.task == "image_classification")
        batchers = {n: image_batcher(self.models[n], settings) for n in self.classifiers}
        batchers |= {n: tabular_batcher(self.models[n], settings) for n in self.encoders}
        self.batchers = {n: b for n, b in batchers.items() if b is not None}

    @property
    def ready(self) -> bool:
        """Every model folder loaded, and the worker is not shutting down (service.shutdown)."""
        return not self.errors and not drain.draining

    def get(self, name: str) -> LoadedModel:
        if name in self.models:
            return self.models[name]
        if name in self.errors:
            raise ModelUnavailable(f"model {name} failed to load; see the server log")
        raise NotFound(
            f"model {name} is not loaded", [field_error(["model"], f"one of {sorted(self.models)}", name, "not_found")]
        )

    def classifier(self, name: str | None) -> LoadedModel:
        """The image classifier asked for; by default image-tagging, or the only one loaded."""
        if name is None:
            name = (
                DEFAULT_CLASSIFIER
                if DEFAULT_CLASSIFIER in self.models or len(self.classifiers) != 1
                else self.classifiers[0]
            )
        if name in self.models and name not in self.classifiers:
            raise InvalidInput(
                f"model {name} is not an image classifier",
                [field_error(["model"], f"one of {self.classifiers}", name, "not_a_classifier")],
            )
        return self.get(name)

    def describe(self, model: LoadedModel) -> dict[str, Any]:
        """The model's card, plus what only the running service knows: the provider that bound."""
        return {
            **model.card.model_dump(mode="json"),
            "provider": model.provider,
            "device": model.device,
            **({"dynamic_batching": self.batchers[model.name].describe()} if model.name in self.batchers else {}),
            "signature": {
                "inputs": [t.model_dump() for t in model.card.inputs],
                "outputs": [t.model_dump() for t in model.card.outputs],
            },
        }

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = {
            "ready": self.ready,
            "draining": drain.draining,
            "models": {
                n: {"version": m.card.version, "provider": m.provider, "device": m.device}
                for n, m in self.models.items()
            },
            "errors": sorted(self.errors),  # folder names only: the paths and reasons are in the log
        }
        if drain.draining:
            health["error"] = "not ready: shutting down"
        elif self.errors:
            health["error"] = f"not ready: {', '.join(sorted(self.errors))} failed to load (see the log)"
        return health
