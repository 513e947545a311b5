"""The service's payload logs, with their outcomes joined, back as training data in the trainer's own layout.

    python -m training.payload_data --logs /var/log/nnserve --model models/housing-price --out logged.csv
    python -m training.train_housing --data logged.csv

The payload log (service/dataplane/payloads.py) holds what a model was asked and answered; outcomes.sqlite beside
it holds the outcomes posted to /v1/<model>/feedback, by request id. A logged request whose outcome came
back is a labelled row: this writes every such row as a line of the file its trainer reads with --data,
so a model is retrained on what it was actually sent, with nothing new to learn about the trainers:

- housing-price: the King County columns the trainer reads (`date` is the request's sale_date), `price`
  the sale price posted back;
- ad-click: the simulated log's columns, `clicked` the outcome, `timestamp` the request's time (epoch s);
- a model trained from a click log (train_clicklog): the log's own layout, from the schema its card
  records (delimiter, header, column order), the label the outcome and the timestamp column the request's
  time in the schema's format; ignored columns are left empty;
- a model brought with a schema file (training/make_card.py) or trained by `train_tabular`: the data
  file's layout its card records (`training.layout`: the fields' columns, then the label's).

--base FILE first copies the rows of the data the model was trained on (the trainer's columns of it),
so the logged rows add to it: the trainers split by time, so the logged rows, the latest, become the
validation split. (For a click log's layout, `cat` does the same.)

What the request held is what is written: a field the request left out was logged at the default the
service filled in (housing's sale_date: the last training day), so send every field you mean to
train on. Photos are logged by size only (not their pixels) and cannot be turned back into training
data: image models are refused with that reason.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.cards import CARD_FILE, ModelCard, read_card
from service.dataplane.feedback import DB_FILE
from service.models.versions import version_key
from training.contract import AD_CLICK, HOUSING, TabularSpec
from training.data_tabular import column
from training.runinfo import TrainingDataError, run_tool

# The contract models' trainers: the spec whose columns they read, the outcome's column, and the time
# column when the features have none of their own.
CONTRACT_LAYOUTS: dict[str, tuple[TabularSpec, str, str | None]] = {
    HOUSING.name: (HOUSING, "price", None),
    AD_CLICK.name: (AD_CLICK, "clicked", "timestamp"),
}


@dataclass
class Config:
    logs: Path | None = None  # the payload log directory (NNSERVE_PAYLOAD_LOG_DIR): payloads-*.jsonl*, outcomes.sqlite
    model: Path | None = None  # the model's folder (its card says the model's name and layout), e.g. models/ad-click
    version: str = ""  # only the requests this version answered (empty: every version)
    out: Path | None = None  # the file to write, in the trainer's layout (never a file under models/)
    base: Path | None = None  # first copy this file's rows (the model's own training data; contract models only)


@dataclass
class Row:
    time: float  # when the request was answered, epoch seconds
    features: dict[str, Any]  # the validated request row, as logged
    outcome: Any


def model_card(folder: Path) -> ModelCard:
    """The card in `folder`, or in its latest version folder when the model is versioned."""
    if (folder / CARD_FILE).is_file():
        return read_card(folder)
    versions = sorted((p for p in folder.glob(f"*/{CARD_FILE}")), key=lambda p: version_key(p.parent.name))
    if not folder.is_dir() or not versions:
        raise TrainingDataError(f"--model {folder}: no {CARD_FILE} there or in a version folder under it")
    return read_card(versions[-1].parent)


def log_files(logs: Path) -> list[Path]:
    """Every worker's log and its rotated files."""
    files = sorted(logs.glob("payloads-*.jsonl*"))
    if not files:
        raise TrainingDataError(f"--logs {logs}: no payloads-*.jsonl files: is it NNSERVE_PAYLOAD_LOG_DIR?")
    return files


def entries(files: list[Path]) -> Iterator[dict[str, Any]]:
    """Their entries. A line cut short (a worker killed while writing) is skipped and said."""
    for path in files:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    print(f"{path}: line {n}: not a whole JSON entry, skipped", file=sys.stderr)


def outcomes(logs: Path, model: str) -> dict[str, list[Any]]:
    """request id -> the outcomes posted for it (one per row), from the feedback table."""
    path = logs / DB_FILE
    if not path.is_file():
        raise TrainingDataError(f"--logs {logs}: no {DB_FILE}: no outcome was ever posted to /v1/{model}/feedback")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        found = db.execute("SELECT request_id, outcomes FROM feedback WHERE model = ?", (model,)).fetchall()
    return {request_id: json.loads(text) for request_id, text in found}


def labelled(logs: Path, card: ModelCard, version: str) -> tuple[list[Row], dict[str, int]]:
    """The logged rows of `card`'s model whose outcomes came back, oldest first, and what was counted."""
    files = log_files(logs)
    known = outcomes(logs, card.name)
    rows: list[Row] = []
    counts = {"entries": 0, "with_outcomes": 0, "rows": 0}
    seen: set[str] = set()
    for entry in entries(files):
        if entry.get("model") != card.name or (version and entry.get("version") != version):
            continue
        counts["entries"] += 1
        request_id = entry["request_id"]
        if request_id not in known or request_id in seen:
            continue
        seen.add(request_id)
        when = dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
        counts["with_outcomes"] += 1
        rows += [Row(when, f, o) for f, o in zip(entry["request"], known[request_id], strict=True)]
    rows.sort(key=lambda r: r.time)
    counts["rows"] = len(rows)
    return rows, counts


