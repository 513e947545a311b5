"""Bring a scikit-learn model to nnserve: fit a pipeline on the King County sales, export it with
skl2onnx, and keep the months it did not see as the card's held-out file.

    .venv/bin/python docs/examples/housing_sklearn.py --out build/housing-gbm
    .venv/bin/python -m training.make_card --onnx build/housing-gbm/model.onnx \\
        --schema docs/examples/housing_gbm.toml --data build/housing-gbm/held_out.csv --publish

The pipeline one-hot encodes the ZIP code and fits gradient-boosted trees on the house's numbers and
the sale date (as a decimal year, which is how the service sends a date to a graph). Exported with one
input per DataFrame column, so the schema needs no [inputs] table: each field feeds the input of its name.
tests/integration/test_bring_models.py runs this file and serves what it makes.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from service.tasks.tabular.encoder import decimal_year  # the service's own date -> number
from training.data_tabular import parse_date

SALES = Path(__file__).resolve().parents[3] / "shared/data/housing/kc_house_sales_2014-05_to_2015-03.csv"
NUMBERS = ["sqft_living", "bedrooms", "bathrooms", "sqft_lot", "floors", "waterfront", "view", "condition",
           "grade", "yr_built", "yr_renovated", "sqft_basement", "sale_date"]  # fmt: skip
SPLIT = "2015-02-01"  # train before, hold out from (February-March 2015, as our own model's card)


def frame(rows: list[dict]) -> pd.DataFrame:
    """Request-shaped rows (the schema's field names; dates as YYYY-MM-DD or the file's 20150201T000000)
    -> the DataFrame the pipeline takes."""
    table = pd.DataFrame({name: [row[name] for row in rows] for name in [*NUMBERS, "zipcode"]})
    table["sale_date"] = [decimal_year(parse_date(str(d))) for d in table["sale_date"]]
    table[NUMBERS] = table[NUMBERS].astype(np.float64)
    table["zipcode"] = table["zipcode"].astype(str)
    return table


def read_sales(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{**row, "sale_date": row["date"]} for row in csv.DictReader(f)]


def fit(path: Path = SALES, seed: int = 0) -> tuple[Pipeline, list[dict], list[dict]]:
    """The fitted pipeline, the training rows and the held-out rows."""
    sales = read_sales(path)
    cut = decimal_year(parse_date(SPLIT))
    train = [r for r in sales if decimal_year(parse_date(r["date"])) < cut]
    held_out = [r for r in sales if decimal_year(parse_date(r["date"])) >= cut]
    zipcode = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    columns = ColumnTransformer([("numbers", "passthrough", NUMBERS), ("zip", zipcode, ["zipcode"])])
    trees = HistGradientBoostingRegressor(max_iter=1000, learning_rate=0.05, random_state=seed)
    model = Pipeline([("columns", columns), ("trees", trees)])
    model.fit(frame(train), np.array([float(r["price"]) for r in train]))
    return model, train, held_out


def write_rows(rows: list[dict], path: Path) -> Path:
    """Sales as the file has them (the held-out file make_card reads with --data)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "sale_date"])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k != "sale_date"} for r in rows)
    return path


def export(model: Pipeline, path: Path) -> Path:
    """One graph input per column, named as the column: numbers float32 [N, 1], the ZIP code a string."""
    inputs = [(name, FloatTensorType([None, 1])) for name in NUMBERS] + [("zipcode", StringTensorType([None, 1]))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_onnx(model, initial_types=inputs).SerializeToString())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/housing-gbm"))
    parser.add_argument("--data", type=Path, default=SALES)
    args = parser.parse_args()
    model, train, held_out = fit(args.data)
    export(model, args.out / "model.onnx")
    write_rows(held_out, args.out / "held_out.csv")
    price = np.array([float(r["price"]) for r in held_out])
    predicted = model.predict(frame(held_out))
    r2 = 1 - np.sum((price - predicted) ** 2) / np.sum((price - price.mean()) ** 2)
    print(f"fit on {len(train):,} sales; on the {len(held_out):,} held out: R² {r2:.4f}, "
          f"MAE ${np.mean(np.abs(price - predicted)):,.0f}; wrote {args.out}/model.onnx and held_out.csv")  # fmt: skip


if __name__ == "__main__":
    main()
