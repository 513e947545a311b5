"""Reading a click log as it comes, by its declared schema (training/clicklog_schema.py): CSV or TSV,
plain or gzip, in blocks, each block turned at once into the compact arrays training needs.

Memory is the encoded log, 4 bytes per feature per row (IDs are hashed into bounded bucket codes by
service/hashing.py, never sized by their values), plus one block of text being parsed: 20 million
Avazu rows are 1.7 GB, whatever their IDs look like. Every problem in the data stops the run with one
line naming the file, the line, the column and what to do (a TrainingDataError).
"""

from __future__ import annotations

import gzip
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv
from tqdm import tqdm

from service.hashing import bucket, buckets_of_bytes
from training.clicklog_schema import Column, Schema
from training.runinfo import TrainingDataError, bars

log = logging.getLogger(__name__)
BLOCK_BYTES = 16 << 20  # text parsed at a time: ~100k rows of the Avazu layout


@dataclass
class ClickLog:
    numeric: np.ndarray  # float32 [N, numeric columns], missing values filled
    codes: np.ndarray  # int32 [N, categorical + id columns]: closed-set positions and hash buckets
    label: np.ndarray  # uint8 [N]
    time: np.ndarray | None  # int64 [N] seconds, when the schema has a timestamp
    p_true: np.ndarray | None  # float32 [N], when the log's true probabilities are known
    facts: dict = field(default_factory=dict)  # rows, bytes, seconds, constant columns: for the card and log

    def __len__(self) -> int:
        return len(self.label)

    def take(self, rows: np.ndarray | slice) -> ClickLog:
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return ClickLog(self.numeric[rows], self.codes[rows], self.label[rows], pick(self.time),
                        pick(self.p_true), self.facts)  # fmt: skip


def code_columns(schema: Schema) -> list[Column]:
    """The columns that become codes, in the order of ClickLog.codes and of the model's categorical input."""
    return [c for c in schema.features if c.role in ("categorical", "id")]


def read_log(
    path: Path, schema: Schema, limit: int = 0, quiet: bool = False, shard: tuple[int, int] = (0, 1)
) -> ClickLog:
    """The whole log (or its first `limit` rows), encoded. `<path>.p_true`, when present beside a log
    whose schema has no probability column, gives the true probabilities (our generated logs).
    shard=(k, n) keeps rows k, k + n, k + 2n, ... (torchrun's process k of n): each process holds a
    share of the log, every one of them a sample of the whole period."""
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file: check --data")
    names = _header(path, schema)
    wanted = [c for c in schema.columns if c.role != "ignore"]
    numeric_cols, code_cols = schema.role("numeric"), code_columns(schema)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("numeric", "codes", "label", "time", "p_true")}
    rows, started, examples = 0, time.perf_counter(), {}
    raw = pa.OSFile(str(path))
    stream = pa.CompressedInputStream(raw, "gzip") if _gzipped(path) else raw
    reader = _open(stream, path, schema, names, wanted)
    bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"reading {path.name}",
               disable=quiet or not bars(), dynamic_ncols=True)  # fmt: skip
    with raw, bar:
        while not limit or rows < limit:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except OSError as e:  # a truncated or corrupt gzip stream
                raise TrainingDataError(f"{path}: after line {rows + schema.header}: {_short(e)}: the file is "
                                        "damaged or still being written") from None  # fmt: skip
            except pa.ArrowInvalid as e:
                raise TrainingDataError(
                    f"{path}: after line {rows + schema.header}: {_short(e)}: every line needs the schema's "
                    f"{len(names)} columns, separated by {schema.delimiter!r}"
                ) from None
            if limit:
                batch = batch.slice(0, limit - rows)
            column = {c.name: batch.column(c.name) for c in wanted}
            first, step = (shard[0] - rows) % shard[1], shard[1]  # this process's rows of the block
            if step > 1:
                column = {
                    name: values.take(pa.array(np.arange(first, len(batch), step))) for name, values in column.items()
                }
            at = _Where(path, rows + 1 + schema.header + first, step)
            kept = len(column[schema.label.name])
            parts["numeric"].append(np.stack([_numeric(column[c.name], c, at) for c in numeric_cols], axis=1)
                                    if numeric_cols else np.zeros((kept, 0), np.float32))  # fmt: skip
            parts["codes"].append(np.stack([_code(column[c.name], c, at) for c in code_cols], axis=1)
                                  if code_cols else np.zeros((kept, 0), np.int32))  # fmt: skip
            parts["label"].append(_label(column[schema.label.name], schema.label, at))
            if schema.timestamp is not None:
                parts["time"].append(_time(column[schema.timestamp.name], schema.timestamp, at))
            for c in schema.role("probability"):
                parts["p_true"].append(_numeric(column[c.name], c, at))
            if rows == 0:  # the first row's raw values: the card's example request
                examples = {c.name: column[c.name][0].as_py() for c in schema.features if kept}
            rows += len(batch)
            bar.n = raw.tell()
            bar.set_postfix(rows=f"{rows:,}", refresh=False)
            bar.update(0)
    if rows == 0:
        raise TrainingDataError(f"{path}: no data rows{' after the header' if schema.header else ''}: give a log")
    seconds = time.perf_counter() - started
    data = ClickLog(*(_joined(parts[k]) for k in ("numeric", "codes", "label", "time", "p_true")))
    if data.p_true is None and Path(f"{path}.p_true").is_file():
        data.p_true = np.loadtxt(f"{path}.p_true", dtype=np.float32, max_rows=rows)[shard[0] :: shard[1]]
    data.facts = {"rows": rows, "rows_kept": len(data), "bytes": path.stat().st_size, "read_seconds": round(seconds, 1),
                  "rows_per_second": round(rows / seconds), "examples": examples}  # fmt: skip
    log.info("%s: %s rows in %.1f s (%s rows/s)", path, f"{rows:,}", seconds, f"{rows / seconds:,.0f}")
    return data


