"""What the edge records of every request it takes: the request series, by matched route, and the
access log line (service/protocol/http_metrics.py, access_log.py)."""

from __future__ import annotations

import time

from starlette.types import Scope

from service.protocol.access_log import AccessLog
from service.protocol.context import Context
from service.protocol.http_metrics import HttpMetrics


class Observe:
    def __init__(self, metrics: HttpMetrics | None, access_log: AccessLog | None) -> None:
        self.metrics, self.access_log = metrics, access_log

    def begin(self, ctx: Context) -> None:
        series = self.metrics.of(ctx.route) if self.metrics is not None else None
        if series is not None:
            series.begin()
        ctx.series = series

    def end(self, ctx: Context, scope: Scope) -> None:
        if ctx.series is not None:
            ctx.series.end(ctx.status, time.perf_counter() - ctx.start)
        if self.access_log is not None:
            self.access_log.write(ctx, scope)
