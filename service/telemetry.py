"""nnserve's own Prometheus series, on /metrics beside BentoML's request metrics:

    nnserve_model_info{model, version, provider, device} 1    the provider each model actually bound
    nnserve_dynamic_batch_size{model}                          rows (photos, table rows) per batched run
    nnserve_client_disconnects_total{endpoint}                 requests whose client hung up before they
                                                               were read: not answered, not client errors
    nnserve_model_refused{model, version}                      1 while a version is refused (service/models/registry.py)
    nnserve_model_bar_not_met{model, version}                  1 while a version whose card's acceptance bar
                                                               failed is served (its card's bar.checks)
    nnserve_predictions_total{model, version, status}          prediction answers, by the version that answered
    nnserve_prediction_seconds{model, version}                 their latency, from the edge
    nnserve_in_flight                                          predictions being answered now, summed over
                                                               the workers: what an autoscaler reads
                                                               (deploy/kubernetes/prometheus-adapter/)
    nnserve_shadow_difference{model, version, shadow_version, measure}
                                                               live against shadow answers: absolute_difference
                                                               (regression), probability_difference (clicks),
                                                               top1_agreement (tags: 1 agree, 0 not)
    nnserve_shadow_skipped_total{model, reason}                shadow runs not made (busy) or failed (error)
    nnserve_drift_psi{model, version, distribution, kind}       the drift window against the card's reference
    nnserve_drift_js_distance{model, version, distribution, kind}  (service/dataplane/drift.py); kind: feature, output
    nnserve_drift_window_rows{model, version}                  rows in the drift window
    nnserve_payload_log_evicted_bytes_total{what}             payload log bytes dropped, oldest first, to keep the
                                                               directory budget: logs, outcomes (dataplane/logbudget.py)
    nnserve_payload_log_entries_total{outcome}                 payload log entries written, or dropped when the
                                                               writer fell behind (service/dataplane/payloads.py)
    nnserve_online_metric{model, version, measure}             outcome feedback joined to logged predictions:
                                                               auc, log_loss, calibration_error, mae, median_ape,
                                                               top1, rows (service/dataplane/feedback.py)

prometheus_client is imported when a worker creates the service, not when this module is imported:
BentoML sets PROMETHEUS_MULTIPROC_DIR in the worker only then, and a client imported earlier would
keep its series to itself (bentoml/metrics.py explains the same).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from service.runtime import LoadedModel
from service.tally import TALLY

SHADOW_BUCKETS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.99, 1, 10, 100, 1_000, 10_000, 100_000]


@dataclass(frozen=True)
class Families:
    """The series above, by name."""

    info: Any
    batch_sizes: Any
    disconnects: Any
    refused: Any
    bar_not_met: Any
    answers: Any
    seconds: Any
    shadow: Any
    shadow_skipped: Any
    in_flight: Any
    drift_psi: Any
    drift_js: Any
    drift_rows: Any
    payloads: Any
    online: Any
    evicted: Any


@cache
def _families() -> Families:
    from prometheus_client import Counter, Gauge, Histogram

    drift = ["model", "version", "distribution", "kind"]
    return Families(
        info=Gauge("nnserve_model_info", "The models served, with the execution provider that bound (value 1).",
                   ["model", "version", "provider", "device"], multiprocess_mode="livemax"),
        batch_sizes=Histogram("nnserve_dynamic_batch_size", "Rows (photos, table rows) per run of a model's dynamic "
                              "batcher.", ["model"], buckets=[1, 2, 4, 8, 16, 32, 64, 128]),
        disconnects=Counter("nnserve_client_disconnects",
                            "Requests whose client hung up before they were read (not answered).", ["endpoint"]),
        refused=Gauge("nnserve_model_refused", "1 while a model version is refused (bad files, checks failed).",
                      ["model", "version"], multiprocess_mode="livemax"),
        bar_not_met=Gauge("nnserve_model_bar_not_met",
                          "1 while a version whose card's acceptance bar failed is served.", ["model", "version"],
                          multiprocess_mode="livemax"),
        answers=Counter("nnserve_predictions", "Prediction answers, by version.", ["model", "version", "status"]),
        seconds=Histogram("nnserve_prediction_seconds", "Prediction latency at the edge.", ["model", "version"],
                          buckets=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10]),
        shadow=Histogram("nnserve_shadow_difference", "Live against shadow answers, per row or photo.",
                         ["model", "version", "shadow_version", "measure"], buckets=SHADOW_BUCKETS),
        shadow_skipped=Counter("nnserve_shadow_skipped", "Shadow runs not made or failed.", ["model", "reason"]),
        in_flight=Gauge("nnserve_in_flight", "Predictions being answered now.", multiprocess_mode="livesum"),
        drift_psi=Gauge("nnserve_drift_psi", "Population stability index, drift window against the card.", drift,
                        multiprocess_mode="livemax"),
        drift_js=Gauge("nnserve_drift_js_distance", "Jensen-Shannon distance, drift window against the card.", drift,
                       multiprocess_mode="livemax"),
        drift_rows=Gauge("nnserve_drift_window_rows", "Rows in the drift window.", ["model", "version"],
                         multiprocess_mode="livemax"),
        payloads=Counter("nnserve_payload_log_entries", "Payload log entries, written or dropped.", ["outcome"]),
        online=Gauge("nnserve_online_metric", "Outcome feedback joined to logged predictions, latest window.",
                     ["model", "version", "measure"], multiprocess_mode="livemax"),
        evicted=Counter("nnserve_payload_log_evicted_bytes",
                        "Payload log bytes dropped to keep the directory's budget.", ["what"]),
    )  # fmt: skip


def publish_models(
    models: Iterable[LoadedModel],
    previous: Iterable[LoadedModel] = (),
    refused: Iterable[tuple[str, str]] = (),
    was_refused: Iterable[tuple[str, str]] = (),
) -> None:
    """The versions served now (1) and no longer (0), those of them whose bar failed; the versions refused
    now (1) and no longer (0)."""
    series = _families()
    for value, group in ((0, previous), (1, models)):
        for m in group:
            series.info.labels(model=m.name, version=m.card.version, provider=m.provider, device=m.device).set(value)
            series.bar_not_met.labels(model=m.name, version=m.card.version).set(value if m.card.bar_failed() else 0)
    for value, pairs in ((0, was_refused), (1, refused)):
        for name, version in pairs:
            series.refused.labels(model=name, version=version).set(value)


def batch_size_observer(model: str) -> Callable[[int], None]:
    child = _families().batch_sizes.labels(model=model)
    return lambda rows: TALLY.observe(child, rows)


def count_disconnect(endpoint: str) -> None:
    _families().disconnects.labels(endpoint=endpoint).inc()


def count_in_flight(change: int) -> None:
    """A prediction taken (1) or answered (-1): the autoscaler's gauge."""
    TALLY.add(_families().in_flight, change)


