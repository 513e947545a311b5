"""The nnserve BentoML service: typed endpoints for the three models, model metadata, health.

    bentoml serve service.app:NNServe --port 3000      (or: make serve)

Every endpoint is decode -> run -> encode. Client mistakes raise ServiceError subclasses, answered
as JSON with their status by `answers_client_errors`; BentoML's own validation errors are reshaped
to the same JSON by service.middleware.EdgeMiddleware.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gc
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import anyio
import bentoml
import numpy as np
from pydantic import Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service import __version__
from service.admission import AdmissionControl
from service.auth import ApiKeyAuth, load_keys
from service.bentoml_patches import patch_timeout_middleware, patch_tracing_middleware
from service.contract import AD_CLICK, HOUSING
from service.errors import InvalidInput, QuietClientErrors, ServiceError, field_error
from service.images import decode_photo, to_input, top_k
from service.middleware import JSON, MULTIPART, EdgeMiddleware, JsonErrors
from service.oip import OIP, ServerMetadataPath
from service.openapi import ServeOpenAPI, fix_document
from service.registry import Registry
from service.runtime import LoadedModel
from service.schemas import (
    Base64Photo,
    Base64Photos,
    ClickBatch,
    ClickPrediction,
    ClickRow,
    FieldWarning,
    HouseBatch,
    HouseFeatures,
    Impression,
    ImpressionBatch,
    ModelName,
    PriceBatch,
    PricePrediction,
    PriceRow,
    Tag,
    Tags,
    TagsBatch,
    TopK,
)
from service.settings import get_settings
from service.shutdown import ReadinessGate, drain
from service.telemetry import publish_models

log = logging.getLogger(__name__)
logging.getLogger("service").setLevel(logging.INFO)  # model loads and shutdown steps belong in the log
settings = get_settings()
logging.getLogger("bentoml._internal.server.http_app").addFilter(QuietClientErrors())
patch_timeout_middleware()
patch_tracing_middleware()
P = ParamSpec("P")
R = TypeVar("R")

_registry: Registry | None = None  # this worker's models; set when BentoML creates the service instance


def registry() -> Registry:
    if _registry is None:
        raise RuntimeError("the service instance has not been created in this worker")
    return _registry


def answers_client_errors(endpoint: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | JSONResponse]]:
    @functools.wraps(endpoint)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | JSONResponse:
        try:
            return await endpoint(*args, **kwargs)
        except ServiceError as e:
            return JSONResponse(e.body(), status_code=e.status)

    return wrapper


async def list_models(_: Request) -> JSONResponse:
    reg = registry()
    return JSONResponse({**reg.health(), "models": [reg.describe(m) for m in reg.models.values()]})


async def model_metadata(request: Request) -> JSONResponse:
    try:
        return JSONResponse(registry().describe(registry().get(request.path_params["name"])))
    except ServiceError as e:
        return JSONResponse(e.body(), status_code=e.status)


async def health(_: Request) -> JSONResponse:
    reg = registry()
    return JSONResponse(reg.health(), status_code=200 if reg.ready else 503)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404/405 answers, in our JSON shape instead of plain text."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail, "detail": []}, status_code=exc.status_code)


metadata_app = Starlette(
    routes=[
        Route("/models", list_models, methods=["GET"]),
        Route("/models/{name}", model_metadata, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ],
    exception_handlers={HTTPException: http_error},
)


def _tags(model: LoadedModel, scores: Any, k: int) -> list[Tag]:
    image = model.card.image
    assert image is not None
    return [Tag(label=label, score=score) for label, score in top_k(scores, model.card.labels, k, image.output_is)]


def _check_top_k(model: LoadedModel, k: int) -> None:
    if k > len(model.card.labels):
        raise InvalidInput(
            "top_k is larger than the number of labels",
            [field_error(["top_k"], f"1 to {len(model.card.labels)} for {model.name}", k, "less_than_equal")],
        )


def _decode(model: LoadedModel, photos: list[tuple[bytes, list[str | int]]]) -> np.ndarray:
    """Decode and resize a request's photos into one input batch (in a worker thread: it takes ms)."""
    image = model.card.image
    assert image is not None
    return np.concatenate([to_input(decode_photo(data, settings.max_image_pixels, loc), image) for data, loc in photos])


