"""The Locust users of `make rollout` (loadtests/rollout.py): single housing predictions, no pause,
each user with its own X-Request-Key. A request fails unless it is a 200 with a price, answered by
one of the versions in NNSERVE_ROLLOUT_VERSIONS. Every answer's start, latency and version go to
the CSV file NNSERVE_ROLLOUT_TRACE when Locust stops, for rollout.py's windows.

Kept apart from rollout.py because importing locust patches the standard library (gevent).
"""

from __future__ import annotations

import itertools
import os
import random
import time

from locust import FastHttpUser, constant, events, task

from loadtests.payloads import houses

ALLOWED = set(os.environ.get("NNSERVE_ROLLOUT_VERSIONS", "1,2").split(","))
TRACE: list[tuple[float, float, str]] = []
_ids = itertools.count()


class Client(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.key = f"user-{next(_ids)}"

    @task
    def house(self) -> None:
        start = time.time()
        with self.client.post(
            "/v1/housing-price/predict", json=random.choice(houses()), headers={"X-Request-Key": self.key},
            catch_response=True,
        ) as r:  # fmt: skip
            version = ""
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
            elif (version := r.json().get("version")) not in ALLOWED or not r.json().get("price", 0) > 0:
                r.failure(f"answered by version {version!r}, not one of {sorted(ALLOWED)}: {r.text[:200]}")
            TRACE.append((start, time.time() - start, version))


@events.quitting.add_listener
def _write_trace(**_: object) -> None:
    path = os.environ.get("NNSERVE_ROLLOUT_TRACE")
    if path:
        with open(path, "w") as f:
            f.writelines(f"{t:.4f},{latency:.5f},{v}\n" for t, latency, v in TRACE)
