"""Bring a LightGBM model to nnserve: fit a click model on the simulated impressions, export it with
onnxmltools, and keep the latest fifth of the log as the card's held-out file.

    .venv/bin/python docs/examples/clicks_lightgbm.py --out build/ad-click-lgbm
    .venv/bin/python -m training.make_card --onnx build/ad-click-lgbm/model.onnx \\
        --schema docs/examples/clicks_lightgbm.toml --data build/ad-click-lgbm/held_out.csv --publish

The graph takes one float tensor [N, 8] in the schema's [inputs] order; the closed vocabularies go in as
their positions (`encoded = "position"`), which LightGBM splits on as categories.
tests/integration/test_bring_models.py runs this file and serves what it makes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightgbm
import numpy as np
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType

from service.measures import roc_auc
from training.contract import AD_CLICK
from training.data_adclick import Impressions, generate, write_csv

COLUMNS = ["age", "gender", "device", "category", "hour", "day_of_week", "advertiser_id", "site_id"]  # [inputs]
CATEGORIES = [1, 2, 3, 6, 7]  # gender, device, category (positions) and the two IDs: LightGBM's categories


def table(imp: Impressions) -> np.ndarray:
    """The impressions as the graph takes them: age, then the codes of the other columns (positions)."""
    codes = {f.name: imp.categorical[:, j] for j, f in enumerate(AD_CLICK.categorical)}
    return np.column_stack([imp.numeric[:, 0], *(codes[c] for c in COLUMNS[1:])]).astype(np.float64)


def fit(rows: int = 200_000, seed: int = 0) -> tuple[lightgbm.LGBMClassifier, Impressions, Impressions]:
    """The fitted model, and the impressions it was fit on and held out (the latest fifth)."""
    imp = generate(rows, seed=seed)
    cut = int(rows * 0.8)
    first, last = (Impressions(*(a[:cut] for a in vars(imp).values())),
                   Impressions(*(a[cut:] for a in vars(imp).values())))  # fmt: skip
    model = lightgbm.LGBMClassifier(n_estimators=200, learning_rate=0.05, random_state=seed, verbose=-1)
    model.fit(table(first), first.clicked, categorical_feature=CATEGORIES)
    return model, first, last


def export(model: lightgbm.LGBMClassifier, path: Path) -> Path:
    """One float input [N, 8]; zipmap=False gives the probabilities as a tensor [N, 2], not a list of maps."""
    graph = convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, len(COLUMNS)]))],
                             zipmap=False, target_opset=15)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph.SerializeToString())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/ad-click-lgbm"))
    args = parser.parse_args()
    model, first, last = fit()
    export(model, args.out / "model.onnx")
    write_csv(last, args.out / "held_out.csv")
    auc = roc_auc(last.clicked, model.predict_proba(table(last))[:, 1])
    oracle = roc_auc(last.clicked, last.p_true)
    print(f"fit on {len(first):,} impressions; on the {len(last):,} held out: AUC {auc:.4f} (oracle {oracle:.4f}); "
          f"wrote {args.out}/model.onnx and held_out.csv")  # fmt: skip


if __name__ == "__main__":
    main()
