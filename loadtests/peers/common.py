"""What every peer's app shares, so each does exactly nnserve's work: the model loaded from its folder
by nnserve's own loader; for a tabular model the request validated by the pydantic type nnserve builds
from the card, encoded by nnserve's encoder; for a classifier the photo decoded and resized by
nnserve's image code; answered in nnserve's shape. Only modules of service/ that need numpy, pydantic,
pydantic-settings, pillow and onnxruntime are imported (never bentoml), so a peer's own virtual
environment holds its framework and those, nothing of ours.

NNSERVE_MODELS_DIR names the models; BENCH_THREADS the onnxruntime threads per process (the cores
shared out among the peer's worker processes, as nnserve shares them among its workers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: service/

from loadtests.ports import free_port  # noqa: E402, F401 - the ports a peer opens besides its HTTP one (gRPC, metrics)
from service.cards import read_card  # noqa: E402
from service.runtime import Execution, discover, load_model  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.tasks.image.photos import decode_photo, to_input, top_k  # noqa: E402
from service.tasks.tabular.encoder import TabularEncoder  # noqa: E402
from service.tasks.tabular.types import tabular_types  # noqa: E402

MODELS = Path(os.environ.get("NNSERVE_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))
_TASKS = {folder.name: read_card(folder).task for folder in discover(MODELS)}
TABULAR = tuple(name for name, task in _TASKS.items() if task != "image_classification")
TAGGER = next((name for name, task in _TASKS.items() if task == "image_classification"), None)  # one served
THREADS = Execution(threads=int(os.environ.get("BENCH_THREADS", "1")))


class TabularModel:
    def __init__(self, name: str) -> None:
        self.model = load_model(MODELS / name, THREADS)
        self.name, card = name, self.model.card
        self.types = tabular_types(card, 1024)
        self.encoder = TabularEncoder(card)
        self.served = {"model": name, "version": card.version}

    def validate(self, body: bytes | dict[str, Any]) -> dict[str, Any]:
        """One row, as nnserve validates it (a pydantic ValidationError when it is not one)."""
        row = self.types.row
        return (row.model_validate_json(body) if isinstance(body, bytes) else row.model_validate(body)).__dict__

    def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validated rows -> nnserve's one-row answers, one per row."""
        numeric, codes, warnings = self.encoder.encode(rows)
        values = self.model.run(numeric, codes)[:, 0]
        output = self.types.output
        return [{**self.served, output: float(v), "warnings": w} for v, w in zip(values, warnings, strict=True)]

    def predict_batch(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Validated rows -> nnserve's batch answer."""
        answers = self.predict(rows)
        return {**self.served, "predictions": [{k: a[k] for k in a if k not in self.served} for a in answers]}

    def validate_batch(self, body: bytes | dict[str, Any]) -> list[dict[str, Any]]:
        """nnserve's batch request -> its rows, validated."""
        batch = self.types.batch
        valid = batch.model_validate_json(body) if isinstance(body, bytes) else batch.model_validate(body)
        return [row.__dict__ for row in getattr(valid, self.types.batch_field)]


class GraphModel:
    """A tabular model's graph on the tensors it takes (what the gRPC scenarios send: nnserve's own encoding,
    numeric FP32 and categorical INT64, as tritonclient would send them to Triton serving the ONNX file),
    served by a peer's gRPC endpoint as `<name>-tensors`."""

    def __init__(self, name: str) -> None:
        self.model = load_model(MODELS / name, THREADS)
        card = self.model.card
        self.name = f"{name}-tensors"
        self.inputs = [(spec.name, spec.dtype, tuple(d for d in spec.shape if isinstance(d, int)))
                       for spec in card.inputs]  # fmt: skip
        self.output = card.graph.output if card.graph is not None else card.outputs[0].name

    def run(self, *arrays: Any) -> Any:
        return self.model.run(*arrays)


class ImageModel:
    """A classifier as nnserve serves it: photo bytes -> its top-k tags, best first. A photo that is not
    one raises nnserve's own client errors (service.errors.ServiceError)."""

    def __init__(self, name: str) -> None:
        self.model = load_model(MODELS / name, THREADS)
        self.served = {"model": name, "version": self.model.card.version}
        self.max_pixels = Settings().max_image_pixels

    def tag(self, photo: bytes, k: int = 5) -> dict[str, Any]:
        image, labels = self.model.card.image, self.model.card.labels
        assert image is not None
        scores = self.model.run(to_input(decode_photo(photo, self.max_pixels, ["photo"]), image))[0]
        return {**self.served, "tags": [{"label": n, "score": s} for n, s in top_k(scores, labels, k, image.output_is)]}


KINDS = {"integer": "INT64", "number": "FP64", "boolean": "BOOL", "string": "BYTES"}  # JSON schema -> V2 datatype


def columns(name: str) -> dict[str, str]:
    """A tabular model's columns as V2 (Open Inference Protocol) tensors: name -> datatype, from the
    JSON type of each field of the request type nnserve builds from its card."""
    schema = tabular_types(read_card(MODELS / name), 1024).row.model_json_schema()
    kinds = {k: next(t["type"] for t in f.get("anyOf", [f]) if t.get("type") != "null")
             for k, f in schema["properties"].items()}  # fmt: skip
    return {k: KINDS[kind] for k, kind in kinds.items()}


def v2_outputs(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """nnserve's answers as V2 (Open Inference Protocol) outputs: `model` and `version` once, every other
    field a column (lists as JSON text)."""
    first = answers[0]
    out = [{"name": k, "shape": [1], "datatype": "BYTES", "data": [first[k]]} for k in ("model", "version")]
    for k in (k for k in first if k not in ("model", "version")):
        column = [json.dumps(a[k]) if isinstance(a[k], list) else a[k] for a in answers]
        kind = "FP64" if isinstance(column[0], float) else "BYTES"
        out.append({"name": k, "shape": [len(column)], "datatype": kind, "data": column})
    return out


def command_line() -> argparse.Namespace:
    """Every peer script's flags: --port (the bench finds a stack's processes by it), --workers, and the
    gRPC port for the peers that serve the gRPC scenarios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("BENCH_GRPC_PORT", "0")),
                        help="the gRPC scenarios' port (BENCH_GRPC_PORT; 0: any free one, or none)")  # fmt: skip
    return parser.parse_known_args()[0]  # (KServe parses the same command line for flags of its own)
