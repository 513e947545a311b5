"""The API's two descriptions, built once per worker from the endpoints of the loaded models: the
OpenAPI 3.0 document at /docs.json (typed routes with the models' own schemas, descriptions and
examples, and every error answer), and BentoML's /schema.json, from which
`bentoml.SyncHTTPClient(url)` learns its methods.

The fixed part of the API (metadata, probes, the Open Inference Protocol, the error shapes) is a
static document, static/openapi.json; the loaded models' typed routes are added to it here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from service.models.versions import Policy
from service.tasks.base import Action, Adapter, Form

BASE = (Path(__file__).parent / "static" / "openapi.json").read_text()
ERRORS = {
    "400": "Invalid input: the body names each field, what was expected and what came.",
    "401": "Missing or invalid API key (when keys are configured).",
    "404": "Model not loaded.",
    "413": "Body or photo too large.",
    "415": "Wrong content type, or not a supported image.",
    "500": "Unexpected server error (no internals; see the server log).",
    "503": "Model failed to load, the service is not ready or shutting down, or overloaded (Retry-After).",
    "504": "Not answered within the request timeout.",
}


@dataclass(frozen=True)
class Endpoint:
    """A typed POST route: an action of the models answering at /v1/<route name>/."""

    route: str
    action: Action

    @property
    def name(self) -> str:
        return self.action.client_name

    @property
    def summary(self) -> str:
        return self.action.summary

    @property
    def response(self) -> type[BaseModel]:
        return self.action.response

    @property
    def request(self) -> type[BaseModel] | None:
        return self.action.request

    @property
    def form(self) -> Form | None:
        return self.action.form


def endpoints(adapters: list[Adapter]) -> list[Endpoint]:
    """The typed routes of the models served (their default versions): each model's own, then each
    group's (the photo routes) once."""
    own = [a for a in adapters if a.group is None]
    groups = {a.group: a for a in adapters if a.group is not None}
    return [Endpoint(f"/v1/{a.route_name}/{action.name}", action)
            for a in [*own, *groups.values()] for action in a.actions()]  # fmt: skip


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _openapi30(node: Any) -> Any:
    """pydantic writes JSON Schema (OpenAPI 3.1); rewrite, recursively, what OpenAPI 3.0 does not take."""
    if isinstance(node, list):
        return [_openapi30(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _openapi30(v) for k, v in node.items() if k != "title" or isinstance(v, dict)}
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del node[key]
            node["nullable"] = True
            if len(rest) > 1:
                node[key] = rest
            else:  # a $ref takes no siblings in 3.0: wrap it
                node.update(rest[0] if "$ref" not in rest[0] else {"allOf": rest})
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "examples" in node and "example" not in node:
        node["example"] = node.pop("examples")[0]
    return node


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out |= schema.pop("$defs", {})
        out[model.__name__] = schema
    return {name: _openapi30(schema) for name, schema in out.items()}


def _form_schema(form: Form, file_type: dict[str, Any]) -> dict[str, Any]:
    """The multipart form: its file field (`file_type` each), and its text fields from their model."""
    schema = _openapi30(form.fields.model_json_schema())
    files = {"type": "array", "items": file_type, "minItems": 1, "maxItems": form.max_files} if form.many else file_type
    schema["properties"] = {form.file: {**files, "description": form.description}, **schema.get("properties", {})}
    schema["required"] = [form.file, *schema.get("required", [])]
    return schema


def document(endpoints: list[Endpoint], model_names: list[str], version: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of everything this worker serves."""
    doc = json.loads(BASE)
    doc["info"]["version"] = version
    doc["components"]["parameters"]["ModelName"]["schema"]["enum"] = model_names
    models = [Policy, *(m for e in endpoints for m in (e.response, e.request) if m is not None)]
    doc["components"]["schemas"] |= _schemas(list(dict.fromkeys(models)))
    errors = {code: {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
              for code, text in ERRORS.items()}  # fmt: skip
    for e in endpoints:
        if e.request is not None:
            content = {"application/json": {"schema": _ref(e.request.__name__)}}
        else:
            content = {"multipart/form-data": {"schema": _form_schema(e.form, {"type": "string", "format": "binary"})}}
        answer = {"description": "OK", "content": {"application/json": {"schema": _ref(e.response.__name__)}}}
        if e.action.picture:  # Accept: image/png
            answer["content"]["image/png"] = {"schema": {"type": "string", "format": "binary"}}
        operation = {
            "tags": [e.route.split("/")[2]],
            "summary": e.summary,
            "operationId": e.name,
            "requestBody": {"required": True, "content": content},
            "responses": {"200": answer, **errors},
        }
        doc["paths"][e.route] = {"post": operation}
        model, action = e.route.rsplit("/", 1)  # the same route, to one version of the model
        doc["paths"][f"{model}/versions/{{version}}/{action}"] = {"post": {
            **operation, "operationId": f"{e.name}_version", "summary": f"{e.summary} A version named in the path.",
            "parameters": [{"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}],
        }}  # fmt: skip
    return doc


def client_schema(endpoints: list[Endpoint]) -> dict[str, Any]:
    """BentoML's /schema.json: what `bentoml.SyncHTTPClient(url)` reads to learn each method's route,
    its arguments (a "file" type makes it send multipart) and its answer."""
    routes = []
    for e in endpoints:
        inputs = e.request.model_json_schema() if e.request is not None else _form_schema(e.form, {"type": "file"})
        output = {**e.response.model_json_schema(), "media_type": "application/json"}
        routes.append({"name": e.name, "route": e.route, "doc": e.summary, "batchable": False, "is_task": False,
                       "input": inputs, "output": output})  # fmt: skip
    return {"name": "nnserve", "type": "service", "routes": routes}


def to_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()
