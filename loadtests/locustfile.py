"""Locust users for nnserve: one class per model, realistic payloads, weighted tasks, checked answers.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000      (or: make loadtest)

Each user sends single predictions most of the time and batches now and then; every answer is
checked for status, shape and value ranges, and a wrong one counts as a failure.
"""

from __future__ import annotations

import base64
import random

from locust import FastHttpUser, between, task

from loadtests.payloads import cifar_jpegs, houses, impressions
from training.contract import CIFAR10_LABELS

BATCH_ROWS = 64
BATCH_PHOTOS = 8


def _check(response, field: str, low: float, high: float, rows: int | None = None) -> None:
    if response.status_code != 200:
        response.failure(f"status {response.status_code}: {response.text[:200]}")
        return
    body = response.json()
    values = [body[field]] if rows is None else [p[field] for p in body["predictions"]]
    if rows is not None and len(values) != rows:
        response.failure(f"{len(values)} predictions for {rows} rows")
    elif not all(low <= v <= high for v in values):
        response.failure(f"{field} out of [{low}, {high}]: {values[:3]}")


def _check_tags(response, photos: int, k: int) -> None:
    if response.status_code != 200:
        response.failure(f"status {response.status_code}: {response.text[:200]}")
        return
    body = response.json()
    results = body["results"] if "results" in body else [body["tags"]]
    if len(results) != photos or any(len(tags) != k for tags in results):
        response.failure(f"expected {photos} x {k} tags")
    elif any(t["label"] not in CIFAR10_LABELS or not 0 <= t["score"] <= 1 for tags in results for t in tags):
        response.failure("a tag is not a CIFAR-10 label with a score in [0, 1]")


class HousingUser(FastHttpUser):
    weight = 3
    wait_time = between(0.0, 0.05)

    @task(10)
    def predict(self) -> None:
        with self.client.post("/v1/housing-price/predict", json=random.choice(houses()), catch_response=True) as r:
            _check(r, "price", 10_000, 50_000_000)

    @task(1)
    def predict_batch(self) -> None:
        batch = random.sample(houses(), BATCH_ROWS)
        with self.client.post("/v1/housing-price/predict-batch", json={"houses": batch}, catch_response=True) as r:
            _check(r, "price", 10_000, 50_000_000, rows=BATCH_ROWS)


class AdClickUser(FastHttpUser):
    weight = 3
    wait_time = between(0.0, 0.05)

    @task(10)
    def predict(self) -> None:
        with self.client.post("/v1/ad-click/predict", json=random.choice(impressions()), catch_response=True) as r:
            _check(r, "click_probability", 0.0, 1.0)

    @task(1)
    def predict_batch(self) -> None:
        batch = random.sample(impressions(), BATCH_ROWS)
        with self.client.post("/v1/ad-click/predict-batch", json={"impressions": batch}, catch_response=True) as r:
            _check(r, "click_probability", 0.0, 1.0, rows=BATCH_ROWS)


class TaggerUser(FastHttpUser):
    weight = 2
    wait_time = between(0.0, 0.1)

    @task(8)
    def predict_photo(self) -> None:
        _, jpeg = random.choice(cifar_jpegs())
        with self.client.post(
            "/v1/image-tagging/predict", files={"photo": ("photo.jpg", jpeg, "image/jpeg")}, data={"top_k": "3"},
            catch_response=True,
        ) as r:  # fmt: skip
            _check_tags(r, 1, 3)

    @task(2)
    def predict_base64(self) -> None:
        _, jpeg = random.choice(cifar_jpegs())
        body = {"image_base64": base64.b64encode(jpeg).decode(), "top_k": 5}
        with self.client.post("/v1/image-tagging/predict-base64", json=body, catch_response=True) as r:
            _check_tags(r, 1, 5)

    @task(1)
    def predict_batch(self) -> None:
        photos = random.sample(cifar_jpegs(), BATCH_PHOTOS)
        files = [("photos", (f"{i}.jpg", jpeg, "image/jpeg")) for i, (_, jpeg) in enumerate(photos)]
        with self.client.post("/v1/image-tagging/predict-batch", files=files, catch_response=True) as r:
            _check_tags(r, BATCH_PHOTOS, 5)
