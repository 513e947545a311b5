"""Log lines as plain text (BentoML's format, the default) or as one JSON object per line for log
collectors (NNSERVE_LOG_FORMAT=json): time, level, logger, message, the request id where a request
is being served, and the traceback, if any, inside the object rather than on lines of its own."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from bentoml._internal.context import trace_context

# BentoML's handlers hang on these loggers (bentoml/_internal/log.py); ours propagate to the root.
BENTOML_LOGGERS = ("", "bentoml", "bentoml.access", "uvicorn.error", "uvicorn.access", "circus")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None) or trace_context.request_id
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return json_line(record.created, record.levelname, record.name, record.getMessage(), request_id, exception)


def json_line(
    created: float, level: str, logger: str, message: str, request_id: Any, exception: str | None = None
) -> str:
    entry = {
        "time": dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": logger,
        "message": message,
    }
    if request_id is not None:
        entry["request_id"] = format(request_id, "016x") if isinstance(request_id, int) else str(request_id)
    if exception:
        entry["exception"] = exception
    return json.dumps(entry, default=str)


def use_format(log_format: str) -> None:
    """Puts the JSON formatter on every handler BentoML configured; plain text leaves them as they are."""
    if log_format != "json":
        return
    formatter = JsonFormatter()
    for name in BENTOML_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
