"""Write a model card for an ONNX file trained anywhere, so the service can serve it: an image
classifier with its labels, or a tabular model (scikit-learn, XGBoost, LightGBM, ...) with a schema
file declaring its request (training/model_schema.py), and optionally a data file it did not train on.

    python -m training.make_card --onnx resnet.onnx --labels imagenet_class_index.json \
        --name imagenet-classifier --publish
    python -m training.make_card --onnx housing_gbm.onnx --schema housing_gbm.toml --data held_out.csv --publish

The ONNX file is copied beside its card into --out (default build/models/<name>/<UTC time>/); --publish
then installs the folder as models/<name> (by renames; refused when a declared bar fails). Image
preprocessing defaults are torchvision's ImageNet ones (shorter side 256, centre crop 224, float32 NCHW,
ImageNet mean/std).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx

from service.cards import ONNX_FILE, ImageInputCard, ModelCard, write_card
from training.card_tabular import brought_card
from training.export import finish, graph_signature, onnx_facts, run_dir
from training.model_schema import read_schema
from training.runinfo import TrainingDataError, run_tool, sha256_file

IMAGENET_MEAN = "0.485,0.456,0.406"
IMAGENET_STD = "0.229,0.224,0.225"


@dataclass
class Config:
    onnx: Path = Path("model.onnx")  # the ONNX file: an image classifier, or a tabular model with --schema
    labels: Path = Path("labels.txt")  # an image classifier's labels: Keras index JSON, a JSON list, or one a line
    schema: Path | None = None  # a tabular model's schema file (TOML or YAML): its request fields and graph mapping
    data: Path | None = None  # a tabular model's held-out CSV (the schema's columns, label): metrics, drift reference
    name: str = "imagenet-classifier"  # an image classifier's name: its `model` field (a schema names its own)
    version: str = "1"  # an image classifier's version (a schema says its own)
    out: Path | None = None  # the folder to write; default build/models/<name>/<UTC time>
    publish: bool = False  # install the folder as <models-dir>/<name> (refused when a declared bar fails)
    models_dir: Path = Path("models")  # the served models directory --publish installs into
    dry_run: bool = False  # write and check the folder, never publish it
    description: str = "An image classifier brought as an ONNX file with its labels."  # shown in metadata
    resize_shorter: int = 256  # resize the photo's shorter side to this, then centre-crop the input size
    mean: str = IMAGENET_MEAN  # on 0..1 pixels, applied by the service (the graph takes normalised floats)
    std: str = IMAGENET_STD  # per channel, likewise
    output_is: str = "logits"  # or "probabilities" when the graph ends in a softmax


def read_labels(path: Path) -> list[str]:
    """Keras-style index JSON ({"0": [wnid, name]}), a JSON list, or a text file with one label a line
    (a leading WordNet id "n01440764 " is dropped, and only the first of comma-separated synonyms kept)."""
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file: check --labels")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
            if isinstance(data, dict):
                return [
                    str(data[str(i)][-1] if isinstance(data[str(i)], list) else data[str(i)]) for i in range(len(data))
                ]
            return [str(x) for x in data]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise TrainingDataError(
                f'{path}: not a label index ({type(e).__name__}: {e}): give {{"0": [id, label], ...}}, a JSON list, '
                "or a text file with one label a line"
            ) from None
    labels = []
    for line in text.splitlines():
        line = line.strip()
        if line[:1] == "n" and line[1:9].isdigit() and line[9:10] == " ":
            line = line[10:].split(",")[0].strip()
        if line:
            labels.append(line)
    return labels


def make_card(cfg: Config) -> ModelCard:
    """Writes the folder (ONNX file and card) at cfg.out, or under build/models/ when it is not given."""
    if cfg.schema is not None:
        schema = read_schema(cfg.schema)
        if not cfg.onnx.is_file():
            raise TrainingDataError(f"{cfg.onnx}: no such file: check --onnx")
        cfg.out = cfg.out or run_dir(cfg, schema.spec.name)
        return brought_card(cfg.onnx, schema, cfg.data, cfg.out)
    labels = read_labels(cfg.labels)
    if not cfg.onnx.is_file():
        raise TrainingDataError(f"{cfg.onnx}: no such file: check --onnx")
    try:
        onnx.checker.check_model(str(cfg.onnx))
    except Exception as e:
        raise TrainingDataError(f"{cfg.onnx}: not a valid ONNX model ({e})") from e
    inputs, outputs = graph_signature(cfg.onnx)
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise TrainingDataError(f"{cfg.onnx}: expected one 4-D image input, found {[i.shape for i in inputs]}")
    shape = inputs[0].shape
    layout = "NCHW" if shape[1] == 3 else "NHWC" if shape[3] == 3 else None
    if layout is None:
        raise TrainingDataError(f"{cfg.onnx}: input {shape} has no channel dimension of 3 (NCHW or NHWC)")
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if not (isinstance(h, int) and isinstance(w, int)):
        raise TrainingDataError(f"{cfg.onnx}: the input's height and width must be fixed, got {shape}")
    if outputs[0].shape[-1] != len(labels):
        raise TrainingDataError(
            f"{cfg.labels}: {len(labels)} labels, but {cfg.onnx} outputs {outputs[0].shape[-1]} classes"
        )
    out = cfg.out = cfg.out or run_dir(cfg, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.onnx.resolve() != (out / ONNX_FILE).resolve():
        shutil.copyfile(cfg.onnx, out / ONNX_FILE)
    mean = tuple(float(x) for x in cfg.mean.split(","))
    std = tuple(float(x) for x in cfg.std.split(","))
    card = ModelCard(
        name=cfg.name,
        version=cfg.version,
        task="image_classification",
        description=cfg.description,
        **onnx_facts(out / ONNX_FILE),
        inputs=inputs,
        outputs=outputs,
        labels=labels,
        image=ImageInputCard(
            size=(h, w),
            resize_shorter=cfg.resize_shorter,
            layout=layout,
            dtype=inputs[0].dtype,
            normalise_in_graph=False,
            mean=mean,
            std=std,
            output_is=cfg.output_is,
        ),
        training={
            "source": {
                "onnx": cfg.onnx.name,
                "labels": cfg.labels.name,
                "labels_sha256": sha256_file(cfg.labels),
            }
        },
    )
    write_card(out, card)
    return card


def _make_and_say(cfg: Config) -> int:
    if cfg.out is not None:
        run_dir(cfg, cfg.name)  # --out inside the served models directory is refused before anything is written
    card = make_card(cfg)
    assert cfg.out is not None
    what = f"{len(card.labels)} labels" if card.labels else f"{len(card.numeric) + len(card.categorical)} fields"
    print(f"wrote the card of {card.name} v{card.version}: {what}, inputs {[t.name for t in card.inputs]}")
    return finish(card, cfg.out, cfg)


def main(argv: list[str] | None = None) -> int:
    return run_tool(Config, argv, __doc__ or "", _make_and_say)


if __name__ == "__main__":
    sys.exit(main())