@dataclass(frozen=True)
class _Where:
    path: Path
    first_line: int  # the file's line number of the block's first row (this process's, under torchrun)
    step: int = 1  # lines between two rows of this process

    def fail(self, column: Column, row: int, value: object, problem: str) -> TrainingDataError:
        return TrainingDataError(
            f"{self.path}: line {self.first_line + row * self.step}, column {column.name!r}: {value!r} {problem}"
        )


def _gzipped(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _header(path: Path, schema: Schema) -> list[str]:
    """The log's column names: its header line (checked against the schema), or the schema's order."""
    declared = [c.name for c in schema.columns]
    if not schema.header:
        return declared
    try:
        with gzip.open(path, "rt") if _gzipped(path) else open(path) as f:
            first = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise TrainingDataError(f"{path}: not readable as text ({e}): give a CSV/TSV log, plain or gzip") from None
    names = first.split(schema.delimiter)
    missing = [n for n in declared if n not in names]
    if missing:
        raise TrainingDataError(
            f"{path}: line 1, column {missing[0]!r}: declared in the schema ({schema.source}) but not in the "
            f"header ({', '.join(names[:30])}): fix the schema, or check the delimiter {schema.delimiter!r}"
        )
    undeclared = [n for n in names if n not in declared]
    if undeclared:
        log.warning("%s: column(s) %s not in the schema: ignored", path, ", ".join(undeclared))
    return names


def _open(stream: pa.NativeFile, path: Path, schema: Schema, names: list[str], wanted: list[Column]):
    read = csv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True,
                           **({} if schema.header else {"column_names": names}))  # fmt: skip
    parse = csv.ParseOptions(delimiter=schema.delimiter, quote_char='"')
    convert = csv.ConvertOptions(
        column_types={c.name: pa.string() for c in wanted},
        include_columns=[c.name for c in wanted],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        return csv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as e:
        raise TrainingDataError(f"{path}: {_short(e)}: check the file and the schema's delimiter") from None
    except OSError as e:  # a truncated or corrupt gzip stream, within the first block
        raise TrainingDataError(f"{path}: {_short(e)}: the file is damaged or still being written") from None


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0]
    return text if len(text) < 200 else text[:200] + "..."


