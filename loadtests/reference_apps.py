"""The benchmark's reference points: a plain Starlette app and a FastAPI app doing exactly what nnserve
does for each benchmarked route (the same pydantic validation, encoders, image decoding and
onnxruntime sessions), in one process, without BentoML.

    uvicorn loadtests.reference_apps:starlette_app --loop asyncio --http h11
    uvicorn loadtests.reference_apps:fastapi_app --loop asyncio --http h11
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI, File, Form, UploadFile
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.contract import AD_CLICK, HOUSING
from service.images import decode_photo, to_input, top_k
from service.registry import Registry
from service.runtime import Execution
from service.schemas import (
    ClickBatch,
    ClickPrediction,
    ClickRow,
    HouseFeatures,
    Impression,
    ImpressionBatch,
    PricePrediction,
    Tag,
    Tags,
)
from service.settings import Settings


class _OneProcess(Settings):
    """The reference is one process: its sessions keep onnxruntime's own thread default (threads 0),
    as in every bench before nnserve's sharing-out of cores, not nnserve's one thread per worker."""

    def execution(self) -> Execution:
        return replace(super().execution(), threads=0)


_settings = _OneProcess(models_dir=Path(os.environ.get("NNSERVE_MODELS_DIR", Settings().models_dir)))
registry = Registry(_settings)
TAGGER = os.environ.get("BENCH_TAGGER", "image-tagging")


def house(payload: dict) -> PricePrediction:
    model = registry.get(HOUSING.name)
    numeric, codes, warnings = registry.encoders[model.name].encode([payload])
    price = float(model.run(numeric, codes)[0, 0])
    return PricePrediction(price=price, warnings=warnings[0], model=model.name, version=model.card.version)


def click(payload: dict) -> ClickPrediction:
    model = registry.get(AD_CLICK.name)
    numeric, codes, warnings = registry.encoders[model.name].encode([payload])
    p = float(model.run(numeric, codes)[0, 0])
    return ClickPrediction(click_probability=p, warnings=warnings[0], model=model.name, version=model.card.version)


def clicks(rows: list[dict]) -> ClickBatch:
    model = registry.get(AD_CLICK.name)
    numeric, codes, warnings = registry.encoders[model.name].encode(rows)
    ps = model.run(numeric, codes)[:, 0]
    out = [ClickRow(click_probability=float(p), warnings=w) for p, w in zip(ps, warnings, strict=True)]
    return ClickBatch(predictions=out, model=model.name, version=model.card.version)


def tag(data: bytes, k: int) -> Tags:
    model = registry.classifier(TAGGER)
    scores = model.run(to_input(decode_photo(data, _settings.max_image_pixels, ["photo"]), model.card.image))[0]
    tags = [Tag(label=label, score=s) for label, s in top_k(scores, model.card.labels, k, model.card.image.output_is)]
    return Tags(tags=tags, model=model.name, version=model.card.version)


# --- plain Starlette -------------------------------------------------------------------------------
def _json_route(request_model, handler, batch_field: str | None = None):
    async def endpoint(request: Request) -> Response:
        try:
            valid = request_model.model_validate_json(await request.body())
        except ValidationError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        payload = [r.model_dump() for r in getattr(valid, batch_field)] if batch_field else valid.model_dump()
        return Response(handler(payload).model_dump_json(), media_type="application/json")

    return endpoint


async def _tag_route(request: Request) -> Response:
    form = await request.form()
    photo = form["photo"]
    data = await photo.read()  # type: ignore[union-attr]
    return Response(tag(data, int(form.get("top_k", 5))).model_dump_json(), media_type="application/json")


starlette_app = Starlette(
    routes=[
        Route("/v1/housing-price/predict", _json_route(HouseFeatures, house), methods=["POST"]),
        Route("/v1/ad-click/predict", _json_route(Impression, click), methods=["POST"]),
        Route("/v1/ad-click/predict-batch", _json_route(ImpressionBatch, clicks, "impressions"), methods=["POST"]),
        Route("/v1/image-tagging/predict", _tag_route, methods=["POST"]),
    ]
)

# --- FastAPI ---------------------------------------------------------------------------------------
fastapi_app = FastAPI()


@fastapi_app.post("/v1/housing-price/predict", response_model=PricePrediction)
async def fastapi_house(features: HouseFeatures) -> PricePrediction:  # type: ignore[valid-type]
    return house(features.model_dump())


@fastapi_app.post("/v1/ad-click/predict", response_model=ClickPrediction)
async def fastapi_click(impression: Impression) -> ClickPrediction:  # type: ignore[valid-type]
    return click(impression.model_dump())


@fastapi_app.post("/v1/ad-click/predict-batch", response_model=ClickBatch)
async def fastapi_clicks(batch: ImpressionBatch) -> ClickBatch:
    return clicks([i.model_dump() for i in batch.impressions])


@fastapi_app.post("/v1/image-tagging/predict", response_model=Tags)
async def fastapi_tag(photo: UploadFile = File(...), top_k: int = Form(5)) -> Tags:  # noqa: B008
    return tag(await photo.read(), top_k)
