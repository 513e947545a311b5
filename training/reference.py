"""The card's reference distributions, which the service measures drift against (service/dataplane/drift.py).

Features on the training split (what the model learnt from: a 1,000,000-row sample where it is larger),
outputs on the validation split (what the model answers on data it did not see), binned as the
service bins live rows, by the same function (service.dataplane.drift.bin_of):

- numbers: by deciles, a value that holds 5% of the rows or more in a bin of its own; a number with at
  most 20 distinct values (counts, flags, grades) gets one bin per value, so a shift between two shows;
- codes (closed vocabularies, IDs, predicted classes): the 20 most frequent codes, one bin each, then
  one bin for every other code.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.cards import (
    CARD_FILE,
    ONNX_FILE,
    CategoricalCard,
    Distribution,
    ModelCard,
    NumericCard,
    ReferenceCard,
    read_card,
    write_card,
)
from service.dataplane.drift import bin_of
from service.tasks.image.photos import probabilities
from training.data_housing import housing_spec
from training.runinfo import sha256_file

QUANTILES = 10
DISTINCT_AS_BINS = 20
TOP_CODES = 20
SAMPLE = 1_000_000


def numbers(name: str, kind: str, values: np.ndarray) -> Distribution:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    distinct = np.unique(finite)
    if len(distinct) <= DISTINCT_AS_BINS:
        edges = distinct[1:]  # bin i: distinct[i] alone
    else:  # deciles; a value holding a twentieth of the rows or more (0 for "never renovated") gets its own bin
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, QUANTILES + 1)[1:-1]))
        heavy = [e for e in edges if np.mean(finite == e) >= 1 / (2 * QUANTILES)]
        edges = np.unique(np.concatenate([edges, np.nextafter(heavy, np.inf)]))
    return _fill(Distribution(name=name, kind=kind, edges=[float(e) for e in edges], fractions=[]), values)


def codes(name: str, kind: str, values: np.ndarray) -> Distribution:
    found, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    top = found[np.argsort(-counts, kind="stable")[:TOP_CODES]]
    return _fill(Distribution(name=name, kind=kind, codes=[int(c) for c in top], fractions=[]), values)


def _fill(d: Distribution, values: np.ndarray) -> Distribution:
    counts = np.bincount(bin_of(d, values), minlength=d.bins())
    return d.model_copy(update={"fractions": [round(float(c), 6) for c in counts / max(1, len(values))]})


def tabular(
    numeric_cards: Sequence[NumericCard],
    numeric: np.ndarray,
    categorical_cards: Sequence[CategoricalCard],
    categorical: np.ndarray,
    outputs: np.ndarray,
    features_from: str,
    outputs_from: str,
    seed: int = 0,
) -> ReferenceCard:
    """A table model's reference: each feature (graph input columns: numbers as the graph takes them,
    codes as positions or buckets), then its output, in the order the service tracks them."""
    rows = len(numeric)
    if rows > SAMPLE:
        pick = np.sort(np.random.default_rng(seed).choice(rows, SAMPLE, replace=False))
        numeric, categorical = numeric[pick], categorical[pick]
        features_from += f" (a random {SAMPLE:,} of its {rows:,} rows)"
    distributions = [
        numbers(c.name, "time" if c.date else "feature", numeric[:, j]) for j, c in enumerate(numeric_cards)
    ]
    distributions += [codes(c.name, "feature", categorical[:, j]) for j, c in enumerate(categorical_cards)]
    distributions.append(numbers("output", "output", np.asarray(outputs).reshape(-1)))
    return ReferenceCard(features_from=features_from, outputs_from=outputs_from, distributions=distributions)


def image(probabilities: np.ndarray, outputs_from: str) -> ReferenceCard:
    """A classifier's reference: its top-1 confidence and its predicted classes on held-out photos."""
    return ReferenceCard(
        features_from="none: a photo's pixels are not tracked",
        outputs_from=outputs_from,
        distributions=[
            numbers("top1_confidence", "output", probabilities.max(axis=1)),
            codes("predicted_class", "output", probabilities.argmax(axis=1)),
        ],
    )


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
        return image(probabilities(scores, card.image.output_is), f"validation tar, {len(photos):,} photos")
    else:
        raise SystemExit(f"{model_dir}: no trainer of ours made {card.name}; retrain it to get a reference")
    outputs = session.run(None, {card.inputs[0].name: val.numeric, card.inputs[1].name: val.categorical})[0]
    rows = "sales" if card.name == "housing-price" else "impressions"
    return tabular(card.numeric, train.numeric, card.categorical, train.categorical, outputs,
                   f"training split, {len(train):,} {rows}", f"validation split, {len(val):,} {rows}")  # fmt: skip


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
