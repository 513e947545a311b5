"""A brought tabular model's declared request: a small TOML (or YAML) file, read into the same
TabularSpec our trainers declare in training/contract.py, plus how the fields reach the graph.

    name = "housing-gbm"
    task = "regression"                      # or binary_classification
    description = "Sale price of a house."

    [output]
    name = "price"                           # the answer's field; the data file's label column
    unit = "USD"
    graph = "variable"                       # the graph output read (default: its only float output)
    column = 0                               # its column (default: 1 for a classifier's [N, 2] probabilities)

    [inputs]                                 # graph input -> features in its columns; default: an input
    numbers = ["sqft_living", "bedrooms"]    # per feature named like it, or the only input taking all

    [fields.sqft_living]
    type = "integer"                         # number, integer, boolean, date, category, id
    description = "Interior living area."
    unit = "sq ft"
    range = [100, 20000]                     # outside: a 400
    example = 1800
    default = 1800                           # optional: leave out and the field is required

    [fields.zipcode]
    type = "category"
    values = ["98001", "98002"]              # a closed vocabulary
    encoded = "position"                     # only where a number input takes it: the value's position

docs/models.md ("Serving your own models") walks through it with a scikit-learn and a LightGBM model.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.cards import ApiCard
from service.tasks.tabular.encoder import decimal_year
from training.contract import Categorical, Numeric, TabularSpec
from training.data_tabular import parse_date
from training.runinfo import TrainingDataError

TYPES = ("number", "integer", "boolean", "date", "category", "id")
TASKS = ("regression", "binary_classification")
FIELD_KEYS = {"type", "description", "unit", "range", "example", "default", "values", "encoded", "column"}
TOP_KEYS = {"name", "task", "description", "version", "output", "inputs", "fields", "bar", "api"}
OUTPUT_KEYS = {"name", "unit", "description", "graph", "column", "label"}


@dataclass(frozen=True)
class ModelSchema:
    spec: TabularSpec  # the request's fields, as our trainers declare theirs
    order: tuple[str, ...]  # the fields as the file declares them (a single graph input's column order)
    version: str
    inputs: dict[str, list[str]] | None  # graph input -> fields; None: by name, or the only input
    graph_output: str | None  # None: the graph's only float output
    column: int | None  # None: 0 for a regressor, 1 for a classifier
    label: str  # the data file's column holding the outcome
    positions: frozenset[str]  # closed vocabularies declared `encoded = "position"`
    ids: frozenset[str]  # fields of type id (their vocabulary comes from data)
    bar: dict[str, float]  # metric -> the least (r2, auc) or most (mae, log_loss, ..._error) it may be
    source: str  # the file, for messages and the card


def read_schema(path: Path) -> ModelSchema:
    """The schema file, checked; one TrainingDataError naming the key for anything wrong."""
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file: check --schema")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # PyYAML comes with BentoML

            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except Exception as e:  # tomllib's and yaml's own error types
        raise TrainingDataError(f"{path}: not readable as {path.suffix[1:] or 'TOML'} ({e})") from None
    where = str(path)
    if not isinstance(data, dict):
        raise TrainingDataError(f"{where}: expected a table of keys at the top")
    _known(data, TOP_KEYS, where)
    name, task = _text(data, "name", where), _text(data, "task", where)
    if task not in TASKS:
        raise TrainingDataError(f"{where}: task {task!r}: expected one of {list(TASKS)}")
    output = _table(data, "output", where)
    _known(output, OUTPUT_KEYS, f"{where} [output]")
    fields = _table(data, "fields", where)
    if not fields:
        raise TrainingDataError(f"{where}: [fields] declares no field: declare each request field")
    numeric: list[Numeric] = []
    categorical: list[Categorical] = []
    positions, ids = set(), set()
    for field, decl in fields.items():
        at = f"{where} [fields.{field}]"
        if not isinstance(decl, dict):
            raise TrainingDataError(f"{at}: expected a table (type, description, ...)")
        _known(decl, FIELD_KEYS, at)
        kind = decl.get("type")
        if kind not in TYPES:
            raise TrainingDataError(f"{at}: type {kind!r}: expected one of {list(TYPES)}")
        if kind in ("category", "id"):
            categorical.append(_categorical(field, kind, decl, at))
            positions |= {field} if decl.get("encoded") == "position" else set()
            ids |= {field} if kind == "id" else set()
        else:
            numeric.append(_numeric(field, kind, decl, at))
    inputs = data.get("inputs")
    if inputs is not None and not (isinstance(inputs, dict) and all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in inputs.values())):  # fmt: skip
        raise TrainingDataError(f"{where} [inputs]: expected input = [field names], one line per graph input")
    column = output.get("column")
    if column is not None and (not isinstance(column, int) or column < 0):
        raise TrainingDataError(f"{where} [output] column: expected a column number >= 0, got {column!r}")
    bar = data.get("bar", {})
    if not (isinstance(bar, dict) and all(isinstance(v, int | float) for v in bar.values())):
        raise TrainingDataError(f"{where} [bar]: expected metric = number lines (r2 = 0.85, auc = 0.7)")
    answer = _text(output, "name", f"{where} [output]")
    api = ApiCard(**data["api"]) if isinstance(data.get("api"), dict) else ApiCard(output_doc=output.get("description"))
    spec = TabularSpec(
        name=name, task=task, description=_text(data, "description", where), numeric=tuple(numeric),
        categorical=tuple(categorical), output=answer, output_unit=str(output.get("unit", "")), api=api,
    )  # fmt: skip
    label = str(output.get("label", answer))
    return ModelSchema(
        spec, tuple(fields), str(data.get("version", "1")), inputs, output.get("graph"), column, label,
        frozenset(positions), frozenset(ids), {str(k): float(v) for k, v in bar.items()}, str(path),
    )  # fmt: skip


def _numeric(field: str, kind: str, decl: dict[str, Any], at: str) -> Numeric:
    if "values" in decl or "encoded" in decl:
        raise TrainingDataError(f"{at}: values/encoded belong to a category; a {kind} has a range")
    low, high = _range(decl, at, kind)
    example = decl.get("example", decl.get("default", low if kind != "date" else None))
    if example is None:
        raise TrainingDataError(f"{at}: a date needs an example (YYYY-MM-DD)")
    default = decl.get("default")
    if kind == "date" and isinstance(default, str) and default != "latest":
        try:
            default = decimal_year(parse_date(default))
        except ValueError:
            raise TrainingDataError(f"{at}: default {default!r}: expected YYYY-MM-DD or 'latest'") from None
    return Numeric(
        field, str(decl.get("description", field)), str(decl.get("unit", "")), low, high, example,
        default=default, integer=kind == "integer", boolean=kind == "boolean", date=kind == "date",
        column=str(decl.get("column", "")),
    )  # fmt: skip


def _range(decl: dict[str, Any], at: str, kind: str) -> tuple[float, float]:
    if kind == "boolean":
        return 0.0, 1.0
    bounds = decl.get("range")
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int | float) for b in bounds)):
        what = "decimal years, e.g. [2000, 2030]" if kind == "date" else "[lowest, highest]"
        raise TrainingDataError(f"{at}: range: expected {what}, got {bounds!r}")
    if bounds[0] > bounds[1]:
        raise TrainingDataError(f"{at}: range {bounds}: the lowest is above the highest")
    return float(bounds[0]), float(bounds[1])


def _categorical(field: str, kind: str, decl: dict[str, Any], at: str) -> Categorical:
    description = str(decl.get("description", field))
    if kind == "category":
        values = decl.get("values")
        if not (isinstance(values, list) and values and all(isinstance(v, str | int) for v in values)):
            raise TrainingDataError(f"{at}: a category needs values = [the closed vocabulary], got {values!r}")
        values = tuple(str(v) for v in values)
        if len(set(values)) != len(values):
            raise TrainingDataError(f"{at}: values repeat a value")
        if decl.get("encoded", "string") not in ("string", "position"):
            raise TrainingDataError(f"{at}: encoded {decl['encoded']!r}: expected 'position' (or leave it out)")
        default = None if decl.get("default") is None else str(decl["default"])
        example = str(decl.get("example", default or values[0]))
        return Categorical(field, description, example, values=values, default=default,
                           column=str(decl.get("column", "")))  # fmt: skip
    if "values" in decl or "encoded" in decl:
        raise TrainingDataError(f"{at}: an id has no values; declare type = 'category' for a closed vocabulary")
    low, high = _range(decl, at, kind)
    if low != int(low) or high != int(high) or low < 0:
        raise TrainingDataError(f"{at}: an id's range is of whole numbers >= 0, got {decl['range']}")
    example = decl.get("example", int(low))
    return Categorical(field, description, example, minimum=int(low), maximum=int(high), default=decl.get("default"),
                       column=str(decl.get("column", "")))  # fmt: skip


def _known(table: dict[str, Any], keys: set[str], at: str) -> None:
    if unknown := sorted(set(table) - keys):
        raise TrainingDataError(f"{at}: unknown key(s) {unknown}: expected some of {sorted(keys)}")


def _text(table: dict[str, Any], key: str, at: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise TrainingDataError(f"{at}: {key}: expected a non-empty string, got {value!r}")
    return value


def _table(table: dict[str, Any], key: str, at: str) -> dict[str, Any]:
    value = table.get(key)
    if not isinstance(value, dict):
        raise TrainingDataError(f"{at}: [{key}]: expected a table")
    return value
