"""One adapter per task, chosen by the card's `task`. A new task is one new module here and a line below."""

from __future__ import annotations

from service.tasks.base import Adapter
from service.tasks.image.adapter import ImageClassification
from service.tasks.tabular.adapter import BinaryClassification, Regression

ADAPTERS: dict[str, type[Adapter]] = {a.task: a for a in (Regression, BinaryClassification, ImageClassification)}
