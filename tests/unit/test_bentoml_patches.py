"""The TimeoutMiddleware fix: no timer left behind per request, 504 still on timeout, no wait on failure."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from service.glue import patches as bentoml_patches
from service.glue.patches import ORIGINAL_CALL, BentoMLChanged, patch_timeout_middleware


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _serve(call, app, n: int, timeout: float = 60) -> tuple[int, list]:
    """Runs n requests through the middleware; returns the timers still scheduled, and what was sent."""
    middleware = TimeoutMiddleware(app, timeout=timeout)
    sent: list = []

    async def send(message):
        sent.append(message)

    for _ in range(n):
        await call(middleware, {"type": "http", "path": "/"}, None, send)
    pending = [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    return len(pending), sent


def test_the_original_leaks_one_timer_per_request_and_the_fix_none():
    leaked, _ = asyncio.run(_serve(ORIGINAL_CALL, _ok, 200))
    assert leaked >= 200  # what the fix is for: this is BentoML 1.4.40's behaviour
    leaked, sent = asyncio.run(_serve(bentoml_patches._call, _ok, 200))
    assert leaked == 0 and len(sent) == 400


def test_a_slow_request_still_gets_504():
    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    _, sent = asyncio.run(_serve(bentoml_patches._call, slow, 1, timeout=0.05))
    assert sent[0]["status"] == 504


def test_an_app_that_fails_before_answering_raises_instead_of_hanging():
    async def broken(scope, receive, send):
        raise ValueError("boom")

    async def run():
        # With a one-hour timeout the original hangs for the hour; wait_for is only a guard against that.
        await asyncio.wait_for(_serve(bentoml_patches._call, broken, 1, timeout=3600), timeout=60)

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(run())


def test_other_code_is_not_patched_blindly():
    with pytest.raises(BentoMLChanged, match="BentoML 9.9.9"):
        patch_timeout_middleware(version="9.9.9", original=_ok)


def test_importing_the_service_applies_the_patch():
    import service.app  # noqa: F401

    assert TimeoutMiddleware.__call__ is bentoml_patches._call


def _middleware_classes(monkeypatch, traced: bool) -> list:
    from bentoml._internal.server.http.access import AccessLogMiddleware
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware import Middleware

    from service.protocol.edge import Edge

    monkeypatch.setattr(bentoml_patches, "tracing_configured", lambda: traced)
    skip = ["/livez"]
    bentomls = [Middleware(TimeoutMiddleware, timeout=1), Middleware(OpenTelemetryMiddleware, excluded_urls=None),
                Middleware(AccessLogMiddleware, has_request_content_type=True, skip_paths=skip),
                Middleware(RunnerTrafficMetricsMiddleware, namespace="bentoml_service", skip_paths=skip),
                Middleware(Edge, settings=None)]  # fmt: skip
    service = SimpleNamespace(middlewares=[(Edge, {})])
    return [m.cls for m in bentoml_patches.own_middlewares(bentomls, service)]


def test_bentomls_request_layers_give_way_to_the_edge_unless_traced(monkeypatch):
    from service.protocol.edge import Edge

    assert _middleware_classes(monkeypatch, traced=False) == [Edge]  # the edge does what they did
    traced = _middleware_classes(monkeypatch, traced=True)
    assert len(traced) == 5 and traced[-1] is Edge  # with trace ids to carry, BentoML's layers stay


def test_the_edge_records_as_bentoml_configures_it_and_nothing_when_traced(monkeypatch):
    monkeypatch.setattr(bentoml_patches, "tracing_configured", lambda: False)
    observe = bentoml_patches.observe()
    assert observe is not None and observe.metrics is not None and observe.access_log is not None
    monkeypatch.setattr(bentoml_patches, "tracing_configured", lambda: True)
    assert bentoml_patches.observe() is None


def test_a_changed_middlewares_method_is_not_patched_blindly():
    with pytest.raises(BentoMLChanged, match="middlewares"):
        bentoml_patches.patch_middlewares(original=_ok)
