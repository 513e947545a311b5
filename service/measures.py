"""Held-out and online metrics, in numpy: the trainers (the card), the service (outcome feedback) and the
contract tests (reproducing the card) measure alike."""

from __future__ import annotations

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R² and MAE in dollars, and the median absolute percentage error."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    ss_res = float(np.sum((y_true - y_pred) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "r2": 1.0 - ss_res / ss_tot,
        "mae": float(np.mean(np.abs(y_true - y_pred))),
        "median_ape": float(np.median(np.abs(y_pred - y_true) / y_true)),
    }


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (runs of equal values share it)."""
    order = np.argsort(x, kind="mergesort")
    boundaries = np.flatnonzero(np.diff(x[order])) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(x)]))
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum statistic, ties given their average rank."""
    y = np.asarray(y).ravel().astype(bool)
    ranks = midranks(np.asarray(p, dtype=np.float64).ravel())
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.clip(np.asarray(p, dtype=np.float64).ravel(), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 20) -> float:
    """Expected calibration error over equal-count bins of predicted probability.

    Equal-count bins, because with a click rate of a few percent nearly all equal-width bins are empty."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    order = np.argsort(p, kind="mergesort")
    error = 0.0
    for idx in np.array_split(order, bins):
        if len(idx):
            error += len(idx) / len(p) * abs(float(p[idx].mean()) - float(y[idx].mean()))
    return error


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"auc": roc_auc(y, p), "log_loss": log_loss(y, p), "calibration_error": calibration_error(y, p)}


def topk_accuracy(labels: np.ndarray, scores: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    top = np.argsort(-scores, axis=1, kind="stable")
    return {f"top{k}": float(np.mean(np.any(top[:, :k] == labels[:, None], axis=1))) for k in ks}
