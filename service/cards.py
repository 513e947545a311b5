"""The model card: the JSON file beside each `model.onnx`, written by training, read by the service.

One pydantic model describes it, so the writer and the reader cannot disagree about its shape. The
card is the serving contract: the service builds a model's typed request and response types, its
routes, its OpenAPI entries and its validation from the card alone (service/tasks/tabular/types.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.files import MAX_CARD_BYTES, read_json

Task = str  # regression, binary_classification, image_classification, or a task registered beside them

CARD_FILE = "card.json"
ONNX_FILE = "model.onnx"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: str  # numpy name: float32, int64, uint8
    shape: list[int | str]  # "N" marks the dynamic batch dimension


class NumericCard(_Strict):
    name: str
    description: str
    unit: str
    allowed: tuple[float, float]  # outside: client error
    observed: tuple[float, float]  # seen in training data; outside: served with a warning
    default: float | None  # None: required
    integer: bool
    boolean: bool
    date: bool = False  # sent as "YYYY-MM-DD"; allowed, observed and default are decimal years
    example: float | str | None = None  # for the API documentation and smoke checks


class HashingCard(_Strict):
    """An open ID (any string or integer) hashed into `buckets` codes by service/hashing.py."""

    function: str  # service/hashing.FUNCTION; a card naming another is refused
    salt: int  # per column, so equal IDs in two columns land in unrelated buckets
    buckets: int
    max_bytes: int  # only the ID's first max_bytes bytes count
    seen: str  # base64 of numpy.packbits: one bit per bucket, set when it had its own embedding row


class CategoricalCard(_Strict):
    name: str
    description: str
    values: list[str] | None  # closed string vocabulary, code = position; None for integer IDs
    allowed: tuple[int, int]  # range of codes a client may send (hashed IDs: of buckets)
    vocabulary: list[int]  # codes seen in training, each with its own embedding row; others -> unknown
    unknown_index: int = 0
    default: int | str | None = None  # None: required
    example: int | str | None = None
    hashing: HashingCard | None = None  # set: the client sends the raw ID, the service hashes it

    def seen_buckets(self) -> np.ndarray:
        """The hashed ID's bucket bitmap as a numpy bool array (vocabulary is empty for hashed IDs)."""
        assert self.hashing is not None
        bits = np.frombuffer(base64.b64decode(self.hashing.seen), dtype=np.uint8)
        return np.unpackbits(bits, count=self.hashing.buckets).astype(bool)


class ImageInputCard(_Strict):
    """How a photo becomes the graph's input tensor."""

    size: tuple[int, int]  # (height, width) the graph takes
    resize_shorter: int  # resize so the shorter side has this length, then centre-crop `size`
    layout: Literal["NHWC", "NCHW"]
    dtype: Literal["uint8", "float32"]
    normalise_in_graph: bool  # True: raw 0..255 pixels go in; False: the service applies mean/std below
    mean: tuple[float, float, float]  # on 0..1 pixels
    std: tuple[float, float, float]
    output_is: Literal["probabilities", "logits"]


class ApiCard(_Strict):
    """How a tabular model's typed endpoints name things in OpenAPI and for the BentoML client. Every
    field may be left out: names are then derived from the model's name (service/tasks/tabular/types.py)."""

    request: str | None = None  # the type of one row, e.g. HouseFeatures
    request_doc: str | None = None  # what one row is, e.g. "One house for sale: what its seller knows about it."
    batch_request: str | None = None  # the batch request's type, e.g. HouseBatch
    batch_field: str | None = None  # the batch request's list field, e.g. houses (default: rows)
    response_prefix: str | None = None  # e.g. Price: PricePrediction, PriceRow, PriceBatch
    summary: str | None = None  # the single route's one-line summary
    batch_summary: str | None = None  # the batch route's one-line summary
    output_doc: str | None = None  # what the prediction is, e.g. "Predicted sale price, US dollars."
    # Request fields taken and ignored: a raw log line's columns the model does not read (its row id,
    # the label, the time the rows were split by), so a line is sent as it is. Any other unknown is a 400.
    ignored_fields: list[str] = Field(default_factory=list)


class FeedCard(_Strict):
    """One graph input of a brought model, and the card's features in its columns, in order."""

    input: str
    fields: list[str]


