"""The models this worker serves: every folder of the models directory, loaded once at start-up, each
behind the adapter of its card's task.

A folder that fails to load (files, sha256, graph against card, a task with no adapter, a card its
task cannot serve) is not served and keeps the worker not-ready (/readyz answers 503), with one error
line in the log naming the file and the problem. A half-loaded model is never served, and two folders
holding one model name serve neither.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from service.errors import ModelUnavailable, NotFound, field_error
from service.runtime import ModelLoadError, discover, load_model
from service.settings import Settings
from service.shutdown import drain
from service.tasks import ADAPTERS
from service.tasks.base import Adapter

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.adapters: dict[str, Adapter] = {}
        self.errors: dict[str, str] = {}
        try:
            directories = discover(settings.models_dir)
        except ModelLoadError as e:
            directories = []
            self.errors["models_dir"] = str(e)
        for directory in directories:
            try:
                adapter = self._load(directory, settings)
            except ModelLoadError as e:
                self.errors[directory.name] = str(e)
                continue
            name = adapter.name
            if name in self.adapters or name in self.errors:
                # Two folders, one name: serving either would be a guess. Neither is served.
                other = self.adapters.pop(name, None)
                first = other.model.directory if other is not None else self.errors[name]
                self.errors[name] = f"model {name} is in two folders, {first} and {directory}: rename one"
                continue
            self.adapters[name] = adapter
        if not self.adapters and not self.errors:
            self.errors["models_dir"] = f"{settings.models_dir}: no model folders in it"
        for problem in self.errors.values():
            log.error("not ready: %s", problem)

    @staticmethod
    def _load(directory: Path, settings: Settings) -> Adapter:
        model = load_model(directory, settings.execution())
        task = ADAPTERS.get(model.card.task)
        if task is None:
            raise ModelLoadError(f"{directory / 'card.json'}: no adapter serves task {model.card.task!r}")
        return task(model, settings)

    @property
    def ready(self) -> bool:
        """Every model folder loaded, and the worker is not shutting down (service.shutdown)."""
        return not self.errors and not drain.draining

    def get(self, name: str) -> Adapter:
        if name in self.adapters:
            return self.adapters[name]
        if name in self.errors:
            raise ModelUnavailable(f"model {name} failed to load; see the server log")
        expected = f"one of {sorted(self.adapters)}"
        raise NotFound(f"model {name} is not loaded", [field_error(["model"], expected, name, "not_found")])

    def describe(self, adapter: Adapter) -> dict[str, Any]:
        """The model's card, plus what only the running service knows: the provider that bound."""
        model = adapter.model
        return {
            **model.card.model_dump(mode="json"),
            "provider": model.provider,
            "device": model.device,
            **({"dynamic_batching": adapter.batcher.describe()} if adapter.batcher is not None else {}),
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
                n: {"version": a.model.card.version, "provider": a.model.provider, "device": a.model.device}
                for n, a in self.adapters.items()
            },
            "errors": sorted(self.errors),  # folder names only: the paths and reasons are in the log
        }
        if drain.draining:
            health["error"] = "not ready: shutting down"
        elif self.errors:
            health["error"] = f"not ready: {', '.join(sorted(self.errors))} failed to load (see the log)"
        return health
