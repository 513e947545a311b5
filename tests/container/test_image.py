"""The built image (NNSERVE_IMAGE) answers every endpoint as a local `bentoml serve` does."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from loadtests.photos import cifar_photos
from loadtests.serving import bentoml_serve, free_port
from tests.conftest import CIFAR_VAL, MODELS, SAMPLE_PHOTOS
from tests.integration.test_http import HOUSE, IMPRESSION
from tests.integration.test_readme import _same

IMAGE = os.environ["NNSERVE_IMAGE"]
SETTINGS = {"NNSERVE_MAX_BATCH_ROWS": "8"}  # a non-default setting, to see the env reach the container


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout.strip()


@contextmanager
def running(deadline_s: float = 60, docker_flags: tuple[str, ...] = (), **env: str) -> Iterator[tuple[str, str]]:
    """Starts the image on a free loopback port; yields (base URL, container id) once /readyz is 200."""
    port = free_port()
    flags = [*docker_flags, *(f"--env={k}={v}" for k, v in env.items())]
    cid = docker("run", "-d", "-p", f"127.0.0.1:{port}:3000", *flags, IMAGE)
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            exited = docker("inspect", "-f", "{{.State.Status}}", cid, check=False) == "exited"
            if exited or time.monotonic() - started > deadline_s:
                # The service logs to stderr: a refusal to start (a failed check) is there, not on stdout.
                logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=False)
                what = "exited" if exited else f"not ready after {deadline_s}s"
                raise TimeoutError(f"{IMAGE} {what}:\n{(logs.stdout + logs.stderr)[-3000:]}")
            time.sleep(0.1)  # polling with a deadline
        print(f"\n{IMAGE} ready {time.monotonic() - started:.1f} s after docker run")
        yield url, cid
    finally:
        docker("rm", "-f", cid, check=False)


@pytest.fixture(scope="module")
def container():
    with running(**SETTINGS) as (url, cid):
        yield url, cid


@pytest.fixture(scope="module")
def local():
    with bentoml_serve(MODELS, **SETTINGS) as url:
        yield url


def _requests() -> list[tuple[str, dict]]:
    chelsea = (SAMPLE_PHOTOS / "chelsea.png").read_bytes()
    cifar = [jpeg for _, jpeg in cifar_photos(CIFAR_VAL, per_class=1)[:3]]
    b64 = base64.b64encode(chelsea).decode()
    return [
        ("/v1/housing-price/predict", {"json": HOUSE}),
        ("/v1/housing-price/predict-batch", {"json": {"houses": [HOUSE, {**HOUSE, "zipcode": 10001}]}}),
        ("/v1/ad-click/predict", {"json": IMPRESSION}),
        ("/v1/ad-click/predict-batch", {"json": {"impressions": [IMPRESSION, {**IMPRESSION, "ad_id": 10**6}]}}),
        ("/v1/image-tagging/predict", {"files": {"photo": ("c.png", chelsea)}, "data": {"top_k": "3"}}),
        ("/v1/image-tagging/predict-batch", {"files": [("photos", (f"{i}.jpg", p)) for i, p in enumerate(cifar)]}),
        ("/v1/image-tagging/predict-base64", {"json": {"image_base64": b64, "top_k": 10}}),
        ("/v1/image-tagging/predict-batch-base64", {"json": {"images_base64": [b64, b64]}}),
        ("/v1/housing-price/predict", {"json": {**HOUSE, "bedrooms": -1}}),  # a 400
        ("/v1/ad-click/predict-batch", {"json": {"impressions": [IMPRESSION] * 9}}),  # over the limit set by env
    ]


@pytest.mark.parametrize(
    ("route", "request_kwargs"), _requests(), ids=[f"{r}-{i}" for i, (r, _) in enumerate(_requests())]
)
def test_every_endpoint_answers_like_a_local_bentoml_serve(container, local, route, request_kwargs):
    there = httpx.post(container[0] + route, timeout=30, **request_kwargs)
    here = httpx.post(local + route, timeout=30, **request_kwargs)
    assert there.status_code == here.status_code, there.text
    assert _same(there.json(), here.json()), (there.text, here.text)


def test_metadata_health_and_metrics(container, local):
    for path in ("/v1/models/housing-price", "/v1/models/image-tagging", "/v1/health", "/v2", "/v2/models/ad-click"):
        assert httpx.get(container[0] + path).json() == httpx.get(local + path).json(), path
    assert "bentoml_service_request_total" in httpx.get(container[0] + "/metrics").text


def test_runs_as_non_root_without_torch_or_training_code(container):
    _, cid = container
    assert docker("exec", cid, "id", "-u") != "0"
    listing = docker("exec", cid, "sh", "-c", "ls $BENTO_PATH/src").split()
    assert sorted(listing) == ["bentofile.yaml", "models", "service"], listing
    probe = subprocess.run(["docker", "exec", cid, "python", "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr


def test_image_size_and_labels():
    meta = json.loads(docker("image", "inspect", IMAGE))[0]
    size_mb = meta["Size"] / 1e6
    print(f"\n{IMAGE}: {size_mb:.0f} MB")
    assert size_mb <= 600
    labels = meta["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] and labels["org.opencontainers.image.revision"]


def test_sigterm_stops_it_cleanly():
    with running() as (url, cid):
        assert httpx.get(url + "/livez").status_code == 200
        docker("stop", "--time", "20", cid)  # SIGTERM, then SIGKILL after 20 s if still running
        state = json.loads(docker("inspect", cid))[0]["State"]
        assert state["Status"] == "exited" and state["ExitCode"] == 0, state
        logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True)
        assert "cleanup finalized" in logs.stdout + logs.stderr  # BentoML ran its shutdown, not a kill


# As deploy/kubernetes and deploy/swarm run it: uid 1034, read-only root, a tmpfs /tmp, no capability,
# no privilege escalation, one CPU of quota and the worker count left to the service.
LOCKED_DOWN = ("--read-only", "--tmpfs=/tmp", "--user=1034:1034", "--cap-drop=ALL",
               "--security-opt=no-new-privileges", "--cpus=1")  # fmt: skip


def test_locked_down_as_the_manifests_run_it_with_workers_and_threads_from_the_cpu_quota():
    with running(docker_flags=LOCKED_DOWN, BENTOML_HOME="/tmp/bentoml", NNSERVE_WORKERS="0") as (url, cid):
        answer = httpx.post(url + "/v1/housing-price/predict", json=HOUSE, timeout=30)
        assert answer.status_code == 200 and answer.json()["price"] > 0
        assert docker("exec", cid, "id", "-u") == "1034"
        cores = "from service.settings import available_cores; print(available_cores())"
        assert docker("exec", "-w", "/home/bentoml/bento/src", cid, "python", "-c", cores) == "1"  # host: more
        processes = docker("top", cid, "-eo", "pid,args")
        assert processes.count("_bentoml_impl.worker.service") == 1, processes  # BentoML's cpu_count: the quota
