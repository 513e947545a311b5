"""Client errors carry their HTTP status and a JSON body: {"error": summary, "detail": [items]}.

Each detail item names the field (`loc`), what was expected (`msg`) and what came (`received`). Every
layer raises these (a task validating a request, the registry naming a model it does not serve, the
data plane); the protocol layer answers them, in its own terms. Unexpected failures are never
described to the client: they are logged with the request id.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

MAX_PROBLEMS = 100  # listed in one answer (its message counts them all)


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


def received_value(value: Any) -> Any:
    """What came, safe to put in a JSON answer: long values cut, huge or non-finite numbers as text."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 200 else text[:200] + "..."
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "..."
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else str(value)  # JSON consumers may not hold it as a number
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN and Infinity are not JSON
    return str(value)[:200]


def parse_json(body: bytes, model: type[BaseModel]) -> BaseModel:
    """A JSON document validated by `model`: one 400 naming every problem otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise invalid(e, body) from None


def invalid(error: ValidationError, body: bytes) -> InvalidInput:
    detail = []
    for item in _first_errors(error):
        loc = [received_value(p) for p in item["loc"]] or ["body"]  # a client's own key, cut if long
        if item["type"] == "json_invalid":
            received = received_value(body[:80].decode("utf-8", "replace"))
        else:
            received = None if item["type"] == "missing" else received_value(item.get("input"))
        detail.append(field_error(loc, item["msg"], received, item["type"]))
    return invalid_request(detail, error.error_count())


def _first_errors(error: ValidationError) -> list[dict[str, Any]]:
    """The first MAX_PROBLEMS of the errors. Beyond that, pydantic's own JSON of them, cut and read
    back in part: `errors()` builds a dict for each, seconds for the million unknown keys 14 MB can
    carry (3.6 s, against 0.3 for the JSON)."""
    if error.error_count() <= MAX_PROBLEMS:
        return error.errors(include_url=False, include_context=False)
    text = error.json(include_url=False, include_context=False)
    return from_json(text[: 1 << 20], allow_partial=True)[:MAX_PROBLEMS]


def invalid_request(detail: list[dict[str, Any]], count: int | None = None) -> InvalidInput:
    """One 400 for all the problems: `count` of them (default: all listed), at most MAX_PROBLEMS listed."""
    count, detail = count or len(detail), detail[:MAX_PROBLEMS]
    fields = [".".join(str(p) for p in d["loc"]) for d in detail]
    shown = ", ".join(dict.fromkeys(fields[:10])) + (", ..." if count > 10 else "")
    listed = f" (the first {len(detail)} listed)" if count > len(detail) else ""
    return InvalidInput(f"invalid request: {count} problem(s) with {shown}{listed}", detail)
