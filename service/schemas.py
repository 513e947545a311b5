"""Pydantic request and response types. The tabular request types are built from the contract, so a
feature added there appears in validation, in OpenAPI (with its description, unit, range and
example) and in the load tests at once.

Decisions: unknown fields are rejected (a misspelt optional feature would otherwise be silently
replaced by its default); numbers are strict (a string where a number goes is an error, not
coerced); NaN and Infinity are rejected.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from service.contract import AD_CLICK, HOUSING, Categorical, Numeric, TabularSpec
from service.settings import get_settings


def example(value: Any) -> dict[str, Any]:
    """OpenAPI 3.0's singular `example`: BentoML's OpenAPI builder drops pydantic's `examples` list."""
    return {"example": value}


_REQUEST_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
_settings = get_settings()


def _numeric_field(f: Numeric) -> tuple[Any, Any]:
    if f.boolean:
        default = False if f.default is None else bool(f.default)
        return bool, Field(default, description=f.description, json_schema_extra=example(bool(f.example)))
    kind = int if f.integer else float
    text = f"{f.description} Unit: {f.unit}. Allowed: {f.minimum:g} to {f.maximum:g}."
    lo, hi = (int(f.minimum), int(f.maximum)) if f.integer else (f.minimum, f.maximum)
    sample = int(f.example) if f.integer else f.example
    default = ... if f.default is None else (int(f.default) if f.integer else f.default)
    return kind, Field(default, ge=lo, le=hi, description=text, json_schema_extra=example(sample))


def _categorical_field(f: Categorical) -> tuple[Any, Any]:
    default = ... if f.default is None else f.default
    if f.values is not None:
        return Literal[f.values], Field(default, description=f.description, json_schema_extra=example(f.example))  # type: ignore[valid-type]
    text = f"{f.description} Integer from {f.minimum} to {f.maximum}."
    return int, Field(default, ge=f.minimum, le=f.maximum, description=text, json_schema_extra=example(f.example))


def request_model(name: str, spec: TabularSpec, doc: str) -> type[BaseModel]:
    fields: dict[str, Any] = {f.name: _numeric_field(f) for f in spec.numeric}
    fields |= {f.name: _categorical_field(f) for f in spec.categorical}
    model = create_model(name, __config__=_REQUEST_CONFIG, __doc__=doc, **fields)
    required = {f.name: f.example for f in spec.features if f.default is None or f.name in ("bathrooms", "grade")}
    model.model_config["json_schema_extra"] = example(required)
    return model


HouseFeatures = request_model("HouseFeatures", HOUSING, "One house for sale: what its seller knows about it.")
Impression = request_model("Impression", AD_CLICK, "One ad impression: who sees which ad, where and when.")


class FieldWarning(BaseModel):
    """The request was served, but one value is unusual for the model."""

    field: str = Field(description="The request field concerned.", json_schema_extra=example("zipcode"))
    value: float | int | str = Field(description="The value received.", json_schema_extra=example(12345))
    message: str = Field(
        description="What the model did with it.",
        json_schema_extra=example("zipcode 12345 was not seen in training: served through the unknown bucket"),
    )


class _Served(BaseModel):
    model: str = Field(description="Name of the model that answered.", json_schema_extra=example("housing-price"))
    version: str = Field(description="Version of that model (from its card).", json_schema_extra=example("1"))


class PricePrediction(_Served):
    price: float = Field(description="Predicted sale price, US dollars.", json_schema_extra=example(612_345.0))
    warnings: list[FieldWarning] = Field(default_factory=list, description="Unusual values in the request.")


class PriceRow(BaseModel):
    price: float = Field(description="Predicted sale price, US dollars.", json_schema_extra=example(612_345.0))
    warnings: list[FieldWarning] = Field(default_factory=list)


class PriceBatch(_Served):
    predictions: list[PriceRow] = Field(description="One prediction per house, in request order.")


class HouseBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    houses: list[HouseFeatures] = Field(  # type: ignore[valid-type]
        min_length=1,
        max_length=_settings.max_batch_rows,
        description=f"1 to {_settings.max_batch_rows} houses (NNSERVE_MAX_BATCH_ROWS).",
    )


class ClickPrediction(_Served):
    click_probability: float = Field(
        ge=0, le=1, description="Probability of a click.", json_schema_extra=example(0.031)
    )
    warnings: list[FieldWarning] = Field(default_factory=list, description="Unusual values in the request.")


class ClickRow(BaseModel):
    click_probability: float = Field(ge=0, le=1, json_schema_extra=example(0.031))
    warnings: list[FieldWarning] = Field(default_factory=list)


class ClickBatch(_Served):
    predictions: list[ClickRow] = Field(description="One prediction per impression, in request order.")


class ImpressionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    impressions: list[Impression] = Field(  # type: ignore[valid-type]
        min_length=1,
        max_length=_settings.max_batch_rows,
        description=f"1 to {_settings.max_batch_rows} impressions (NNSERVE_MAX_BATCH_ROWS).",
    )


TopK = Annotated[int, Field(ge=1, description="How many tags to return, best first (at most the label count).")]
ModelName = Annotated[
    str | None,
    Field(description="Which loaded image classifier answers; default: image-tagging (or the only one loaded)."),
]


class Tag(BaseModel):
    label: str = Field(json_schema_extra=example("cat"))
    score: float = Field(ge=0, le=1, description="Probability of the label.", json_schema_extra=example(0.93))


class Tags(_Served):
    tags: list[Tag] = Field(description="Top-k tags, highest score first.")


class TagsBatch(_Served):
    results: list[list[Tag]] = Field(description="Top-k tags per photo, in request order.")


class Base64Photo(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    image_base64: str = Field(description="The photo file (JPEG, PNG or WebP), base64-encoded.", min_length=1)
    top_k: TopK = 5
    model: ModelName = None


class Base64Photos(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    images_base64: list[str] = Field(
        min_length=1,
        max_length=_settings.max_batch_images,
        description=f"1 to {_settings.max_batch_images} photo files, base64-encoded (NNSERVE_MAX_BATCH_IMAGES).",
    )
    top_k: TopK = 5
    model: ModelName = None
