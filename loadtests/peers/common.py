"""What every peer's app shares, so each does exactly nnserve's work for a tabular model: the model
loaded from its folder by nnserve's own loader, the request validated by the pydantic type nnserve
builds from the card, encoded by nnserve's encoder, and answered in nnserve's shape. Only modules of
service/ that need numpy, pydantic and onnxruntime are imported (never bentoml), so a peer's own
virtual environment holds its framework and those three, nothing of ours.

NNSERVE_MODELS_DIR names the models; BENCH_THREADS the onnxruntime threads per process (the cores
shared out among the peer's worker processes, as nnserve shares them among its workers).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: service/

from service.cards import read_card  # noqa: E402
from service.runtime import Execution, load_model  # noqa: E402
from service.schemas import tabular_types  # noqa: E402
from service.tabular import TabularEncoder  # noqa: E402

MODELS = Path(os.environ.get("NNSERVE_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))
TABULAR = ("housing-price", "ad-click")  # the committed tabular models the peers serve


class TabularModel:
    def __init__(self, name: str) -> None:
        self.model = load_model(MODELS / name, Execution(threads=int(os.environ.get("BENCH_THREADS", "1"))))
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


KINDS = {"integer": "INT64", "number": "FP64", "boolean": "BOOL", "string": "BYTES"}  # JSON schema -> V2 datatype


def columns(name: str) -> dict[str, str]:
    """A tabular model's columns as V2 (Open Inference Protocol) tensors: name -> datatype, from the
    JSON type of each field of the request type nnserve builds from its card."""
    schema = tabular_types(read_card(MODELS / name), 1024).row.model_json_schema()
    kinds = {k: next(t["type"] for t in f.get("anyOf", [f]) if t.get("type") != "null")
             for k, f in schema["properties"].items()}  # fmt: skip
    return {k: KINDS[kind] for k, kind in kinds.items()}


def command_line() -> argparse.Namespace:
    """Every peer script's flags: --port (the bench finds a stack's processes by it) and --workers."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    return parser.parse_known_args()[0]  # (KServe parses the same command line for flags of its own)
