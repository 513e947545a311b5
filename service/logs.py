"""Log lines as plain text (BentoML's format, the default) or as one JSON object per line for log
collectors (NNSERVE_LOG_FORMAT=json): time, level, logger, message, the request id where a request
is being served, and the traceback, if any, inside the object rather than on lines of its own."""

from __future__ import annotations

import datetime as dt
import json
import logging

from bentoml._internal.context import trace_context

# BentoML's handlers hang on these loggers (bentoml/_internal/log.py); ours propagate to the root.
BENTOML_LOGGERS = ("", "bentoml", "bentoml.access", "uvicorn.error", "uvicorn.access", "circus")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or trace_context.request_id
        if request_id is not None:
            entry["request_id"] = format(request_id, "016x") if isinstance(request_id, int) else str(request_id)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def use_format(log_format: str) -> None:
    """Puts the JSON formatter on every handler BentoML configured; plain text leaves them as they are."""
    if log_format != "json":
        return
    formatter = JsonFormatter()
    for name in BENTOML_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
