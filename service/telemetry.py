"""nnserve's own Prometheus series, on /metrics beside BentoML's request metrics:

    nnserve_model_info{model, version, provider, device} 1    the provider each model actually bound
    nnserve_dynamic_batch_size{model}                          rows (photos, table rows) per batched run
    nnserve_client_disconnects_total{endpoint}                 requests whose client hung up before they
                                                               were read: not answered, not client errors

prometheus_client is imported when a worker creates the service, not when this module is imported:
BentoML sets PROMETHEUS_MULTIPROC_DIR in the worker only then, and a client imported earlier would
keep its series to itself (bentoml/metrics.py explains the same).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from service.runtime import LoadedModel


@cache
def _series() -> tuple[Any, Any, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    info = Gauge(
        "nnserve_model_info", "The models served, with the execution provider that bound (value 1).",
        ["model", "version", "provider", "device"], multiprocess_mode="livemax",
    )  # fmt: skip
    sizes = Histogram(
        "nnserve_dynamic_batch_size", "Rows (photos, table rows) per run of a model's dynamic batcher.", ["model"],
        buckets=[1, 2, 4, 8, 16, 32, 64, 128],
    )  # fmt: skip
    disconnects = Counter(
        "nnserve_client_disconnects", "Requests whose client hung up before they were read (not answered).",
        ["endpoint"],
    )  # fmt: skip
    return info, sizes, disconnects


def publish_models(models: list[LoadedModel]) -> None:
    info, _, _ = _series()
    for m in models:
        info.labels(model=m.name, version=m.card.version, provider=m.provider, device=m.device).set(1)


def batch_size_observer(model: str) -> Callable[[int], None]:
    _, sizes, _ = _series()
    return sizes.labels(model=model).observe


def count_disconnect(endpoint: str) -> None:
    _, _, disconnects = _series()
    disconnects.labels(endpoint=endpoint).inc()