def _b64(text: str, loc: list[str | int]) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            "not valid base64", [field_error(loc, "a base64-encoded photo file", text[:40], "base64")]
        ) from None


PhotoFile = Annotated[Path, Field(description="The photo file: JPEG, PNG or WebP, any size.")]
PhotoFiles = Annotated[list[Path], Field(description="Photo files (JPEG, PNG or WebP), as repeated `photos` parts.")]


oip = OIP(registry, server_version=__version__, max_body_bytes=settings.max_body_bytes)


@bentoml.asgi_app(oip.app, path="/v2", name="open-inference-protocol")
@bentoml.asgi_app(metadata_app, path="/v1", name="metadata")
@bentoml.service(
    name="nnserve",
    workers=settings.workers or "cpu_count",
    traffic={"timeout": settings.request_timeout_s},
    logging={"access": {"enabled": settings.access_log}},
)
class NNServe:
    def __init__(self) -> None:
        global _registry
        self.registry = _registry = Registry(settings)
        drain.install(settings.shutdown_grace_s)
        publish_models(list(self.registry.models.values()))
        # Everything alive now (modules, sessions, cards) lives as long as the worker: move it out of
        # the collector's sight, so full collections under load only walk what requests allocate.
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.registry.ready

    async def _tabular(
        self, name: str, rows: list[dict[str, Any]]
    ) -> tuple[LoadedModel, Any, list[list[FieldWarning]]]:
        """Encode rows, run the model: (model, one output value per row, warnings per row)."""
        model = self.registry.get(name)
        numeric, codes, warnings = self.registry.encoders[name].encode(rows)
        batcher = self.registry.batchers.get(name)
        out = model.run(numeric, codes) if batcher is None else await batcher(numeric, codes)
        return model, out[:, 0], warnings

    # --- housing-price -------------------------------------------------------------------------
    @bentoml.api(route="/v1/housing-price/predict", input_spec=HouseFeatures, output_spec=PricePrediction)
    @answers_client_errors
    async def housing_price(self, **house: Any) -> PricePrediction:
        """Predict the sale price of one house."""
        model, prices, warnings = await self._tabular(HOUSING.name, [house])
        return PricePrediction(
            price=float(prices[0]), warnings=warnings[0], model=model.name, version=model.card.version
        )

    @bentoml.api(route="/v1/housing-price/predict-batch", input_spec=HouseBatch, output_spec=PriceBatch)
    @answers_client_errors
    async def housing_price_batch(self, houses: list[HouseFeatures]) -> PriceBatch:  # type: ignore[valid-type]
        """Predict the sale prices of a batch of houses."""
        model, prices, warnings = await self._tabular(HOUSING.name, [h.model_dump() for h in houses])
        rows = [PriceRow(price=float(p), warnings=w) for p, w in zip(prices, warnings, strict=True)]
        return PriceBatch(predictions=rows, model=model.name, version=model.card.version)

    # --- ad-click --------------------------------------------------------------------------------
    @bentoml.api(route="/v1/ad-click/predict", input_spec=Impression, output_spec=ClickPrediction)
    @answers_client_errors
    async def ad_click(self, **impression: Any) -> ClickPrediction:
        """Predict the probability that one impression is clicked."""
        model, ps, warnings = await self._tabular(AD_CLICK.name, [impression])
        return ClickPrediction(
            click_probability=float(ps[0]), warnings=warnings[0], model=model.name, version=model.card.version
        )

    @bentoml.api(route="/v1/ad-click/predict-batch", input_spec=ImpressionBatch, output_spec=ClickBatch)
    @answers_client_errors
    async def ad_click_batch(self, impressions: list[Impression]) -> ClickBatch:  # type: ignore[valid-type]
        """Predict click probabilities for a batch of impressions."""
        model, ps, warnings = await self._tabular(AD_CLICK.name, [i.model_dump() for i in impressions])
        rows = [ClickRow(click_probability=float(p), warnings=w) for p, w in zip(ps, warnings, strict=True)]
        return ClickBatch(predictions=rows, model=model.name, version=model.card.version)

    # --- image-tagging ---------------------------------------------------------------------------
    async def _tag(
        self, photos: list[tuple[bytes, list[str | int]]], k: int, name: str | None
    ) -> tuple[LoadedModel, list]:
        model = self.registry.classifier(name)
        _check_top_k(model, k)
        batcher = self.registry.batchers.get(model.name)
        if batcher is None:  # decode and run in one thread hop
            scores = await anyio.to_thread.run_sync(lambda: model.run(_decode(model, photos)))
        else:  # decode here, run in a batch shared with concurrent requests
            scores = await batcher(await anyio.to_thread.run_sync(_decode, model, photos))
        return model, [_tags(model, row, k) for row in scores]

    @bentoml.api(route="/v1/image-tagging/predict", output_spec=Tags)
    @answers_client_errors
    async def image_tagging(self, photo: PhotoFile, top_k: TopK = 5, model: ModelName = None) -> Tags:
        """Tag one photo uploaded as a multipart file."""
        served, tags = await self._tag([(photo.read_bytes(), ["photo"])], top_k, model)
        return Tags(tags=tags[0], model=served.name, version=served.card.version)

    @bentoml.api(route="/v1/image-tagging/predict-batch", output_spec=TagsBatch)
    @answers_client_errors
    async def image_tagging_batch(self, photos: PhotoFiles, top_k: TopK = 5, model: ModelName = None) -> TagsBatch:
        """Tag a batch of photos uploaded as repeated multipart files named `photos`."""
        if not 1 <= len(photos) <= settings.max_batch_images:
            raise InvalidInput(
                "wrong number of photos",
                [field_error(["photos"], f"1 to {settings.max_batch_images} photos", len(photos), "batch_size")],
            )
        served, tags = await self._tag([(p.read_bytes(), ["photos", i]) for i, p in enumerate(photos)], top_k, model)
        return TagsBatch(results=tags, model=served.name, version=served.card.version)

    @bentoml.api(route="/v1/image-tagging/predict-base64", input_spec=Base64Photo, output_spec=Tags)
    @answers_client_errors
    async def image_tagging_base64(self, image_base64: str, top_k: int = 5, model: str | None = None) -> Tags:
        """Tag one photo sent as base64 in JSON."""
        served, tags = await self._tag([(_b64(image_base64, ["image_base64"]), ["image_base64"])], top_k, model)
        return Tags(tags=tags[0], model=served.name, version=served.card.version)

    @bentoml.api(route="/v1/image-tagging/predict-batch-base64", input_spec=Base64Photos, output_spec=TagsBatch)
    @answers_client_errors
    async def image_tagging_batch_base64(
        self, images_base64: list[str], top_k: int = 5, model: str | None = None
    ) -> TagsBatch:
        """Tag a batch of photos sent as base64 in JSON."""
        photos = [(_b64(text, ["images_base64", i]), ["images_base64", i]) for i, text in enumerate(images_base64)]
        served, tags = await self._tag(photos, top_k, model)
        return TagsBatch(results=tags, model=served.name, version=served.card.version)


