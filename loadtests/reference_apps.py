"""The benchmark's reference points: a plain Starlette app and a FastAPI app doing exactly what nnserve
does for each benchmarked route (the same pydantic types built from the cards, the same encoders,
image decoding and onnxruntime sessions), without BentoML.

On equal terms with nnserve (BENCH_TUNED=1, how loadtests/bench.py runs them): nnserve's worker count,
uvloop and httptools, and nnserve's onnxruntime threading (the cores shared out among the workers):

    BENCH_TUNED=1 uvicorn loadtests.reference_apps:starlette_app --workers 2 --loop uvloop --http httptools

The floor (floor_app): a bare ASGI app that reads the body and runs the graph once, nothing else.

The history row (bench.py --history): one process on asyncio and h11, with onnxruntime's own thread
default, as every bench before issue 17 ran them.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.models.registry import Registry
from service.runtime import Execution
from service.settings import Settings
from service.tasks.image.photos import decode_photo, to_input, top_k
from service.tasks.image.types import Tag, Tags
from service.tasks.tabular.adapter import Tabular


class _OneProcess(Settings):
    """The history reference is one process: its sessions keep onnxruntime's own thread default
    (threads 0), not nnserve's one thread per worker."""

    def execution(self) -> Execution:
        return replace(super().execution(), threads=0)


_models = Path(os.environ.get("NNSERVE_MODELS_DIR", Settings().models_dir))
# Tuned, the sessions thread as nnserve's do: Settings() shares the cores out among NNSERVE_WORKERS.
_settings = Settings(models_dir=_models) if os.environ.get("BENCH_TUNED") == "1" else _OneProcess(models_dir=_models)
registry = Registry(_settings)
TAGGER = os.environ.get("BENCH_TAGGER", "image-tagging")
TABULAR = {name: a for name, a in registry.adapters.items() if isinstance(a, Tabular)}


def predict(adapter: Tabular, rows: list[dict[str, Any]], batch: bool) -> BaseModel:
    """What nnserve answers, built as a framework user would: encode, run, a pydantic answer."""
    numeric, codes, warnings = adapter.encoder.encode(rows)
    values = adapter.model.run(numeric, codes)[:, 0]
    types, served = adapter.types, {"model": adapter.name, "version": adapter.model.card.version}
    if not batch:
        return types.prediction(**served, **{types.output: float(values[0])}, warnings=warnings[0])
    answers = zip(values, warnings, strict=True)
    rows_out = [types.prediction_row(**{types.output: float(v)}, warnings=w) for v, w in answers]
    return types.prediction_batch(**served, predictions=rows_out)


def tag(data: bytes, k: int) -> Tags:
    model = registry.get(TAGGER).model
    image = model.card.image
    assert image is not None
    scores = model.run(to_input(decode_photo(data, _settings.max_image_pixels, ["photo"]), image))[0]
    tags = [Tag(label=label, score=s) for label, s in top_k(scores, model.card.labels, k, image.output_is)]
    return Tags(tags=tags, model=model.name, version=model.card.version)


# --- plain Starlette -------------------------------------------------------------------------------
def _json_route(adapter: Tabular, batch: bool):
    request_model = adapter.types.batch if batch else adapter.types.row

    async def endpoint(request: Request) -> Response:
        try:
            valid = request_model.model_validate_json(await request.body())
        except ValidationError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        rows = [r.model_dump() for r in getattr(valid, adapter.types.batch_field)] if batch else [valid.model_dump()]
        return Response(predict(adapter, rows, batch).model_dump_json(), media_type="application/json")

    return endpoint


async def _tag_route(request: Request) -> Response:
    form = await request.form()
    photo = form["photo"]
    data = await photo.read()  # type: ignore[union-attr]
    return Response(tag(data, int(form.get("top_k", 5))).model_dump_json(), media_type="application/json")


starlette_app = Starlette(
    routes=[
        *[Route(f"/v1/{name}/predict", _json_route(a, False), methods=["POST"]) for name, a in TABULAR.items()],
        *[Route(f"/v1/{name}/predict-batch", _json_route(a, True), methods=["POST"]) for name, a in TABULAR.items()],
        Route("/v1/image-tagging/predict", _tag_route, methods=["POST"]),
    ]
)

# --- FastAPI ---------------------------------------------------------------------------------------
fastapi_app = FastAPI()


def _fastapi_route(adapter: Tabular, batch: bool) -> None:
    """An endpoint typed with the model's own request and response types, as a FastAPI user writes it."""
    types = adapter.types
    request_model = types.batch if batch else types.row
    response_model = types.prediction_batch if batch else types.prediction

    async def endpoint(body: Any) -> Any:
        rows = [r.model_dump() for r in getattr(body, types.batch_field)] if batch else [body.model_dump()]
        return predict(adapter, rows, batch)

    endpoint.__annotations__ = {"body": request_model, "return": response_model}
    route = f"/v1/{adapter.name}/predict" + ("-batch" if batch else "")
    fastapi_app.post(route, response_model=response_model)(endpoint)


for _adapter in TABULAR.values():
    _fastapi_route(_adapter, False)
    _fastapi_route(_adapter, True)


@fastapi_app.post("/v1/image-tagging/predict", response_model=Tags)
async def fastapi_tag(photo: UploadFile = File(...), top_k: int = Form(5)) -> Tags:  # noqa: B008
    return tag(await photo.read(), top_k)


# --- the floor -------------------------------------------------------------------------------------
FLOOR_ANSWER = b'{"floor": true}'
_floor_inputs: dict[tuple[str, int], list[Any]] = {}


def _floor_run(path: str, rows: int) -> None:
    """One onnxruntime run of the model the path names (/v1/<name>/... or /v2/models/<name>/...; a photo route
    runs the tagger), on zeros of the request's rows: the graph's work, without any of serving's own."""
    parts = path.split("/")
    name = parts[3] if parts[1:3] == ["v2", "models"] else parts[2]
    model = registry.get(TAGGER if name == "image-tagging" else name).model
    inputs = _floor_inputs.get((name, rows))
    if inputs is None:
        inputs = [np.zeros([rows, *t.shape[1:]], dtype=t.dtype) for t in model.card.inputs]
        _floor_inputs[(name, rows)] = inputs
    model.run(*inputs)


async def floor_app(scope: dict, receive: Any, send: Any) -> None:
    """The floor of one request's cost (bench.py's `floor` row): a bare ASGI app, under the server nnserve runs
    (its workers, uvloop, httptools), that reads the body, runs the model once on an input of the request's
    rows (the X-Floor-Rows header), and answers a fixed body. HTTP and the graph, nothing else: no parsing,
    no validation, no metrics, no log. Photos are not decoded (the graph's input is ready)."""
    if scope["type"] != "http":  # lifespan
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        rows = int(dict(scope["headers"]).get(b"x-floor-rows", b"1"))
        _floor_run(scope["path"], rows)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(FLOOR_ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": FLOOR_ANSWER})
