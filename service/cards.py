"""The model card: the JSON file beside each `model.onnx`, written by training, read by the service.

One pydantic model describes it, so the writer and the reader cannot disagree about its shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.contract import Task

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
    default: float | None
    integer: bool
    boolean: bool


class CategoricalCard(_Strict):
    name: str
    description: str
    values: list[str] | None  # closed string vocabulary, code = position; None for integer IDs
    allowed: tuple[int, int]  # range of codes a client may send
    vocabulary: list[int]  # codes seen in training, each with its own embedding row; others -> unknown
    unknown_index: int = 0


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


class DataCard(_Strict):
    files: list[dict[str, Any]]  # {path, sha256, rows}; generated data also records its generator and seed
    split: str
    rows: dict[str, int]


class ParityCard(_Strict):
    max_abs_diff: float
    tolerance: float
    rows: int


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
    data: DataCard | None = None
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)  # "model", "baseline", "oracle"
    bar: dict[str, Any] = Field(default_factory=dict)  # the acceptance bar and whether it held
    parity: ParityCard | None = None
    training: dict[str, Any] = Field(default_factory=dict)  # config, library versions, duration


# onnxruntime's type strings -> the numpy dtype names the card uses.
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(float16)": "float16",
}


def session_signature(session: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """An onnxruntime session's inputs and outputs; dynamic dimensions become "N"."""

    def spec(arg: Any) -> TensorSpec:
        dtype = ORT_DTYPES.get(arg.type, arg.type)
        return TensorSpec(name=arg.name, dtype=dtype, shape=[d if isinstance(d, int) else "N" for d in arg.shape])

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def read_card(model_dir: Path) -> ModelCard:
    return ModelCard.model_validate(json.loads((model_dir / CARD_FILE).read_text()))


def write_card(model_dir: Path, card: ModelCard) -> Path:
    path = model_dir / CARD_FILE
    path.write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    return path
