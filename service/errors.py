"""Client errors carry their HTTP status and a JSON body: {"error": summary, "detail": [items]}.

Each detail item names the field (`loc`), what was expected (`msg`) and what came (`received`).
Unexpected failures are never described to the client: they are logged with the request id.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A setting that cannot be served with; start-up stops with this one line."""


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


class Forbidden(ServiceError):
    status = 403


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