class GraphCard(_Strict):
    """How a brought model's graph takes the card's features and gives its answer, when it is not our
    trainers' layout (`numeric` float32 and `categorical` int64 in, one [N, 1] out). Made by
    training/make_card.py from a schema file; service/tasks/tabular/feeds.py builds the inputs from it.
    Numbers go in as numbers (dates as decimal years, booleans as 1/0); a closed vocabulary goes to a
    string input as its value, or to a number input as its position in `values`; an ID as it is."""

    feeds: list[FeedCard]  # one per graph input
    answer: str  # the answer's field, e.g. price (our graphs name their output so)
    output: str  # the graph output the answer is read from
    column: int = 0  # its column: a classifier's probabilities [N, 2] are read at column 1


class DataCard(_Strict):
    files: list[dict[str, Any]]  # {path, sha256, rows}; generated data also records its generator and seed
    split: str
    rows: dict[str, int]


class ParityCard(_Strict):
    max_abs_diff: float
    tolerance: float
    rows: int


class Distribution(_Strict):
    """One input feature's or one output's distribution on the data the model was made with, as bins:
    numbers by `edges` (bin i holds edges[i-1] <= x < edges[i]), codes by `codes` (the most frequent,
    one bin each, then one bin for every other code). service/dataplane/drift.py compares live traffic with it."""

    name: str  # a feature's name, or what the output measures ("output", "top1_confidence", "predicted_class")
    kind: Literal["feature", "time", "output"]  # time: a date feature, shown but never "drifted" (time moves on)
    edges: list[float] | None = None
    codes: list[int] | None = None
    fractions: list[float]  # per bin: len(edges) + 1, or len(codes) + 1

    def bins(self) -> int:
        """How many bins the edges or codes make (a valid card has a fraction for each)."""
        return len(self.edges) + 1 if self.edges is not None else len(self.codes or []) + 1


class ReferenceCard(_Strict):
    """What the model was made with, to measure drift against: the features on the training split, the
    outputs on the validation split, in the order of the task's adapter (service/tasks/)."""

    features_from: str  # which rows, e.g. "training split, 13,427 rows"
    outputs_from: str
    distributions: list[Distribution]


class ModelCard(_Strict):
    name: str
    version: str
    task: Task
    description: str
    onnx_sha256: str
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    output_unit: str | None = None
    numeric: list[NumericCard] = Field(default_factory=list)
    categorical: list[CategoricalCard] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    image: ImageInputCard | None = None
    graph: GraphCard | None = None  # a brought tabular model's own graph layout; None: our trainers'
    api: ApiCard | None = None
    data: DataCard | None = None
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)  # "model", "baseline", "oracle"
    bar: dict[str, Any] = Field(default_factory=dict)  # the acceptance bar and whether it held
    parity: ParityCard | None = None
    training: dict[str, Any] = Field(default_factory=dict)  # config, library versions, duration
    reference: ReferenceCard | None = None  # for drift (service/dataplane/drift.py); None: drift is not tracked

    def bar_failed(self) -> list[str]:
        """The checks of the card's acceptance bar that did not hold (none: met, or no bar). A version
        whose bar failed is served when a folder holds it, and flagged everywhere it is described."""
        return [check for check, held in self.bar.get("checks", {}).items() if not held]


# onnxruntime's type strings -> the numpy dtype names the card uses.
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(float16)": "float16",
    "tensor(string)": "object",  # numpy holds strings for onnxruntime in object arrays
}


def session_signature(session: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """An onnxruntime session's inputs and outputs; dynamic dimensions become "N"."""

    def spec(arg: Any) -> TensorSpec:
        dtype = ORT_DTYPES.get(arg.type, arg.type)
        return TensorSpec(name=arg.name, dtype=dtype, shape=[d if isinstance(d, int) else "N" for d in arg.shape])

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def read_card(model_dir: Path, limit: int = MAX_CARD_BYTES) -> ModelCard:
    """The folder's card; FileRefused when the file cannot be read as JSON (service/files.py), pydantic's
    ValidationError when the JSON is not a card."""
    return ModelCard.model_validate(read_json(model_dir / CARD_FILE, limit))


def write_card(model_dir: Path, card: ModelCard) -> Path:
    path = model_dir / CARD_FILE
    path.write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    return path
