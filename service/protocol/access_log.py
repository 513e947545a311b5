"""BentoML's access log line, for a fraction of its cost.

BentoML's AccessLogMiddleware sends every line through `logging` (a record, a filter, a formatter, a
locked write and flush): on one-row requests that was a fifth of a worker's throughput (ad-click
1-row, alternating rounds: 6,568 req/s with it, 7,946 with only its `logger.info` call skipped, 8,354
without the middleware; docs/performance.md). This middleware takes its place among the layers
(service/glue/patches.py) and writes the same line, with the same fields and skip paths, in the
same plain or JSON format (service/glue/logs.py); the line is built with one f-string and a worker's
lines are written together, at most FLUSH_S after their request was answered, and at exit.

With a tracing exporter configured BentoML's middleware stays: its lines then carry trace ids.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
from collections.abc import Sequence
from typing import Any

from bentoml._internal.context import trace_context
from bentoml._internal.log import DATE_FORMAT, _component_name
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.glue.logs import JsonFormatter, json_line

FLUSH_S = 0.1
LOGGER = "bentoml.access"


class AccessLog:
    def __init__(self, app: ASGIApp, has_request_content_length: bool = False, has_request_content_type: bool = False,
                 has_response_content_length: bool = False, has_response_content_type: bool = False,
                 skip_paths: Sequence[str] = ()) -> None:  # fmt: skip
        self.app = app
        self.request_fields = (has_request_content_type, has_request_content_length)
        self.response_fields = (has_response_content_type, has_response_content_length)
        self.skip_paths = tuple(skip_paths)
        self.lines = Lines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip_paths):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = trace_context.request_id
        response: dict[bytes, bytes] = {}
        status = 0

        async def logged_send(message: Message) -> None:
            nonlocal status, response
            if message["type"] == "http.response.start":
                status, response = message["status"], dict(message.get("headers", ()))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                latency_ms = (time.perf_counter() - start) * 1000
                await send(message)
                self.lines.add(self.line(scope, status, response, latency_ms), request_id)
                return
            await send(message)

        await self.app(scope, receive, logged_send)

    def line(self, scope: Scope, status: int, response: dict[bytes, bytes], latency_ms: float) -> str:
        client = scope.get("client")
        request = f"scheme={scope['scheme']},method={scope['method']},path={_printable(scope['path'])}"
        if any(self.request_fields):
            headers = dict(scope["headers"])
            request += _fields(headers, *self.request_fields)
        address = f"{client[0]}:{client[1]}" if client else "_"
        answer = f"status={status}" + _fields(response, *self.response_fields)
        return f"{address} ({request}) ({answer}) {latency_ms:.3f}ms"


def _fields(headers: dict[bytes, bytes], content_type: bool, content_length: bool) -> str:
    text = f",type={_text(headers.get(b'content-type', b''))}" if content_type else ""
    return text + (f",length={_text(headers.get(b'content-length', b''))}" if content_length else "")


def _text(value: bytes) -> str:
    return _printable(value.decode("utf-8", "replace"))


def _printable(text: str) -> str:
    """A client's text as it can go in a log line: a newline in a path or header (%0A) would otherwise
    start a forged line; BentoML's middleware writes it as it comes (and fails on a header that is not
    UTF-8)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class Lines:
    """A worker's pending access log lines, written in one go to the stream BentoML's handler writes to."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, str, Any]] = []
        self.scheduled = False
        atexit.register(self.flush)

    def add(self, message: str, request_id: Any) -> None:
        self.pending.append((time.time(), message, request_id))
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, []
        if not pending:
            return
        handler = _handler()
        if handler is None:  # logging configured otherwise than by BentoML: the slow, general way
            for _, message, _ in pending:
                logging.getLogger(LOGGER).info(message)
            return
        as_json = isinstance(handler.formatter, JsonFormatter)
        text = "".join(_formatted(created, message, request_id, as_json) for created, message, request_id in pending)
        with handler.lock:  # type: ignore[union-attr] - other lines of the worker go through the same stream
            handler.stream.write(text)
            handler.flush()


def _handler() -> logging.StreamHandler | None:
    logger = logging.getLogger(LOGGER)
    if not logger.isEnabledFor(logging.INFO):
        return None
    while logger is not None:  # the handler a record of the access logger would reach
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                return handler
        logger = logger.parent if logger.propagate else None  # type: ignore[assignment]
    return None


def _formatted(created: float, message: str, request_id: Any, as_json: bool) -> str:
    if as_json:
        return json_line(created, "INFO", LOGGER, message, request_id) + "\n"
    stamp = time.strftime(DATE_FORMAT, time.localtime(created))  # BentoML's TRACED_LOG_FORMAT, no trace
    return f"{stamp} [INFO] [{_component_name()}] {message}\n"
