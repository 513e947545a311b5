"""The edge's access log writes BentoML's line: the same request through BentoML's middleware and through
ours gives the same text (but for the latency), in the plain and the JSON format; skipped paths write
nothing."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time

import pytest
from bentoml._internal.context import trace_context
from bentoml._internal.log import DATE_FORMAT, TRACED_LOG_FORMAT, TraceRecordFilter
from bentoml._internal.server.http.access import AccessLogMiddleware

from service.logs import JsonFormatter
from service.protocol.access_log import AccessLog
from service.protocol.context import Context

FIELDS = {"has_request_content_length": True, "has_request_content_type": True,
          "has_response_content_length": True, "has_response_content_type": True, "skip_paths": ["/livez"]}  # fmt: skip
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"58")]
SCOPE = {"type": "http", "scheme": "http", "method": "POST", "path": "/v1/housing-price/predict",
         "client": ("127.0.0.1", 51234), "headers": HEADERS}  # fmt: skip


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 422,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"17")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    await send({"type": "http.response.body", "body": b"}"})


@pytest.fixture
def stream():
    """BentoML's server handler (bentoml/_internal/log.py) on a string."""
    logger = logging.getLogger("bentoml")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter(TRACED_LOG_FORMAT, DATE_FORMAT))
    handler.addFilter(TraceRecordFilter())
    saved = logger.handlers, logger.level, logger.propagate
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    yield handler
    logger.handlers, logger.level, logger.propagate = saved


def _ours(scope: dict) -> None:
    """What the edge does once it has answered the request with app's answer."""
    ctx = Context(1, scope["method"], scope["path"], scope["headers"], time.perf_counter())
    ctx.status, ctx.answer_headers = 422, [(b"content-type", b"application/json"), (b"content-length", b"17")]
    AccessLog((True, True), (True, True), ["/livez"]).write(ctx, scope)


def _through(middleware_class, path: str = SCOPE["path"]) -> None:
    async def run():
        if middleware_class is AccessLog:
            _ours({**SCOPE, "path": path})
        else:
            trace_context.request_id = 1  # the request's id, as the edge gives ours
            middleware = middleware_class(app, **FIELDS)
            await middleware({**SCOPE, "path": path}, None, lambda message: asyncio.sleep(0))
        await asyncio.sleep(0.3)  # ours writes its lines in batches

    asyncio.run(run())


def _lines(handler) -> list[str]:
    text = handler.stream.getvalue()
    handler.stream.seek(0)
    handler.stream.truncate()
    # the time of day and the latency differ from one run to the next; their form does not
    text = re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ", "TIME ", text, flags=re.M)
    return [re.sub(r"\d+\.\d{3}ms", "Xms", line) for line in text.splitlines()]


def test_the_plain_line_is_bentomls_line(stream):
    _through(AccessLogMiddleware)
    theirs = _lines(stream)
    _through(AccessLog)
    ours = _lines(stream)
    assert len(theirs) == 1 and ours == theirs
    assert ours[0].startswith("TIME [INFO] [")
    assert "(status=422,type=application/json,length=17) Xms" in ours[0]


def test_the_json_line_is_bentomls_line(stream):
    stream.setFormatter(JsonFormatter())
    _through(AccessLogMiddleware)
    _through(AccessLog)
    theirs, ours = (json.loads(line) for line in _lines(stream))
    assert ours.keys() == theirs.keys() == {"time", "level", "logger", "message", "request_id"}
    same = ("level", "logger", "message", "request_id")
    assert [ours[k] for k in same] == [theirs[k] for k in same]


def test_skipped_paths_write_nothing(stream):
    _through(AccessLog, path="/livez")
    assert _lines(stream) == []


def test_a_client_cannot_forge_a_line_or_break_one(stream):
    async def run():
        forged = "/v1/x\n2026-01-01T00:00:00+0000 [INFO] forged"
        scope = {**SCOPE, "path": forged, "headers": [(b"content-type", b"\xff\n")]}
        _ours(scope)
        await asyncio.sleep(0.3)

    asyncio.run(run())
    (line,) = _lines(stream)
    assert r"path=/v1/x\n2026-01-01T00:00:00+0000 [INFO] forged," in line and r"type=\ufffd\n," in line
