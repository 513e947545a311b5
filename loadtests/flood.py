"""The Locust users of `make overload` (loadtests/overload.py): single housing predictions and single
CIFAR photos, no pause between requests. A 503 with Retry-After is the expected answer to overload:
it is counted apart, under REFUSED, not as a failure.

Kept apart from overload.py because importing locust patches the standard library (gevent).
"""

from __future__ import annotations

import random

from locust import FastHttpUser, constant, task

from loadtests.payloads import cifar_jpegs, houses

REFUSED = "refused: 503 + Retry-After"  # overload.py reads it under this name


def _answered(response, valid: bool) -> None:
    """A 200 with a valid body counts under its route; a 503 with Retry-After under REFUSED; anything
    else is a failure."""
    if response.status_code == 503 and response.headers.get("retry-after"):
        response.request_meta["name"] = REFUSED
        response.success()
    elif response.status_code != 200:
        response.failure(f"status {response.status_code}: {response.text[:200]}")
    elif not valid:
        response.failure(f"invalid answer: {response.text[:200]}")


class Flood(FastHttpUser):
    wait_time = constant(0)

    @task(2)
    def house(self) -> None:
        with self.client.post("/v1/housing-price/predict", json=random.choice(houses()), catch_response=True) as r:
            _answered(r, r.status_code != 200 or r.json()["price"] > 0)

    @task(1)
    def photo(self) -> None:
        _, jpeg = random.choice(cifar_jpegs())
        files = {"photo": ("photo.jpg", jpeg, "image/jpeg")}
        with self.client.post("/v1/image-tagging/predict", files=files, catch_response=True) as r:
            _answered(r, r.status_code != 200 or len(r.json()["tags"]) == 5)
