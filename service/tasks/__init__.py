"""One adapter per task, chosen by the card's `task`. A new task is one package here and one line below
(or a `register` call of its own, as tests/integration/test_new_task.py makes)."""

from __future__ import annotations

from service.tasks.base import Adapter
from service.tasks.image.adapter import ImageClassification
from service.tasks.tabular.adapter import BinaryClassification, Regression

ADAPTERS: dict[str, type[Adapter]] = {}


def register(*adapters: type[Adapter]) -> None:
    for adapter in adapters:
        ADAPTERS[adapter.task] = adapter


register(Regression, BinaryClassification, ImageClassification)
