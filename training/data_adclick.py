"""A generator of realistic ad impressions whose true click probabilities are known.

No real click log may be redistributed, so the ad-click model trains on impressions drawn from a
documented logistic model (docs in training/ADCLICK_GENERATOR.md):

    logit p = b0 + age(age) + gender + device + city + ad + advertiser + category + site
              + hour + day_of_week + (age band x category) + (hour band x device) + (gender x category)

Every term is a fixed random draw from the seed. Ads launch over the period, so later impressions
show ads that earlier ones never did: the held-out (latest) slice holds ads the model has not seen.
Because p is known, the best achievable AUC on any slice (the "oracle AUC") is known too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.contract import AD_CATEGORIES, AD_CLICK

GENDERS = AD_CLICK.categorical[0].values
DEVICES = AD_CLICK.categorical[1].values
COLUMNS = ["timestamp", *(f.name for f in AD_CLICK.features), "clicked", "p_true"]


@dataclass(frozen=True)
class World:
    """Sizes and effect scales of the simulated market (defaults give an oracle AUC near 0.78)."""

    days: int = 30
    cities: int = 200
    ads: int = 2_000
    advertisers: int = 250
    sites: int = 300
    base_rate: float = 0.04  # mean click probability the intercept is solved for
    sd_ad: float = 0.10
    sd_advertiser: float = 0.50
    sd_category: float = 0.45
    sd_site: float = 0.60
    sd_city: float = 0.10
    sd_interaction: float = 0.40
    launched_at_start: float = 0.6  # share of ads live from day 0; the rest launch uniformly later


@dataclass
class Impressions:
    timestamp: np.ndarray  # seconds since the start of the period, increasing
    numeric: np.ndarray  # float32 [N, 1]: age
    categorical: np.ndarray  # int64 [N, 9], contract order and codes
    clicked: np.ndarray  # int64 [N] 0/1
    p_true: np.ndarray  # float64 [N]

    def __len__(self) -> int:
        return len(self.clicked)


def _zipf_choice(rng: np.random.Generator, n: int, size: int, a: float = 1.1) -> np.ndarray:
    """Popularity-skewed IDs: a few cities, sites and advertisers take most of the traffic."""
    weights = 1.0 / np.arange(1, n + 1) ** a
    return rng.choice(n, size=size, p=weights / weights.sum())


def generate(n: int, seed: int = 0, world: World = World()) -> Impressions:
    rng = np.random.default_rng(seed)
    # The market: fixed effects drawn once.
    ad_advertiser = _zipf_choice(rng, world.advertisers, world.ads, a=0.8)
    ad_category = rng.integers(0, len(AD_CATEGORIES), world.ads)
    ad_launch = np.where(
        rng.random(world.ads) < world.launched_at_start, 0.0, rng.uniform(0, world.days * 86_400, world.ads)
    )
    eff_ad = rng.normal(0, world.sd_ad, world.ads)
    eff_advertiser = rng.normal(0, world.sd_advertiser, world.advertisers)
    eff_category = rng.normal(0, world.sd_category, len(AD_CATEGORIES))
    eff_site = rng.normal(0, world.sd_site, world.sites)
    eff_city = rng.normal(0, world.sd_city, world.cities)
    eff_gender = np.array([0.0, 0.10, -0.05])
    eff_device = np.array([0.15, -0.20, 0.05])  # mobile, desktop, tablet
    eff_dow = rng.normal(0, 0.08, 7)
    inter_age_cat = rng.normal(0, world.sd_interaction, (5, len(AD_CATEGORIES)))
    inter_hour_dev = rng.normal(0, world.sd_interaction, (4, len(DEVICES)))
    inter_gender_cat = rng.normal(0, world.sd_interaction * 0.75, (len(GENDERS), len(AD_CATEGORIES)))

    # The impressions, in time order.
    t = np.sort(rng.uniform(0, world.days * 86_400, n))
    hour = (t // 3600 % 24).astype(np.int64)
    dow = (t // 86_400 % 7).astype(np.int64)
    age = np.clip(np.round(rng.gamma(6.0, 6.0, n) + 14), 13, 90)
    gender = rng.choice(3, n, p=[0.1, 0.46, 0.44])
    device = rng.choice(3, n, p=[0.62, 0.28, 0.10])
    city = _zipf_choice(rng, world.cities, n)
    site = _zipf_choice(rng, world.sites, n)
    # Each impression shows an ad already launched: drawn among the ads live at its time.
    launch_order = np.argsort(ad_launch, kind="stable")
    live = np.searchsorted(ad_launch[launch_order], t, side="right")
    ad = launch_order[(rng.random(n) * live).astype(np.int64)]
    advertiser, category = ad_advertiser[ad], ad_category[ad]

    age_band = np.digitize(age, [25, 35, 45, 60])
    hour_band = hour // 6
    age_effect = -0.012 * (age - 35) - 0.00025 * (age - 35) ** 2
    hour_effect = 0.25 * np.sin(2 * np.pi * (hour - 14) / 24)
    logit = (
        age_effect + eff_gender[gender] + eff_device[device] + eff_city[city] + eff_ad[ad]
        + eff_advertiser[advertiser] + eff_category[category] + eff_site[site] + hour_effect + eff_dow[dow]
        + inter_age_cat[age_band, category] + inter_hour_dev[hour_band, device] + inter_gender_cat[gender, category]
    )  # fmt: skip
    p = 1.0 / (1.0 + np.exp(-(logit + _intercept(logit, world.base_rate))))
    clicked = (rng.random(n) < p).astype(np.int64)
    categorical = np.stack([gender, device, city, ad, advertiser, category, site, hour, dow], axis=1)
    return Impressions(t, age.astype(np.float32)[:, None], categorical.astype(np.int64), clicked, p)


def _intercept(logit: np.ndarray, base_rate: float) -> float:
    """The b0 for which the mean click probability equals `base_rate` (bisection; monotone in b0)."""
    lo, hi = -15.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) < base_rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def write_csv(imp: Impressions, path: Path) -> Path:
    """The log as users' real logs would look: the contract's columns with string categories, plus
    the timestamp, the click and (only because it is simulated) the true probability."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i in range(len(imp)):
            c = imp.categorical[i]
            w.writerow([
                int(imp.timestamp[i]), int(imp.numeric[i, 0]), GENDERS[c[0]], DEVICES[c[1]], c[2], c[3], c[4],
                AD_CATEGORIES[c[5]], c[6], c[7], c[8], imp.clicked[i], f"{imp.p_true[i]:.6f}",
            ])  # fmt: skip
    return path
