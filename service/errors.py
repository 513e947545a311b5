"""Client errors carry their HTTP status and a JSON body: {"error": summary, "detail": [items]}.

Each detail item names the field (`loc`), what was expected (`msg`) and what came (`received`).
Unexpected failures are never described to the client: they are logged with the request id.
"""

from __future__ import annotations

import logging
from typing import Any


class ServiceError(Exception):
    status = 500

    def __init__(self, message: str, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or []

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "detail": self.detail}


class InvalidInput(ServiceError):
    status = 400


class NotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class UnsupportedMediaType(ServiceError):
    status = 415


class ModelUnavailable(ServiceError):
    status = 503


def field_error(loc: list[str | int], msg: str, received: Any, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "received": received, "type": kind}


class QuietClientErrors(logging.Filter):
    """BentoML logs every request that fails pydantic validation as an ERROR with a full traceback.
    Those are client mistakes, already answered 400: keep one INFO line, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            from pydantic import ValidationError

            if isinstance(record.exc_info[1], ValidationError):
                record.msg = (
                    f"{record.getMessage()}: client error (400): {record.exc_info[1].error_count()} invalid field(s)"
                )
                record.args = ()
                record.exc_info = None
                record.exc_text = None
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True
