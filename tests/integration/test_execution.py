"""Execution settings against a real `bentoml serve`: a GPU asked for on a machine without one, dynamic
batching of photos (off by default on the CPU, switched on here) and of table rows (on by default)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from loadtests.serving import bentoml_serve, metrics_containing, server_log
from tests.conftest import MODELS, SAMPLE_PHOTOS
from tests.integration.test_faults import HOUSE


def test_cuda_asked_for_without_a_gpu_keeps_the_service_not_ready_and_says_why():
    with bentoml_serve(MODELS, expect_ready=False, NNSERVE_PROVIDERS="cuda", NNSERVE_WORKERS="1") as url:
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 503
        assert set(ready.json()["errors"]) == {"housing-price", "ad-click", "image-tagging"}
        assert "failed to load" in ready.json()["error"]
        assert httpx.post(url + "/v1/housing-price/predict", json=HOUSE).status_code == 503
        log = server_log(url).read_text()
        assert "CUDAExecutionProvider was asked for (NNSERVE_PROVIDERS=cuda) but CPUExecutionProvider bound" in log


def test_cuda_with_fallback_warn_serves_on_the_cpu_and_reports_it():
    env = {"NNSERVE_PROVIDERS": "cuda", "NNSERVE_PROVIDER_FALLBACK": "warn", "NNSERVE_WORKERS": "1"}
    with bentoml_serve(MODELS, **env) as url:
        assert httpx.get(url + "/readyz").json()["models"]["ad-click"] == {
            "version": "1", "provider": "CPUExecutionProvider", "device": "cpu", "versions": ["1"], "default": "1"
        }  # fmt: skip
        assert httpx.get(url + "/v1/models/ad-click").json()["provider"] == "CPUExecutionProvider"
        metrics = metrics_containing(url, "nnserve_model_info")
        assert (
            'nnserve_model_info{device="cpu",model="ad-click",provider="CPUExecutionProvider",version="1"} 1.0'
            in metrics
        )
        assert "serving on CPUExecutionProvider (NNSERVE_PROVIDER_FALLBACK=warn)" in server_log(url).read_text()


def test_dynamic_batching_gives_each_request_its_own_answer():
    photos = [
        (SAMPLE_PHOTOS / name).read_bytes() for name in ("chelsea.png", "rocket.jpg", "coffee.png", "astronaut.png")
    ]
    with (
        bentoml_serve(MODELS, NNSERVE_WORKERS="1", NNSERVE_DYNAMIC_BATCH_MAX="1") as plain,
        bentoml_serve(MODELS, NNSERVE_WORKERS="1", NNSERVE_DYNAMIC_BATCH_MAX="8") as batched,
    ):
        assert "dynamic_batching" not in httpx.get(plain + "/v1/models/image-tagging").json()
        assert httpx.get(batched + "/v1/models/image-tagging").json()["dynamic_batching"]["max_batch"] == 8

        def tags(url: str, i: int) -> list:
            r = httpx.post(url + "/v1/image-tagging/predict", files={"photo": ("p", photos[i % 4])}, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()["tags"]

        expected = [tags(plain, i) for i in range(4)]
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda i: tags(batched, i), range(48)))
        for i, answer in enumerate(got):
            assert [t["label"] for t in answer] == [t["label"] for t in expected[i % 4]]
            assert np.allclose([t["score"] for t in answer], [t["score"] for t in expected[i % 4]], atol=1e-5)
        # Every photo went through the batcher (how they grouped depends on timing: tests/unit covers that).
        metrics = metrics_containing(batched, 'nnserve_dynamic_batch_size_sum{model="image-tagging"} 48.0')
        assert 'nnserve_dynamic_batch_size_sum{model="image-tagging"} 48.0' in metrics


def test_concurrent_one_row_requests_share_runs_and_each_gets_its_own_answer(server):
    from tests.integration.test_http import HOUSE, _row, session
    from training.contract import HOUSING

    houses = [{**HOUSE, "sqft_living": 900 + 37 * i} for i in range(64)]
    with ThreadPoolExecutor(32) as pool:
        prices = list(
            pool.map(lambda h: httpx.post(server + "/v1/housing-price/predict", json=h).json()["price"], houses)
        )
    model = session("housing-price")
    expected = [
        model.run(None, dict(zip(("numeric", "categorical"), _row(HOUSING, h), strict=True)))[0][0, 0] for h in houses
    ]
    assert np.allclose(prices, expected, rtol=1e-5)
    assert httpx.get(server + "/v1/models/housing-price").json()["dynamic_batching"]["max_batch"] == 64