# Outermost of ours: a request without a valid key (when keys are set) costs nothing more.
NNServe.add_asgi_middleware(
    ApiKeyAuth,
    keys=load_keys(settings.api_keys, settings.api_keys_file),
    exempt=frozenset(p.strip() for p in settings.auth_exempt_paths.split(",") if p.strip()),
)
NNServe.add_asgi_middleware(ReadinessGate, health=lambda: registry().health())
NNServe.add_asgi_middleware(AdmissionControl, max_in_flight=settings.max_in_flight, max_queue=settings.max_queue)
# The edge of every prediction route, derived from the APIs above: the media type each takes, and for
# multipart ones the field that must carry files (checked before BentoML parses the body).
_multipart = {api.route: api.input_spec.multipart_fields for api in NNServe.apis.values()}
NNServe.add_asgi_middleware(
    EdgeMiddleware,
    routes={route: MULTIPART if files else JSON for route, files in _multipart.items()},
    file_fields={route: files[0] for route, files in _multipart.items() if files},
    max_body_bytes=settings.max_body_bytes,
)
NNServe.add_asgi_middleware(JsonErrors)
NNServe.add_asgi_middleware(ServerMetadataPath)
NNServe.add_asgi_middleware(ServeOpenAPI, document=lambda: fix_document(NNServe.openapi_spec.asdict()))
