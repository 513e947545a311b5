"""The OpenAPI document served at /docs.json: BentoML's, made valid and complete.

BentoML 1.4 writes `type: file` for uploads and `anyOf: [..., {type: null}]` for optional fields,
neither of which OpenAPI 3.0 allows; it documents error bodies that are not ours, and it leaves
out mounted Starlette routes. This module fixes the document once, at start-up.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong, in one line.", "example": "invalid request"},
        "detail": {
            "type": "array",
            "description": "One item per problem.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                        "description": "Where the problem is: field names and list indices.",
                        "example": ["sqft_living"],
                    },
                    "msg": {"type": "string", "description": "What was expected.", "example": "Input should be >= 100"},
                    "received": {"description": "What came (null when the field was missing).", "example": -5},
                    "type": {
                        "type": "string",
                        "description": "A machine-readable kind.",
                        "example": "greater_than_equal",
                    },
                },
            },
        },
    },
}
_ERRORS = {
    "400": "Invalid input: the body names each field, what was expected and what came.",
    "404": "Model not loaded.",
    "413": "Body or photo too large.",
    "415": "Wrong content type, or not a supported image.",
    "500": "Unexpected server error (no internals; see the server log).",
    "503": "Model failed to load, or the service is not ready.",
}
_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_METADATA_PATHS = {
    "/v1/models": {"summary": "Every loaded model's card, provider and signature, with readiness."},
    "/v1/models/{name}": {"summary": "One model's card, the provider that bound, and its signature."},
    "/v1/health": {"summary": "Readiness with reasons: loaded models and their providers, failed folders."},
}


def _fix_schema(node: Any) -> Any:
    """Rewrites, recursively, what OpenAPI 3.0 does not accept."""
    if isinstance(node, list):
        return [_fix_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _fix_schema(v) for k, v in node.items()}
    if node.get("type") == "file":
        node["type"] = "string"
        node["format"] = "binary"
    if node.get("type") == "array" and isinstance(node.get("items"), dict) and node["items"].get("type") == "file":
        node["items"] = {"type": "string", "format": "binary"}
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del node[key]
            node["nullable"] = True
            if len(rest) == 1:
                node.update(rest[0])
            else:
                node[key] = rest
    return node


def fix_document(spec: dict[str, Any]) -> dict[str, Any]:
    doc = _fix_schema(json.loads(json.dumps(spec)))  # the JSON round trip turns BentoML's int status keys to str
    doc["info"]["description"] = "Typed endpoints for the housing-price, ad-click and image-tagging models."
    doc["info"]["contact"] = {"name": "nnserve"}
    doc.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in doc["paths"].items():
        post = item.get("post")
        if post and path.startswith("/v1/"):
            post["responses"] = {
                "200": post["responses"]["200"],
                **{code: {"description": text, "content": error_ref} for code, text in _ERRORS.items()},
            }
    for path, meta in _METADATA_PATHS.items():
        get: dict[str, Any] = {
            "tags": ["Infrastructure"],
            "summary": meta["summary"],
            "responses": {"200": {"description": "OK", "content": _JSON_OBJECT}},
        }
        if "{name}" in path:
            get["parameters"] = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
            get["responses"]["404"] = {"description": _ERRORS["404"], "content": error_ref}
        if path == "/v1/health":
            get["responses"]["503"] = {"description": "Not ready.", "content": _JSON_OBJECT}
        doc["paths"][path] = {"get": get}
    return doc


class ServeOpenAPI:
    """Answers GET /docs.json with the fixed document; everything else passes through."""

    def __init__(self, app: ASGIApp, document: Any) -> None:
        self.app = app
        self.document = document  # a callable returning the dict: built on first request, then kept
        self.body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/docs.json" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        status = 200
        if self.body is None:
            try:
                self.body = json.dumps(self.document()).encode()
            except Exception:  # a middleware that raises leaves the request hanging: answer instead
                log.exception("cannot build the OpenAPI document")
                status = 500
        body = self.body or b'{"error": "the OpenAPI document could not be built; see the server log", "detail": []}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
