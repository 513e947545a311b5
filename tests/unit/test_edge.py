"""The HTTP edge, in front of a stand-in app: API keys, /readyz, the docs pages, the drain's refusal,
admission control, JSON for plain-text errors, the request id; and no torch on the serving path."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from types import SimpleNamespace

from bentoml._internal.context import trace_context

from service.protocol.auth import ApiKeyAuth
from service.protocol.edge import Edge
from service.protocol.router import Route, Router
from service.protocol.transport import respond
from service.settings import Settings
from service.shutdown import drain
from tests.conftest import REPO


async def _ok(scope, receive, send):  # BentoML's own app below the edge (/livez, /metrics)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _stock_page(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": b'<script src="https://www.googletagmanager.com/gtm.js">'})


async def _plain_405(scope, receive, send):
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"allow", b"GET")]
    await send({"type": "http.response.start", "status": 405, "headers": headers})
    await send({"type": "http.response.body", "body": b"Method Not Allowed"})


async def _answer(ctx, params, receive, send):  # a route's handler
    await respond(ctx, send, 200, b"{}")


def _worker(handler=_answer) -> SimpleNamespace:
    """A stand-in for service.worker.Worker: a router of a few routes, all answered by `handler`."""
    router = Router([Route("/v1/{model}/{action}", ("POST",), handler, prediction=True),
                     Route("/v2/models/{name}/infer", ("POST",), handler, prediction=True),
                     Route("/v1/models", ("GET",), handler)])  # fmt: skip
    return SimpleNamespace(
        router=router,
        health=lambda: {"ready": not drain.draining},
        documents=lambda: (b"{}", b"{}"),
        registry=SimpleNamespace(table=SimpleNamespace(models={}, refused={})),
        plane=SimpleNamespace(count=lambda *_: None),
    )


def _edge(app=_ok, keys=(), worker=None, handler=_answer, **settings) -> Edge:
    auth = ApiKeyAuth(list(keys), frozenset({"/livez", "/readyz", "/metrics"}))
    served = worker if worker is not None else _worker(handler)
    return Edge(app, Settings(**settings), auth, lambda: served)


async def _call(edge, path, method="GET", headers=(), body=b"") -> tuple[int, dict, bytes]:
    sent = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    await edge(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_api_keys_are_checked_first_and_probes_stay_open():
    async def scenario():
        edge = _edge(keys=[b"k"])
        assert (await _call(edge, "/v1/housing-price/predict", "POST"))[0] == 401
        assert (await _call(edge, "/v1/housing-price/predict", "POST", [(b"x-api-key", b"k")]))[0] == 200
        status, headers, body = await _call(edge, "/docs.json", headers=[(b"x-api-key", b"k"), (b"x-api-key", b"j")])
        assert status == 400 and headers[b"www-authenticate"].startswith(b"Bearer")
        assert "ambiguous" in json.loads(body)["error"]
        assert (await _call(edge, "/readyz"))[0] == 200 and (await _call(edge, "/livez"))[0] == 200

    asyncio.run(scenario())


def test_readyz_answers_the_health_and_503_while_starting():
    async def scenario():
        status, _, body = await _call(_edge(), "/readyz")
        assert status == 200 and json.loads(body) == {"ready": True}
        nothing = Edge(_ok, Settings(), ApiKeyAuth([], frozenset()), lambda: None)  # the worker still starting
        status, _, body = await _call(nothing, "/readyz")
        assert status == 503 and json.loads(body)["error"] == "starting"
        assert (await _call(nothing, "/docs.json"))[0] == 503
        assert (await _call(nothing, "/v1/housing-price/predict", "POST"))[0] == 503

    asyncio.run(scenario())


def test_the_docs_page_loads_nothing_from_outside_and_can_be_turned_off():
    async def scenario():
        for path in ("/docs", "/"):
            status, headers, page = await _call(_edge(), path)
            assert status == 200 and headers[b"content-type"].startswith(b"text/html")
            assert b"/docs.json" in page and b"swagger-ui-bundle.js" in page
            assert b"http://" not in page and b"https://" not in page and b"googletagmanager" not in page
        edge = _edge(app=_stock_page, docs_ui=False)  # BentoML's own index page stands behind the edge
        for path in ("/docs", "/", "/static_content/swagger-ui-bundle.js", "/assets/index.js"):
            status, _, page = await _call(edge, path)
            assert status == 404 and b"googletagmanager" not in page and "NNSERVE_DOCS_UI" in json.loads(page)["error"]
        assert (await _call(edge, "/docs.json"))[0] == 200  # the document stays

    asyncio.run(scenario())


def test_while_draining_predictions_get_503_after_their_upload_and_the_rest_is_served():
    async def scenario():
        edge = _edge()
        try:
            drain.draining = True
            status, headers, body = await _call(edge, "/v1/housing-price/predict", "POST", body=b"x" * 100_000)
            assert status == 503 and headers[b"connection"] == b"close" and headers[b"retry-after"] == b"1"
            assert "shutting down" in json.loads(body)["error"]
            assert (await _call(edge, "/v2/models/ad-click/infer", "POST"))[0] == 503
            assert (await _call(edge, "/readyz"))[0] == 503
            for path in ("/livez", "/metrics", "/v1/models"):
                assert (await _call(edge, path))[0] == 200, path
        finally:
            drain.draining = False
        assert drain.in_flight == 0

    asyncio.run(scenario())


def test_beyond_the_slots_and_the_queue_is_503_at_once_and_it_recovers():
    async def scenario():
        release, entered = asyncio.Event(), asyncio.Event()

        async def slow(ctx, params, receive, send):
            entered.set()
            await release.wait()
            await _answer(ctx, params, receive, send)

        edge = _edge(handler=slow, max_in_flight=1, max_queue=1)
        first = asyncio.create_task(_call(edge, "/v1/housing-price/predict", "POST"))
        await entered.wait()  # one in flight
        second = asyncio.create_task(_call(edge, "/v1/housing-price/predict", "POST"))
        while edge.admission.waiting < 1:  # one queued
            await asyncio.sleep(0)
        third = await _call(edge, "/v1/housing-price/predict", "POST")  # no slot, no room: refused at once
        probe = asyncio.create_task(_call(edge, "/livez"))  # probes are never limited
        release.set()
        statuses = [(await first)[0], (await second)[0], (await probe)[0]]
        statuses.append((await _call(edge, "/v1/ad-click/predict", "POST"))[0])
        return third, statuses, edge.admission.in_flight, edge.admission.waiting

    (status, headers, body), statuses, in_flight, waiting = asyncio.run(scenario())
    assert status == 503 and headers[b"retry-after"] == b"1" and "overloaded" in json.loads(body)["error"]
    assert statuses == [200, 200, 200, 200] and in_flight == 0 and waiting == 0


def test_a_cancelled_request_frees_its_slot():
    async def scenario():
        async def hang(ctx, params, receive, send):
            await asyncio.Event().wait()

        edge = _edge(handler=hang, max_in_flight=1, max_queue=0, request_timeout_s=1)
        task = asyncio.create_task(_call(edge, "/v1/ad-click/predict", "POST"))
        while edge.admission.in_flight < 1:
            await asyncio.sleep(0)
        task.cancel()  # the client gone: the server cancels the request's task
        await asyncio.gather(task, return_exceptions=True)
        timed_out = await _call(edge, "/v1/ad-click/predict", "POST")  # past NNSERVE_REQUEST_TIMEOUT_S: 504
        return edge.admission.in_flight, drain.in_flight, not edge.admission.take(), timed_out

    *freed, (status, _, body) = asyncio.run(scenario())
    assert freed == [0, 0, False] and status == 504 and "NNSERVE_REQUEST_TIMEOUT_S" in json.loads(body)["error"]


def test_plain_text_errors_become_json_with_their_headers_and_answers_carry_the_request_id():
    async def scenario():
        below = await _call(_edge(_plain_405), "/livez", "POST")
        routed = await _call(_edge(), "/v1/housing-price/predict", "POST")
        return below, routed, trace_context.request_id

    (status, headers, body), (_, routed, _), request_id = asyncio.run(scenario())
    assert status == 405 and headers[b"allow"] == b"GET" and headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {"error": "Method Not Allowed", "detail": []}
    assert routed[b"x-bentoml-request-id"] == format(request_id, "016x").encode()  # the id its log lines carry
    assert headers[b"x-bentoml-request-id"] != routed[b"x-bentoml-request-id"]  # one id per request


def test_serving_path_never_imports_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import service.app, service.worker, service.runtime, service.tasks.image.photos\n"
        "import service.tasks.tabular.encoder\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_a_websocket_is_refused_before_anything_else():
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope)

    async def send(message):
        sent.append(message)

    async def scenario():
        edge = _edge(app=app, keys=[b"k"])
        await edge({"type": "websocket", "path": "/v1/housing-price/predict", "headers": []}, None, send)
        await edge({"type": "lifespan"}, None, send)

    asyncio.run(scenario())
    assert sent == [{"type": "websocket.close", "code": 1008}] and [s["type"] for s in reached] == ["lifespan"]
