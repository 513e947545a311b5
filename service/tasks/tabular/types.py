"""A tabular model's request and response types, built from its card at start-up: its typed endpoints,
their validation and their OpenAPI schemas (descriptions, units, ranges, examples) come from its card
alone, so a model of a new schema is served from its folder with no code.

Decisions: unknown fields are rejected (a misspelt optional feature would otherwise be silently
replaced by its default); numbers are strict (a string where a number goes is an error, not
coerced), though a whole number is an integer however JSON writes it (1800.0); NaN and Infinity are
rejected; dates are "YYYY-MM-DD" strings; a yes/no feature takes true/false or 1/0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    PlainValidator,
    WithJsonSchema,
    create_model,  # fmt: skip
)
from pydantic_core import core_schema as cs

from service.cards import ApiCard, CategoricalCard, ModelCard, NumericCard
from service.tasks.base import Served
from service.tasks.tabular.encoder import date_of

REQUEST_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def _iso(value: Any) -> Any:
    if isinstance(value, dt.date) or (isinstance(value, str) and len(value) == 10):
        return value
    raise ValueError("expected a date as a YYYY-MM-DD string")


# A date arrives as a string, in JSON and in Python alike (FastAPI validates parsed dicts): lax parsing
# of that string, but nothing else (pydantic's lax dates would take a number as a Unix time).
IsoDate = Annotated[dt.date, BeforeValidator(_iso), Field(strict=False)]


WHOLE = 2**53  # up to here floats still count by ones


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) <= WHOLE else value


# JSON does not tell 1800 from 1800.0 (a client's float column, pandas' ints beside a NaN): a whole
# number is an integer however it is written (up to 2**53, where floats still count by ones); 1800.5,
# "1800" and true are not.
Integer = Annotated[int, BeforeValidator(_integral)]


def integer(low: int, high: int) -> tuple[Any, dict[str, int]]:
    """A field's type for an integer from low to high, and what its Field takes besides. Checked by
    pydantic's core alone: the same answers and errors as Integer with ge and le, without the Python call
    per field (Integer's cost a housing row's validation 38,700 instructions, where none at all would cost
    25,500; this costs 33,300). An integer, else a float that is whole and within 2**53, made one;
    anything else "Input should be a valid integer"; then the bounds. Bounds beyond 2**53 keep Integer."""
    if max(abs(low), abs(high)) > WHOLE:
        return Integer, {"ge": low, "le": high}
    whole = cs.union_schema(
        [cs.int_schema(strict=True),
         cs.chain_schema([cs.float_schema(strict=True, allow_inf_nan=False, ge=-WHOLE, le=WHOLE),
                          cs.int_schema(strict=False)])],
        mode="left_to_right", custom_error_type="int_type",  # pydantic's own message
    )  # fmt: skip
    schema = cs.chain_schema([whole, cs.int_schema(strict=True, ge=low, le=high)])
    json_schema = {"type": "integer", "minimum": low, "maximum": high}
    return Annotated[int, GetPydanticSchema(lambda _type, _handler: schema), WithJsonSchema(json_schema)], {}


def _boolean(value: Any) -> Any:
    return bool(value) if type(value) in (int, float) and value in (0, 1) else value


# A yes/no feature: true/false, or 1/0 as the training data (and a client's CSV or pandas column) write
# it; 0.5, "true" and "yes" are not.
Boolean = Annotated[
    bool,
    BeforeValidator(_boolean),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]}),
]


def _open_id(value: Any) -> str | int:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"expected an ID as it appears in the log: a string or an integer, not {type(value).__name__}")


# An open ID (hashed by the service): one check and one message, where `str | int` would give two.
OpenId = Annotated[
    str | int, PlainValidator(_open_id), WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}]})
]


class FieldWarning(BaseModel):
    """The request was served, but one value is unusual for the model."""

    field: str = Field(description="The request field concerned.", examples=["zipcode"])
    value: float | int | str = Field(description="The value received.", examples=[12345])
    message: str = Field(
        description="What the model did with it.",
        examples=["zipcode 12345: ID not seen in training, served through the unknown bucket"],
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-") if part)


def _numeric_field(f: NumericCard) -> tuple[Any, Any]:
    lo, hi = f.allowed
    if f.boolean:
        default = False if f.default is None else bool(f.default)
        sample = bool(f.example) if f.example is not None else default
        text = f"{f.description} Yes or no: true or false, or 1 or 0."
        return Boolean, Field(default, description=text, examples=[sample])
    if f.date:
        first, last = dt.date.fromisoformat(date_of(lo)), dt.date.fromisoformat(date_of(hi))
        text = f"{f.description} A date, YYYY-MM-DD, from {first} to {last}."
        default = ... if f.default is None else dt.date.fromisoformat(date_of(f.default))
        sample = f.example if f.example is not None else date_of(f.observed[1])
        return IsoDate, Field(default, ge=first, le=last, description=text, examples=[sample])
    kind: type = int if f.integer else float
    bounds = (int(lo), int(hi)) if f.integer else (lo, hi)
    text = f"{f.description} Unit: {f.unit}. Allowed: {lo:g} to {hi:g}."
    default = ... if f.default is None else kind(f.default)
    sample = kind(f.example if f.example is not None else (f.observed[0] + f.observed[1]) / 2)
    if f.integer:
        typed, checks = integer(*bounds)
        return typed, Field(default, **checks, description=text, examples=[sample])
    return float, Field(default, ge=bounds[0], le=bounds[1], description=text, examples=[sample])


def _categorical_field(f: CategoricalCard) -> tuple[Any, Any]:
    default = ... if f.default is None else f.default
    if f.values is not None:
        sample = f.example if f.example is not None else f.values[0]
        return Literal[tuple(f.values)], Field(default, description=f.description, examples=[sample])  # type: ignore[misc]
    if f.hashing is not None:
        text = f"{f.description} An ID as it appears in the log: a string or an integer of any size."
        return OpenId, Field(default, description=text, examples=[f.example if f.example is not None else ""])
    lo, hi = f.allowed
    sample = f.example if f.example is not None else (f.vocabulary[0] if f.vocabulary else lo)
    text = f"{f.description} Integer from {lo} to {hi}."
    typed, checks = integer(lo, hi)
    return typed, Field(default, **checks, description=text, examples=[sample])


class LogOdds(BaseModel):
    prediction: float = Field(description="The answer in log-odds: log(p / (1 - p)).")
    baseline: float = Field(description="The background rows' mean log-odds.")
    attributions: dict[str, float] = Field(description="One per request field; they add up to prediction - baseline.")
    standard_errors: dict[str, float] | None = Field(None, description="Sampled values only: each one's error.")


class Explanation(BaseModel):
    """Which request fields moved the answer away from the baseline (Shapley values, computed by the service
    with the model's own graph: service/tasks/tabular/explain.py)."""

    prediction: float = Field(description="The model's answer for the row, in `unit`.")
    baseline: float = Field(description="The model's mean answer on the background rows, drawn from the card's "
                            "reference distributions (its training data): where the attributions start.")  # fmt: skip
    unit: str = Field(description="The unit of prediction, baseline and attributions.")
    attributions: dict[str, float] = Field(
        description="One per request field, in `unit`; they add up to prediction - baseline."
    )
    standard_errors: dict[str, float] | None = Field(
        None, description="Sampled values only (more coalitions than NNSERVE_EXPLAIN_MAX_ROWS): each one's error."
    )
    log_odds: LogOdds | None = Field(None, description="A classifier's attributions in log-odds, where they add.")
    method: str = Field(description="Exact Shapley values, or how many permutations were sampled.")
    rows_run: int = Field(description="Graph rows the explanation ran: its cost.")
    background: str = Field(description="Where the background rows come from.")
    warnings: list[FieldWarning] = Field(default_factory=list, description="Unusual values in the request.")


class TabularExplanation(Served, Explanation):
    """One row's explanation."""


class TabularExplanationBatch(Served):
    explanations: list[Explanation] = Field(description="One explanation per row, in request order.")


@dataclass(frozen=True)
class TabularTypes:
    """A tabular model's typed API: one row, a batch of rows, and the three answers."""

    row: type[BaseModel]
    batch: type[BaseModel]
    batch_field: str
    output: str  # the answer's field: the graph's output name (a brought graph's: its card's graph.answer)
    ignored: frozenset[str]  # request fields taken and dropped (a raw log line's id, label, time)
    prediction: type[BaseModel]
    prediction_row: type[BaseModel]
    prediction_batch: type[BaseModel]
    summary: str
    batch_summary: str


def tabular_types(card: ModelCard, max_rows: int) -> TabularTypes:
    api = card.api or ApiCard()
    camel = _camel(card.name)
    fields: dict[str, Any] = {f.name: _numeric_field(f) for f in card.numeric}
    fields |= {f.name: _categorical_field(f) for f in card.categorical}
    ignored = "Taken and ignored: a column of the log the model does not read (its row id, the label, the time)."
    fields |= {name: (Any, Field(None, description=ignored, examples=[None])) for name in api.ignored_fields}
    row_name = api.request or f"{camel}Request"
    row = create_model(row_name, __config__=REQUEST_CONFIG, __doc__=api.request_doc or card.description, **fields)
    required = {name: info.examples[0] for name, info in row.model_fields.items() if info.is_required()}
    row.model_config["json_schema_extra"] = {"examples": [required]}  # a minimal request: what must be sent

    batch_field = api.batch_field or "rows"
    items = Annotated[list[row], Field(min_length=1, max_length=max_rows)]  # type: ignore[valid-type]
    batch = create_model(
        api.batch_request or f"{camel}BatchRequest",
        __config__=ConfigDict(extra="forbid"),
        **{batch_field: (items, Field(description=f"1 to {max_rows} of them (NNSERVE_MAX_BATCH_ROWS)."))},
    )

    output = card.graph.answer if card.graph is not None else card.outputs[0].name
    probability = card.task == "binary_classification"
    doc = api.output_doc or (f"Probability of {output}." if probability else f"Predicted {output}, {card.output_unit}.")
    value_field = Field(description=doc, ge=0, le=1) if probability else Field(description=doc)
    warnings = (list[FieldWarning], Field(default_factory=list, description="Unusual values in the request."))
    prefix = api.response_prefix or camel
    prediction = create_model(
        f"{prefix}Prediction", __base__=Served, **{output: (float, value_field)}, warnings=warnings
    )
    prediction_row = create_model(f"{prefix}Row", **{output: (float, value_field)}, warnings=warnings)
    prediction_batch = create_model(
        f"{prefix}Batch",
        __base__=Served,
        predictions=(list[prediction_row], Field(description="One prediction per row, in request order.")),  # type: ignore[valid-type]
    )
    return TabularTypes(
        row, batch, batch_field, output, frozenset(api.ignored_fields), prediction, prediction_row, prediction_batch,
        api.summary or f"{card.description} One row.", api.batch_summary or f"{card.description} A batch of rows.",
    )  # fmt: skip
