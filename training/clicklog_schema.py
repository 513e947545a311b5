"""A click log's declared schema: which column is the label, the time, a number, a closed category or
an open ID. A small TOML file; presets for the Avazu and Criteo layouts and our simulated log live in
training/schemas/. The roles and their options are documented in docs/clicklogs.md.

    [columns]
    click = "label"
    hour = { role = "timestamp", format = "YYMMDDHH" }
    site_id = "id"                                      # hashed into `buckets` codes
    I1 = { role = "numeric", missing = 0, log = true }
    device = { role = "categorical", values = ["mobile", "desktop"] }
    id = "ignore"
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from training.runinfo import TrainingDataError

PRESETS = Path(__file__).parent / "schemas"
ROLES = ("label", "timestamp", "numeric", "categorical", "id", "ignore", "probability")
TIME_FORMATS = ("epoch_s", "epoch_ms", "YYMMDDHH", "YYYYMMDDHH", "iso")
OPTIONS = {
    "label": set(),
    "timestamp": {"format"},
    "numeric": {"missing", "log"},
    "categorical": {"values", "default"},
    "id": {"buckets", "optional"},
    "ignore": set(),
    "probability": set(),
}
DEFAULT_BUCKETS = 1 << 18  # per ID column; `id_buckets` at the top of the schema, or per column


@dataclass(frozen=True)
class Column:
    name: str  # as in the log's header (or its position's name when the log has none)
    role: str
    description: str = ""
    time_format: str = ""  # timestamp
    missing: float | None = None  # numeric: the value an empty field stands for; None: empty is an error
    log: bool = False  # numeric: counts and amounts enter the network as log(1 + x)
    values: tuple[str, ...] = ()  # categorical: the closed set, code = position
    default: str | None = None  # categorical: the value a request may leave out
    buckets: int = DEFAULT_BUCKETS  # id
    optional: bool = False  # id: an empty field is a value of its own, and a request may leave it out


@dataclass(frozen=True)
class Schema:
    name: str  # the served model's name
    description: str
    delimiter: str
    header: bool  # False: the columns are the file's, in the schema's order
    columns: tuple[Column, ...]
    source: str  # the preset's name or the file's path, for the card and for messages

    def role(self, role: str) -> list[Column]:
        return [c for c in self.columns if c.role == role]

    @property
    def label(self) -> Column:
        return self.role("label")[0]

    @property
    def timestamp(self) -> Column | None:
        found = self.role("timestamp")
        return found[0] if found else None

    @property
    def features(self) -> list[Column]:
        return [c for c in self.columns if c.role in ("numeric", "categorical", "id")]

    def with_buckets(self, buckets: int) -> Schema:
        """The schema with every ID column hashed into `buckets` codes (the trainer's --buckets)."""
        columns = tuple(dataclasses.replace(c, buckets=buckets) if c.role == "id" else c for c in self.columns)
        return dataclasses.replace(self, columns=columns)


def load_schema(spec: str) -> Schema:
    """A preset's name (avazu, criteo, simulated) or a TOML file's path -> the checked schema."""
    path = PRESETS / f"{spec}.toml" if (PRESETS / f"{spec}.toml").is_file() else Path(spec)
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in PRESETS.glob("*.toml")))
        raise TrainingDataError(f"--schema {spec}: neither a preset ({presets}) nor a file: give one of them")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TrainingDataError(f"{path}: not valid TOML ({e}): fix the schema file") from None
    return _checked(raw, spec if path.parent == PRESETS else str(path), path)


def _checked(raw: dict, source: str, path: Path) -> Schema:
    def fail(where: str, problem: str) -> TrainingDataError:
        return TrainingDataError(f"{path}: {where}: {problem}")

    unknown = set(raw) - {"name", "description", "delimiter", "header", "id_buckets", "columns"}
    if unknown:
        raise fail(f"key {sorted(unknown)[0]!r}", "unknown; the top level takes name, description, delimiter, "
                   "header, id_buckets and [columns]")  # fmt: skip
    if not isinstance(raw.get("columns"), dict) or not raw["columns"]:
        raise fail("[columns]", "missing or empty: map each of the log's columns to a role")
    buckets = raw.get("id_buckets", DEFAULT_BUCKETS)
    columns = tuple(_column(name, value, buckets, fail) for name, value in raw["columns"].items())
    for role, count in (("label", 1), ("timestamp", None)):
        found = [c.name for c in columns if c.role == role]
        if (count and len(found) != count) or len(found) > 1:
            raise fail("[columns]", f"{len(found)} columns have role {role!r} ({found}); give exactly one"
                       if count else f"{len(found)} timestamp columns ({found}); give at most one")  # fmt: skip
    if not any(c.role in ("numeric", "categorical", "id") for c in columns):
        raise fail("[columns]", "no feature column (numeric, categorical or id): nothing to learn from")
    delimiter = raw.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise fail("delimiter", f'{delimiter!r}: give one character, e.g. "," or "\\t"')
    name = raw.get("name", "ad-click-" + path.stem)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise fail("name", f"{name!r}: the served model's name takes letters, digits, - and _")
    description = raw.get("description", f"Probability of a click, from a log declared by {path.name}.")
    return Schema(name, description, delimiter, bool(raw.get("header", True)), columns, source)


def _column(name: str, value: object, buckets: int, fail) -> Column:
    where = f"column {name!r}"
    options = {"role": value} if isinstance(value, str) else value
    if not isinstance(options, dict) or options.get("role") not in ROLES:
        raise fail(where, f"role {options.get('role') if isinstance(options, dict) else value!r} is not one of "
                   f"{', '.join(ROLES)}")  # fmt: skip
    role = options["role"]
    extra = set(options) - {"role", "description"} - OPTIONS[role]
    if extra:
        allowed = ", ".join(sorted(OPTIONS[role])) or "none"
        raise fail(where, f"option {sorted(extra)[0]!r} does not apply to role {role!r} (its options: {allowed})")
    column = Column(
        name=name,
        role=role,
        description=options.get("description", ""),
        time_format=options.get("format", ""),
        missing=options.get("missing"),
        log=bool(options.get("log", False)),
        values=tuple(str(v) for v in options.get("values", ())),
        default=options.get("default"),
        buckets=int(options.get("buckets", buckets)),
        optional=bool(options.get("optional", False)),
    )
    if role == "timestamp" and column.time_format not in TIME_FORMATS:
        raise fail(where, f"format {column.time_format!r}: give one of {', '.join(TIME_FORMATS)}")
    if role == "categorical" and len(set(column.values)) < 2:
        raise fail(where, 'a categorical column lists its values (at least two, distinct): values = ["a", "b"]')
    if role == "categorical" and column.default is not None and column.default not in column.values:
        raise fail(where, f"default {column.default!r} is not one of its values")
    if role == "numeric" and column.missing is not None and not isinstance(column.missing, int | float):
        raise fail(where, f"missing = {column.missing!r}: give the number an empty field stands for")
    if role == "id" and not 2 <= column.buckets <= 1 << 26:
        raise fail(where, f"buckets = {column.buckets}: give 2 to {1 << 26} (memory grows with it)")
    return column