def count_prediction(model: str, version: str, status: int, seconds: float) -> None:
    answers, latency = _prediction_series(model, version, status)
    TALLY.add(answers)
    TALLY.observe(latency, seconds)


@cache
def _prediction_series(model: str, version: str, status: int) -> tuple[Any, Any]:
    """The labelled children, looked up once: on every prediction, labels() would cost a lock and a dict."""
    series = _families()
    return (series.answers.labels(model=model, version=version, status=str(status)),
            series.seconds.labels(model=model, version=version))  # fmt: skip


def shadow_observer(model: str, version: str, shadow_version: str, measure: str) -> Callable[[float], None]:
    labels = {"model": model, "version": version, "shadow_version": shadow_version, "measure": measure}
    return _families().shadow.labels(**labels).observe


def count_shadow_skipped(model: str, reason: str) -> None:
    _families().shadow_skipped.labels(model=model, reason=reason).inc()


def publish_drift(model: str, version: str, figures: dict[str, Any]) -> None:
    series = _families()
    series.drift_rows.labels(model=model, version=version).set(figures["rows"])
    for name, f in figures["distributions"].items():
        if f["psi"] is not None:
            labels = {"model": model, "version": version, "distribution": name, "kind": f["kind"]}
            series.drift_psi.labels(**labels).set(f["psi"])
            series.drift_js.labels(**labels).set(f["js_distance"])


def count_payload(outcome: str, n: int = 1) -> None:
    if n:
        _families().payloads.labels(outcome=outcome).inc(n)


def count_evicted(what: str, size: int) -> None:
    if size:
        _families().evicted.labels(what=what).inc(size)


def publish_online(model: str, version: str, figures: dict[str, Any]) -> None:
    online = _families().online
    for measure, value in figures.items():
        if value is not None:
            online.labels(model=model, version=version, measure=measure).set(value)


_MODEL = re.compile(rb'[{,]model="((?:[^"\\]|\\.)*)"')
_VERSION = re.compile(rb'[{,]version="((?:[^"\\]|\\.)*)"')


def current_series(text: bytes, models: set[str], versions: set[tuple[str, str]]) -> bytes:
    """/metrics without the nnserve series of models and versions no longer served or refused. The
    multiprocess files keep every series a worker ever wrote (prometheus_client cannot remove one from
    them): after four cycles of 500 versions, 2,007 nnserve_model_info series and a 422 KB answer. A
    retired version's series end here, as they would with one process."""
    kept = []
    for line in text.split(b"\n"):
        if line.startswith(b"nnserve_"):
            model = _MODEL.search(line)
            if model is not None:
                name = model.group(1).decode()
                version = _VERSION.search(line)
                if name not in models or (version is not None and (name, version.group(1).decode()) not in versions):
                    continue
        kept.append(line)
    return b"\n".join(kept)


def prediction_totals() -> dict[tuple[str, str], dict[str, float]]:
    """The service's prediction answers by version, every worker's: {"success": answers with status 200,
    "fail": the others, "seconds": their latency summed}, read from the Prometheus multiprocess folder
    (this process's own series without one). For the protocols' statistics (gRPC ModelStatistics)."""
    import os

    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    TALLY.flush()  # this worker's writes still gathered for the loop's turn
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    registry = REGISTRY
    if folder:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, folder)
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for metric in registry.collect():
        if metric.name not in ("nnserve_predictions", "nnserve_prediction_seconds"):
            continue
        for sample in metric.samples:
            key = (sample.labels.get("model", ""), sample.labels.get("version", ""))
            entry = totals.setdefault(key, {"success": 0, "fail": 0, "seconds": 0.0})
            if sample.name == "nnserve_predictions_total":
                entry["success" if sample.labels.get("status") == "200" else "fail"] += sample.value
            elif sample.name == "nnserve_prediction_seconds_sum":
                entry["seconds"] += sample.value
    return totals
