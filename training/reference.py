"""A reference for a card made before cards carried one, from the data the card names: the same
distributions the trainers make now (training/distributions.py).

    python -m training.reference models/housing-price [...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from service.cards import (
    CARD_FILE,
    ONNX_FILE,
    ModelCard,
    ReferenceCard,
    read_card,
    write_card,
)
from service.tasks.image.photos import probabilities
from training import distributions
from training.data_housing import REFERENCE_ROWS, housing_spec
from training.runinfo import sha256_file


def backfill(model_dir: Path) -> ReferenceCard:
    """The reference of a model our trainers made before cards carried one, from the data its card
    names (checked by sha256), the trainer's own split, and the model's own answers (onnxruntime).
    Only the card changes: model.onnx is not touched."""
    import onnxruntime as ort

    from training import train_adclick
    from training.data_cifar import load_cifar_tar
    from training.data_housing import load_housing, split_by_date

    card = read_card(model_dir)
    config = card.training.get("config", {})
    session = ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    if card.name == "housing-price":
        data = load_housing(_checked(Path(config["data"]), card), housing_spec(config.get("drop_features", "")))
        train, val = split_by_date(data, config["split"], config["train_before"])
        if config.get("refit"):  # the final fit saw every labelled sale: they are its reference, both ways
            every = train.concat(val)
            return _tabular(card, session, every, every, *REFERENCE_ROWS[True])
    elif card.name == "ad-click":
        with tempfile.TemporaryDirectory() as tmp:  # the generator again, with the card's seed and size
            generated = Path(tmp) / Path(config["generated_csv"]).name
            cfg = train_adclick.Config(impressions=config["impressions"], seed=config["seed"],
                                       generated_csv=generated, holdout=config["holdout"])  # fmt: skip
            data, _ = train_adclick.load(cfg)
            _checked(generated, card)
        train, val = train_adclick.split(cfg, data)
    elif card.task == "image_classification":
        photos, _ = load_cifar_tar(_checked(Path(config["val_tar"]), card))
        scores = np.concatenate([session.run(None, {card.inputs[0].name: photos[i : i + 500]})[0]
                                 for i in range(0, len(photos), 500)])  # fmt: skip
        assert card.image is not None
        return distributions.image(
            probabilities(scores, card.image.output_is), f"validation tar, {len(photos):,} photos"
        )
    else:
        raise SystemExit(f"{model_dir}: no trainer of ours made {card.name}; retrain it to get a reference")
    return _tabular(card, session, train, val, "training split", "validation split")


def _tabular(
    card: ModelCard, session: Any, train: Any, val: Any, features_from: str, outputs_from: str
) -> ReferenceCard:
    """The features of `train`, the model's answers on `val`, described as the trainer describes them."""
    outputs = session.run(None, {card.inputs[0].name: val.numeric, card.inputs[1].name: val.categorical})[0]
    rows = "sales" if card.name == "housing-price" else "impressions"
    return distributions.tabular(card.numeric, train.numeric, card.categorical, train.categorical, outputs,
                   f"{features_from}, {len(train):,} {rows}", f"{outputs_from}, {len(val):,} {rows}")  # fmt: skip


def _checked(path: Path, card: ModelCard) -> Path:
    """The data file, when its sha256 is the one the card recorded."""
    digest = sha256_file(path)
    recorded = {f["path"]: f["sha256"] for f in card.data.files} if card.data else {}
    if recorded.get(path.name) != digest:
        raise SystemExit(f"{path}: sha256 {digest} is not the {recorded.get(path.name)} the card recorded")
    return path


def main(argv: list[str] | None = None) -> int:
    """python -m training.reference models/housing-price [...]: writes each card's reference."""
    parser = argparse.ArgumentParser(
        description="Writes the reference distributions (for drift) into each model folder's card, from the data "
        "its card records (the same files, checked by sha256).\n\n" + (__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dirs", nargs="+", type=Path, metavar="MODEL_DIR", help="a folder holding card.json")
    for model_dir in parser.parse_args(argv).model_dirs:
        if not (model_dir / CARD_FILE).is_file():
            parser.error(f"{model_dir}: no {CARD_FILE} in it")
        card = read_card(model_dir)
        write_card(model_dir, card.model_copy(update={"reference": backfill(model_dir)}))
        print(f"{model_dir / CARD_FILE}: reference written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
