"""BentoML's access log line, written by the edge for a fraction of the middleware's cost.

BentoML's AccessLogMiddleware sends every line through `logging` (a record, a filter, a formatter, a
locked write and flush): on one-row requests that was a fifth of a worker's throughput (ad-click
1-row, alternating rounds: 6,568 req/s with it, 7,946 with only its `logger.info` call skipped, 8,354
without the middleware; docs/performance.md). The edge writes the same line, with the same fields and
skip paths, in the same plain or JSON format (service/logs.py); the line is built with one
f-string and a worker's lines are written together, at most FLUSH_S after their request was answered,
and at exit.

With a tracing exporter configured BentoML's middleware stays: its lines then carry trace ids.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from bentoml._internal.log import DATE_FORMAT, _component_name
from starlette.types import Scope

from service.logs import JsonFormatter, json_line
from service.protocol.context import Context

FLUSH_S = 0.1
LOGGER = "bentoml.access"


class AccessLog:
    """BentoML's line for one request, with the fields its logging settings ask for; skip paths skipped."""

    def __init__(self, request_fields: tuple[bool, bool], response_fields: tuple[bool, bool],
                 skip_paths: Sequence[str]) -> None:  # fmt: skip
        self.request_fields = request_fields  # (content type, content length)
        self.any_request_field = any(request_fields)
        self.response_fields = response_fields
        self.skip_paths = tuple(skip_paths)
        self.lines = Lines()

    def write(self, ctx: Context, scope: Scope) -> None:
        if ctx.path.startswith(self.skip_paths) or not ctx.status:  # (0: no answer was sent)
            return
        latency_ms = (time.perf_counter() - ctx.start) * 1000
        self.lines.add(self.line(ctx, scope, latency_ms), ctx.request_id)

    def line(self, ctx: Context, scope: Scope, latency_ms: float) -> str:
        client = scope.get("client")
        request = f"scheme={scope['scheme']},method={ctx.method},path={_printable(ctx.path)}"
        if self.any_request_field:
            request += _fields(ctx.headers, *self.request_fields)
        address = f"{client[0]}:{client[1]}" if client else "_"
        answer = f"status={ctx.status}" + (f",grpc_status={ctx.grpc_status}" if ctx.grpc_status else "")
        answer += _fields(ctx.answer_headers, *self.response_fields)
        return f"{address} ({request}) ({answer}) {latency_ms:.3f}ms"


def _fields(headers: list[tuple[bytes, bytes]], content_type: bool, content_length: bool) -> str:
    found = dict(headers)  # the last of each, as the dict of them BentoML reads keeps
    text = f",type={_text(found.get(b'content-type', b''))}" if content_type else ""
    return text + (f",length={_text(found.get(b'content-length', b''))}" if content_length else "")


# A line's texts repeat from one request to the next (a route's path, its content types and lengths): each is
# made printable once. The caches are bounded: a client inventing paths costs what it did before, no memory.
@lru_cache(maxsize=1024)
def _text(value: bytes) -> str:
    return _printable(value.decode("utf-8", "replace"))


@lru_cache(maxsize=1024)
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
        if isinstance(handler.formatter, JsonFormatter):
            text = "".join(json_line(created, "INFO", LOGGER, message, request_id) + "\n"
                           for created, message, request_id in pending)  # fmt: skip
        else:  # BentoML's TRACED_LOG_FORMAT, without a trace
            component = _component_name()
            text = "".join(
                f"{_stamp(int(created))} [INFO] [{component}] {message}\n" for created, message, _ in pending
            )
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


@lru_cache(maxsize=4)
def _stamp(second: int) -> str:
    """The time in BentoML's DATE_FORMAT, which stops at the second: the lines of a second share it."""
    return time.strftime(DATE_FORMAT, time.localtime(second))
