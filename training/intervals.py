"""The statistical error of a click model's bars, from the size of the split they are measured on.

A bar checked on a held-out split is a measurement with noise. On a log of a few thousand rows the noise
is larger than the margins the bars ask for: two models' AUCs differ by ~0.01 from the draw of rows
alone, and even a perfectly calibrated model's calibration error on 1,500 rows is ~0.03 (20 equal-count
bins of 75 rows, a few clicks each). Fixed margins would then fail honest models and could not tell a
broken one from noise. Each bar here is the fixed margin or the split's noise, whichever is larger:

- `auc_difference`: the AUCs of two scorings of the same rows and the standard error of their
  difference, by DeLong's method (DeLong, DeLong and Clarke-Pearson 1988; the O(n log n) algorithm of
  Sun and Xu 2014). Paired: both models are scored on the same rows, so the rows' draw mostly cancels.
- `calibration_noise`: the calibration error a perfectly calibrated model would show on this split,
  by simulation: each bin's clicks drawn as if the model's probabilities were the truth.
"""

from __future__ import annotations

import numpy as np

from service.measures import midranks


def auc_difference(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(AUC of a, AUC of b, standard error of AUC(a) - AUC(b)) on the same rows, by DeLong."""
    y = np.asarray(y).ravel().astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs two rows of each class (clicks {m}, non-clicks {n})")
    aucs, v10, v01 = [], [], []
    for scores in (np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()):
        pos, neg = scores[y], scores[~y]
        tx, ty, tz = midranks(pos), midranks(neg), midranks(np.concatenate((pos, neg)))
        aucs.append(float(tz[:m].sum() / m / n - (m + 1) / (2 * n)))
        v10.append((tz[:m] - tx) / n)  # per click: the share of non-clicks it outranks
        v01.append(1.0 - (tz[m:] - ty) / m)  # per non-click: the share of clicks that outrank it
    s10, s01 = np.cov(np.stack(v10)), np.cov(np.stack(v01))
    cov = s10 / m + s01 / n
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return aucs[0], aucs[1], float(np.sqrt(max(variance, 0.0)))


def calibration_noise(p: np.ndarray, bins: int = 20, draws: int = 2000, quantile: float = 0.95,
                      seed: int = 0) -> float:  # fmt: skip
    """The `quantile` of the calibration error (service.measures.calibration_error, the same bins) that a
    model whose probabilities `p` are exactly right shows on len(p) rows: each bin's clicks drawn as a
    binomial of its size and mean probability (a slightly wider spread than the exact Poisson-binomial:
    the bar errs towards passing an honest model, never towards passing a broken one by much)."""
    p = np.sort(np.asarray(p, dtype=np.float64).ravel())
    parts = np.array_split(p, bins)
    sizes = np.array([len(q) for q in parts])
    keep = sizes > 0
    sizes = sizes[keep]
    means = np.array([q.mean() for q, k in zip(parts, keep, strict=True) if k])
    clicks = np.random.default_rng(seed).binomial(sizes, np.clip(means, 0, 1), size=(draws, len(sizes)))
    errors = (np.abs(clicks / sizes - means) * sizes).sum(axis=1) / len(p)
    return float(np.quantile(errors, quantile))
