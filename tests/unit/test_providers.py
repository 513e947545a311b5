"""Execution provider selection, on onnxruntime's CPU package (CI has no GPU): the providers argument
built from the settings, the check of what actually bound, fallback, and where it is reported."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import pytest

from service.runtime import CPU, CUDA, TENSORRT, Execution, ModelLoadError, load_model
from service.settings import Settings, available_cores
from tests.conftest import MODELS


def test_the_chain_of_each_setting():
    assert Execution("cpu").chain() == [CPU]
    assert Execution("cuda", device_id=1, cuda_options={"cudnn_conv_algo_search": "HEURISTIC"}).chain() == [
        (CUDA, {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC"}),
        CPU,
    ]
    trt = Execution("tensorrt", tensorrt_cache=Path("/cache")).chain()
    assert trt[0] == (
        TENSORRT,
        {"device_id": "0", "trt_engine_cache_enable": "True", "trt_engine_cache_path": "/cache"},
    )
    assert [p if isinstance(p, str) else p[0] for p in trt] == [TENSORRT, CUDA, CPU]


def test_auto_takes_cuda_when_installed_else_the_cpu(monkeypatch):
    assert Execution("auto").chain() == [CPU]  # this machine's CPU-only onnxruntime
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])  # onnxruntime-gpu
    assert Execution("auto").wanted == CUDA and Execution("auto").chain()[0][0] == CUDA  # not TensorRT


@pytest.mark.parametrize("providers", ["cuda", "tensorrt"])
def test_a_gpu_provider_that_does_not_bind_refuses_the_model(providers):
    with pytest.raises(ModelLoadError) as e:
        load_model(MODELS / "housing-price", Execution(providers))
    message = str(e.value)
    assert "model.onnx" in message and f"NNSERVE_PROVIDERS={providers}" in message
    assert "CPUExecutionProvider bound" in message and "NNSERVE_PROVIDER_FALLBACK=warn" in message


def test_fallback_warn_serves_on_the_cpu_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        model = load_model(MODELS / "housing-price", Execution("cuda", fallback="warn"))
    assert model.provider == CPU and model.device == "cpu" and not model.on_gpu
    assert "CUDAExecutionProvider was asked for" in caplog.text and "serving on CPUExecutionProvider" in caplog.text


def test_auto_falling_back_to_the_cpu_warns_instead_of_refusing(monkeypatch, caplog):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])  # installed, but no GPU here
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        model = load_model(MODELS / "image-tagging", Execution("auto"))
    assert model.provider == CPU and "serving on CPUExecutionProvider" in caplog.text


def test_settings_build_the_execution_from_the_environment(monkeypatch):
    monkeypatch.setenv("NNSERVE_PROVIDERS", "cuda")
    monkeypatch.setenv("NNSERVE_DEVICE_ID", "2")
    monkeypatch.setenv("NNSERVE_CUDA_OPTIONS", '{"arena_extend_strategy": "kSameAsRequested"}')
    monkeypatch.setenv("NNSERVE_TENSORRT_CACHE_DIR", "/var/cache/trt")
    monkeypatch.setenv("NNSERVE_PROVIDER_FALLBACK", "warn")
    monkeypatch.setenv("NNSERVE_THREADS", "2")
    execution = Settings().execution()
    assert execution == Execution(
        "cuda", 2, {"arena_extend_strategy": "kSameAsRequested"}, Path("/var/cache/trt"), "warn", 2
    )
    monkeypatch.setenv("NNSERVE_PROVIDER_FALLBACK", "cpu")
    with pytest.raises(ValueError, match="provider_fallback"):
        Settings()
    monkeypatch.setenv("NNSERVE_PROVIDERS", "gpu")
    with pytest.raises(ValueError, match="providers"):
        Settings()


def _dist(site: Path, name: str) -> None:
    info = site / f"{name.replace('-', '_')}-1.31.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.31.1\n")


def test_onnxruntime_and_onnxruntime_gpu_in_one_place_are_refused(tmp_path):
    from service.runtime import check_one_onnxruntime, onnxruntime_packages

    check_one_onnxruntime()  # this environment: one of them
    _dist(tmp_path, "onnxruntime-gpu")
    assert onnxruntime_packages(tmp_path) == ["onnxruntime-gpu"]
    check_one_onnxruntime(tmp_path)
    _dist(tmp_path, "onnxruntime")
    with pytest.raises(ImportError, match="both onnxruntime and onnxruntime-gpu"):
        check_one_onnxruntime(tmp_path)


def test_threads_default_to_the_cores_shared_out_among_the_workers(monkeypatch):
    monkeypatch.setattr("service.settings.available_cores", lambda: 8)
    assert Settings(workers=2).execution().threads == 4
    assert Settings(workers=0).execution().threads == 1  # one worker per core
    assert Settings(workers=16).execution().threads == 1
    assert Settings(workers=1).execution().threads == 8
    assert Settings(workers=2, threads=3).execution().threads == 3  # set: taken as it is


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({}, 8),  # no cgroup files: the machine's cores
        ({"cpu.max": "max 100000\n"}, 8),  # cgroup v2, no quota
        ({"cpu.max": "200000 100000\n"}, 2),  # a pod's `limits.cpu: 2`
        ({"cpu.max": "150000 100000\n"}, 1),  # 1.5 cores: whole cores, as BentoML counts its workers
        ({"cpu.max": "50000 100000\n"}, 1),  # half a core: still one
        ({"cpu.max": "3200000 100000\n"}, 8),  # a quota above the machine: the machine
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 8),  # v1, no quota
        ({"cpu.max": "garbage"}, 8),  # unreadable: the machine's
    ],
)
def test_available_cores_follow_a_container_cpu_quota(monkeypatch, tmp_path, files, cores):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert available_cores(tmp_path) == cores
