"""The simulated impressions (training/data_adclick.py) written in the layouts of real public click logs,
so that a trainer can be tried on a log "as it comes" with the true click probabilities still known.

    python -m training.data_clicklogs --layout avazu --rows 1000000 --out build/avazu.csv.gz
    python -m training.data_clicklogs --layout criteo --rows 1000000 --out build/criteo.tsv

Real logs may not be redistributed and none is fetched: these carry what makes real ones hard.

- Avazu (CSV with a header): `id` a 64-bit integer, `click`, `hour` as YYMMDDHH (from 14102100), `C1`
  constant, `banner_pos`, `site_id`/`site_domain`/`site_category`/`app_id`/`app_domain`/`app_category`/
  `device_id`/`device_ip`/`device_model` as 8-hex-digit hashes (device_id: 16 hex digits, a 64-bit ID,
  one value for most rows as in the real log), `device_type` and `device_conn_type` numbers (the latter
  constant), `C14`-`C21` integers, `-1` for a missing value in `C20`.
- Criteo (tab-separated, no header): label, 13 integer features `I1`-`I13` (empty when missing), 26
  categorical `C1`-`C26` as 8-hex-digit hashes (empty when missing); no timestamp, file order is time.

Where each simulated feature goes is LAYOUTS below; the remaining columns are noise or constant, as
in real logs. Beside the log, `<out>.p_true` holds each row's true click probability (one per line),
so a model's AUC can be compared with the oracle's on the same rows.
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import numpy as np

from training.data_adclick import Impressions, generate

# Column order of the simulated categorical codes (Impressions.categorical).
GENDER, DEVICE, CITY, AD, ADVERTISER, CATEGORY, SITE, HOUR, DOW = range(9)
START_DAY = np.datetime64("2014-10-21T00")  # Avazu's first hour, 14102100
AVAZU_COLUMNS = [
    "id",
    "click",
    "hour",
    "C1",
    "banner_pos",
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_id",
    "device_ip",
    "device_model",
    "device_type",
    "device_conn_type",
    "C14",
    "C15",
    "C16",
    "C17",
    "C18",
    "C19",
    "C20",
    "C21",
]
DEVICE_TYPE = np.array([1, 0, 5])  # mobile, desktop, tablet -> Avazu-like device_type numbers
MOST_COMMON_DEVICE_ID = "a99f214a00000000"


def mix(values: np.ndarray, salt: int) -> np.ndarray:
    """A 64-bit hash of non-negative integers (splitmix64's finaliser), salted per column."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hex8(values: np.ndarray, salt: int) -> np.ndarray:
    return np.char.mod("%08x", (mix(values, salt) >> np.uint64(32)).astype(np.int64))


def avazu_columns(imp: Impressions, rng: np.random.Generator) -> list[np.ndarray]:
    n, c = len(imp), imp.categorical
    hours = START_DAY + (imp.timestamp // 3600).astype("timedelta64[h]")
    days, months = hours.astype("datetime64[D]"), hours.astype("datetime64[M]")
    yy = hours.astype("datetime64[Y]").astype(np.int64) + 1970 - 2000
    mm, dd = months.astype(np.int64) % 12 + 1, (days - months).astype(np.int64) + 1
    yymmddhh = np.char.mod("%08d", ((yy * 100 + mm) * 100 + dd) * 100 + (hours - days).astype(np.int64))
    gender = np.where(c[:, GENDER] == 0, -1, c[:, GENDER])  # unknown gender: Avazu's missing value, -1
    # Most rows carry one device_id (as in the real log); the others a 64-bit ID, 16 hex digits.
    device_ids = np.char.mod("%016x", (mix(np.arange(n), 11) >> np.uint64(1)).astype(np.int64))
    device_id = np.where(rng.random(n) < 0.8, MOST_COMMON_DEVICE_ID, device_ids)
    return [
        (mix(np.arange(n), 1) >> np.uint64(1)).astype(np.int64).astype(str),  # id: 63-bit, as decimals
        imp.clicked.astype(str),
        yymmddhh,
        np.full(n, "1005"),  # C1: constant
        rng.choice(["0", "1", "7"], n, p=[0.72, 0.27, 0.01]),  # banner_pos: noise
        hex8(c[:, SITE], 2),  # site_id
        hex8(c[:, SITE], 3),  # site_domain: one per site
        hex8(c[:, CATEGORY], 4),  # site_category: the ad's category
        np.full(n, "ecad2386"),  # app_id: constant (every impression on a site)
        np.full(n, "7801e8d9"),
        np.full(n, "07d7df22"),
        device_id,
        hex8(c[:, CITY], 5),  # device_ip: stands for the city
        hex8(rng.integers(0, 5_000, n), 6),  # device_model: noise
        DEVICE_TYPE[c[:, DEVICE]].astype(str),
        np.full(n, "0"),  # device_conn_type: constant
        c[:, AD].astype(str),  # C14: the ad
        np.full(n, "320"),
        np.full(n, "50"),
        c[:, ADVERTISER].astype(str),  # C17: the advertiser
        c[:, DOW].astype(str),  # C18
        imp.numeric[:, 0].astype(np.int64).astype(str),  # C19: the age
        gender.astype(str),  # C20: -1 when missing
        c[:, HOUR].astype(str),  # C21
    ]


def criteo_columns(imp: Impressions, rng: np.random.Generator) -> list[np.ndarray]:
    n, c = len(imp), imp.categorical
    age = imp.numeric[:, 0].astype(np.int64).astype(str)
    integers = [np.where(rng.random(n) < 0.05, "", age)]  # I1: the age, 5% missing
    for i in range(2, 14):  # I2-I13: counts that carry nothing, many missing; I12 constant
        counts = rng.geometric(0.2, n).astype(str) if i != 12 else np.full(n, "0")
        integers.append(np.where(rng.random(n) < 0.1 * (i % 4), "", counts))
    simulated = [GENDER, DEVICE, CITY, AD, ADVERTISER, CATEGORY, SITE, HOUR, DOW]
    categorical = [hex8(c[:, k], 20 + k) for k in simulated]  # C1-C9
    categorical[0] = np.where(c[:, GENDER] == 0, "", categorical[0])  # unknown gender: missing
    for j in range(10, 27):  # C10-C26: noise of many cardinalities, C20 constant, some often missing
        if j == 20:
            categorical.append(np.full(n, "a458ea53"))
            continue
        noise = hex8(rng.integers(0, 10 ** (1 + j % 6), n), 100 + j)
        categorical.append(np.where(rng.random(n) < 0.3 * (j % 3 == 0), "", noise))
    return [imp.clicked.astype(str), *integers, *categorical]


def write_log(imp: Impressions, layout: str, out: Path, seed: int = 0, chunk: int = 200_000) -> Path:
    """Writes the impressions in `layout` (avazu or criteo) to `out` (gzip when it ends in .gz), and
    their true probabilities to `<out>.p_true`. Returns the log's path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sep, header = (",", ",".join(AVAZU_COLUMNS) + "\n") if layout == "avazu" else ("\t", "")
    columns = avazu_columns if layout == "avazu" else criteo_columns
    raw = gzip.open(out, "wb") if out.suffix == ".gz" else open(out, "wb")  # noqa: SIM115 - closed below
    with raw, io.TextIOWrapper(raw, encoding="ascii", newline="") as text:
        text.write(header)
        for start in range(0, len(imp), chunk):
            part = Impressions(*(a[start : start + chunk] for a in (imp.timestamp, imp.numeric, imp.categorical,
                                                                   imp.clicked, imp.p_true)))  # fmt: skip
            rows = columns(part, rng)
            lines = rows[0]
            for column in rows[1:]:
                lines = np.char.add(np.char.add(lines, sep), column)
            text.write("\n".join(lines.tolist()) + "\n")
    np.savetxt(Path(f"{out}.p_true"), imp.p_true, fmt="%.6f")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=["avazu", "criteo"], required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the log (.gz: gzip); <out>.p_true beside it")
    args = parser.parse_args(argv)
    imp = generate(args.rows, seed=args.seed)
    print(f"wrote {write_log(imp, args.layout, args.out, seed=args.seed)} and {args.out}.p_true: {len(imp)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
