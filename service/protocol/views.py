"""What the service says about itself, as JSON: a model's metadata, the health of the service, the
repository index. Built from the registry's table (and the data plane's warnings) at each request."""

from __future__ import annotations

import time
from typing import Any

from service.dataplane.plane import DataPlane
from service.models.registry import Registry
from service.shutdown import drain
from service.tasks.base import Adapter


def describe(registry: Registry, adapter: Adapter) -> dict[str, Any]:
    """The model's card, plus what only the running service knows: the provider that bound, and the
    versions served."""
    model = adapter.model
    card = model.card.model_dump(mode="json")
    for feature in card["categorical"]:  # a hashed ID's bucket bitmap: up to megabytes, of no use to a client
        if feature["hashing"] is not None:
            seen = feature["hashing"]["seen"]
            size = len(seen) * 3 // 4 - seen[-2:].count("=")  # base64 decoded
            feature["hashing"]["seen"] = f"{size:,} bytes of bucket bitmap (in card.json)"
    served = registry.table.models.get(model.name)
    return {
        **card,
        **_bar_flag(adapter),
        "provider": model.provider,
        "device": model.device,
        "serving": served.describe() if served is not None else None,
        **({"dynamic_batching": adapter.batcher.describe()} if adapter.batcher is not None else {}),
        **({"explanations": facts} if (facts := adapter.explanations()) is not None else {}),
        "signature": {
            "inputs": [t.model_dump() for t in model.card.inputs],
            "outputs": [t.model_dump() for t in model.card.outputs],
        },
    }


def summary(registry: Registry) -> list[dict[str, Any]]:
    """One line per model, as a person scanning a list wants it (the full cards: describe): its versions and
    default, task, provider, status and the card's headline metric; a folder that failed to load too."""
    table, rows = registry.table, []
    for name, served in table.models.items():
        adapter = served.versions[served.default]
        card = adapter.model.card
        headline = next(iter(card.metrics.get("model", {}).items()), None)
        rows.append({
            "name": name, "versions": list(served.versions), "default": served.default, "task": card.task,
            "provider": adapter.model.provider, "status": "bar not met" if card.bar_failed() else "ready",
            "metric": dict([headline]) if headline else {},
            **({"canary": served.canary.model_dump()} if served.canary else {}),
        })  # fmt: skip
    rows += [{"name": name, "status": "failed to load (see the log)"} for name in sorted(table.errors)]
    return rows


def health(registry: Registry, plane: DataPlane) -> dict[str, Any]:
    table = registry.table
    models = {}
    for name, s in table.models.items():
        adapter = s.versions[s.default]
        models[name] = {"version": s.default, "provider": adapter.model.provider, "device": adapter.model.device,
                        **_bar_flag(adapter), **s.describe()}  # fmt: skip
    refused: dict[str, list[str]] = {}
    for name, version in sorted(table.refused):
        refused.setdefault(name, []).append(version)
    answer: dict[str, Any] = {
        "ready": registry.ready,
        "draining": drain.draining,
        "models": models,
        "errors": sorted(table.errors),  # names only: the paths and reasons are in the log
        "refused": refused,  # versions refused while others serve, by model
        **({"policy_error": table.policy_error} if table.policy_error else {}),
    }
    warnings = [f"{a.name} v{a.version}: bar not met ({'; '.join(failed)})"
                for a in table.adapters() if (failed := a.model.card.bar_failed())]  # fmt: skip
    warnings += plane.drift_warnings()
    if registry.stuck_since is not None:
        waited = time.monotonic() - registry.stuck_since
        warnings.append(f"{registry.settings.models_dir}: a look at it has not come back for {waited:.0f} s: "
                        "new versions and policy changes wait")  # fmt: skip
    if warnings:  # never a readiness failure: a bar not met, drift (service/dataplane/drift.py)
        answer["warnings"] = warnings
    if drain.draining:
        answer["error"] = "not ready: shutting down"
    elif table.errors:
        answer["error"] = f"not ready: {', '.join(sorted(table.errors))} failed to load (see the log)"
    return answer


def index(registry: Registry) -> list[dict[str, str]]:
    """Every version on disk and its state, as Triton's repository index gives them."""
    table, entries = registry.table, []
    for f in table.found:
        name, version = f.name or f.path.name, f.version or f.path.name
        if name in table.models and version in table.models[name].versions:
            entries.append({"name": name, "version": version, "state": "READY", "reason": ""})
            continue
        reason = table.refused.get((name, version)) or table.errors.get(f.path.name) or "unloaded"
        entries.append({"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason})
    return entries


def _bar_flag(adapter: Adapter) -> dict[str, str]:
    """{"bar_status": "not met"} for a version whose card's acceptance bar failed; nothing otherwise."""
    return {"bar_status": "not met"} if adapter.model.card.bar_failed() else {}