def _clock(seconds: float, time_format: str) -> str:
    """A time in a click log's timestamp format (training/clicklog_schema.py's TIME_FORMATS)."""
    at = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return {
        "epoch_s": str(int(seconds)),
        "epoch_ms": str(int(seconds * 1000)),
        "YYMMDDHH": at.strftime("%y%m%d%H"),
        "YYYYMMDDHH": at.strftime("%Y%m%d%H"),
        "iso": at.strftime("%Y-%m-%dT%H:%M:%S"),
    }[time_format]


def _cell(value: Any) -> Any:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else value


def _outcome(value: Any, task: str) -> Any:
    """Clicked as 1/0 (feedback takes true, 1 or 1.0), the trainers' integer label; a price as given."""
    return int(value) if task == "binary_classification" else value


def write_contract(rows: list[Row], spec: TabularSpec, outcome: str, clock: str | None, out: Path,
                   base: Path | None) -> None:  # fmt: skip
    features = [*spec.numeric, *spec.categorical]
    header = [column(f) for f in features] + [outcome] + ([clock] if clock else [])
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        if base is not None:
            with base.open(newline="", encoding="utf-8") as original:
                reader = csv.DictReader(original)
                missing = [c for c in header if c not in (reader.fieldnames or [])]
                if missing:
                    raise TrainingDataError(f"--base {base}: no column(s) {missing}: give the model's training file")
                writer.writerows([row[c] for c in header] for row in reader)
        for row in rows:
            cells = [_cell(row.features.get(f.name)) for f in features] + [_outcome(row.outcome, spec.task)]
            writer.writerow(cells + ([int(row.time)] if clock else []))


def write_layout(rows: list[Row], layout: dict[str, Any], task: str, out: Path, base: Path | None) -> None:
    """A card's declared data layout: the fields' columns, then the label; --base's rows first."""
    header = [*layout["columns"], layout["label"]]
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=layout.get("delimiter", ","))
        writer.writerow(header)
        if base is not None:
            with base.open(newline="", encoding="utf-8") as original:
                reader = csv.DictReader(original)
                if missing := [c for c in header if c not in (reader.fieldnames or [])]:
                    raise TrainingDataError(f"--base {base}: no column(s) {missing}: give the model's data file")
                writer.writerows([row[c] for c in header] for row in reader)
        for row in rows:
            cells = [_cell(row.features.get(name)) for name in layout["fields"]]
            writer.writerow([*cells, _outcome(row.outcome, task)])


def write_clicklog(rows: list[Row], schema: dict[str, Any], out: Path) -> None:
    columns = schema["columns"]
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=schema["delimiter"], lineterminator="\n")
        if schema["header"]:
            writer.writerow([c["name"] for c in columns])
        for row in rows:
            cells = []
            for c in columns:
                if c["role"] == "label":
                    cells.append(_outcome(row.outcome, "binary_classification"))
                elif c["role"] == "timestamp":
                    cells.append(_clock(row.time, c.get("time_format", "epoch_s")))
                elif c["role"] in ("ignore", "probability"):
                    cells.append("")
                else:
                    cells.append(_cell(row.features.get(c["name"])))
            writer.writerow(cells)


def export(cfg: Config) -> dict[str, int]:
    if cfg.logs is None or cfg.model is None or cfg.out is None:
        raise TrainingDataError("give --logs, --model and --out (--help says what each is)")
    if cfg.out.resolve().is_relative_to(Path("models").resolve()):
        raise TrainingDataError(f"--out {cfg.out}: not under models/, which holds served models only")
    card = model_card(cfg.model)
    schema, layout = card.training.get("schema"), card.training.get("layout")
    if card.task == "image_classification":
        raise TrainingDataError(f"{card.name}: photos are logged by their size, not their pixels: "
                                "they cannot be turned back into training data")  # fmt: skip
    if schema is None and layout is None and card.name not in CONTRACT_LAYOUTS:
        raise TrainingDataError(f"{card.name}: no trainer's layout is known for it (neither one of "
                                f"{sorted(CONTRACT_LAYOUTS)}, nor trained from a click log's schema, nor a card "
                                "with a data layout)")  # fmt: skip
    if schema is not None and cfg.base is not None:
        raise TrainingDataError("--base: a click log's layout is the log's own; join the files with cat")
    rows, counts = labelled(cfg.logs, card, cfg.version)
    if not rows:
        raise TrainingDataError(f"--logs {cfg.logs}: {counts['entries']} logged {card.name} request(s), none with "
                                "an outcome posted back: nothing to write")  # fmt: skip
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    partial = cfg.out.with_name(f".{cfg.out.name}.partial")  # nothing half-written at --out
    try:
        if schema is not None:
            write_clicklog(rows, schema, partial)
        elif layout is not None:
            write_layout(rows, layout, card.task, partial, cfg.base)
        else:
            write_contract(rows, *CONTRACT_LAYOUTS[card.name], partial, cfg.base)
        partial.replace(cfg.out)
    finally:
        partial.unlink(missing_ok=True)
    return counts


def _export_and_say(cfg: Config) -> int:
    counts = export(cfg)
    print(f"{cfg.out}: {counts['rows']} labelled row(s) from {counts['with_outcomes']} of {counts['entries']} "
          "logged request(s) (the rest have no outcome posted back)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_tool(Config, argv, __doc__ or "", _export_and_say)


if __name__ == "__main__":
    sys.exit(main())