def _strings(array: pa.Array) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _numeric(array: pa.Array, c: Column, at: _Where) -> np.ndarray:
    array = _strings(array)
    empty = pc.equal(pc.utf8_trim_whitespace(array), "")
    if c.missing is None and c.role == "numeric" and pc.any(empty).as_py():
        row = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
        raise at.fail(c, row, "", "is empty: give `missing = <number>` in the schema for empty fields")
    filled = pc.if_else(empty, str(c.missing if c.missing is not None else "nan"), array)
    try:
        values = pc.cast(filled, pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        texts = array.to_pylist()
        row = next(i for i, t in enumerate(texts) if not _is_number(t, c))
        raise at.fail(c, row, texts[row], "is not a number: correct or remove that line") from None
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise at.fail(c, row, array[row].as_py(), "is not a finite number: correct or remove that line")
    return values.astype(np.float32)


def _is_number(text: str, c: Column) -> bool:
    try:
        float(text if text.strip() else str(c.missing))
        return True
    except ValueError:
        return False


def _code(array: pa.Array, c: Column, at: _Where) -> np.ndarray:
    array = _strings(array)
    if c.role == "categorical":
        index = pc.index_in(array, value_set=pa.array(c.values))
        if index.null_count:
            row = int(np.flatnonzero(index.is_null().to_numpy(zero_copy_only=False))[0])
            raise at.fail(c, row, array[row].as_py(), f"is not one of the declared values {list(c.values)}: "
                          "add it to the schema's values, or correct that line")  # fmt: skip
        return index.to_numpy().astype(np.int32)
    if not c.optional and len(array):
        empty = pc.equal(pc.binary_length(array), 0)
        if pc.any(empty).as_py():
            row = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
            raise at.fail(c, row, "", "is empty: mark the column `optional = true` if an empty ID is a value")
    offsets_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offsets_type)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return buckets_of_bytes(data, offsets[:-1], np.diff(offsets), salt_of(c), c.buckets).astype(np.int32)


def salt_of(c: Column) -> int:
    """A column's hashing salt: from its name, so reordering a schema's columns changes nothing."""
    return bucket(c.name, 0, 1 << 31)


def _label(array: pa.Array, c: Column, at: _Where) -> np.ndarray:
    array = pc.utf8_trim_whitespace(_strings(array))
    good = pc.is_in(array, value_set=pa.array(["0", "1"]))
    if not pc.all(good).as_py():
        row = int(np.flatnonzero(~good.to_numpy(zero_copy_only=False))[0])
        raise at.fail(c, row, array[row].as_py(), "is not a label: give 0 (no click) or 1 (click)")
    return pc.equal(array, "1").to_numpy(zero_copy_only=False).astype(np.uint8)


def _time(array: pa.Array, c: Column, at: _Where) -> np.ndarray:
    """Seconds since 1970 from the column's declared format; a value that is not one stops the run."""
    array = _strings(array)
    try:
        return _seconds(array, c.time_format)
    except ValueError:
        texts = array.to_pylist()
        row = next(i for i, text in enumerate(texts) if not _parses(text, c.time_format))
        raise at.fail(c, row, texts[row], f"is not a time in the {c.time_format} format: correct that line or "
                      "the schema's timestamp format") from None  # fmt: skip


def _parses(text: str, time_format: str) -> bool:
    try:
        _seconds(pa.array([text]), time_format)
        return True
    except ValueError:
        return False


def _seconds(array: pa.Array, time_format: str) -> np.ndarray:
    try:
        if time_format == "iso":
            return pc.cast(pc.cast(array, pa.timestamp("s")), pa.int64()).to_numpy()
        number = pc.cast(array, pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(str(e)) from None
    if time_format == "epoch_s":
        return number
    if time_format == "epoch_ms":
        return number // 1000
    year = number // 1_000_000 + (2000 if time_format == "YYMMDDHH" else 0)
    month, day, hour = number // 10_000 % 100, number // 100 % 100, number % 100
    if ((month < 1) | (month > 12) | (day < 1) | (day > 31) | (hour > 23) | (number < 0)).any():
        raise ValueError("not a time")
    months = (year - 1970) * 12 + month - 1
    days = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + day - 1
    return days * 86_400 + hour * 3_600


def _joined(parts: list[np.ndarray]) -> np.ndarray | None:
    """The blocks as one array, freeing each block as it is copied: the peak is the result plus one block."""
    if not parts:
        return None
    out = np.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    at = 0
    while parts:
        part = parts.pop(0)
        out[at : at + len(part)] = part
        at += len(part)
    return out
