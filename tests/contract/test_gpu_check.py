"""The GPU check script (loadtests/gpu_check.py) in its CPU half, so that it still runs the day a GPU
machine is lent: the committed tagger through the runtime layer, the batcher pipeline, the report."""

from __future__ import annotations

import json

from loadtests.gpu_check import BATCHES, main, table


def test_the_cpu_half_runs_and_reports(tmp_path):
    assert main(["--cpu-only", "--seconds", "0.1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    tagger = result["models"]["image-tagging"]
    assert tagger["cpu"]["provider"] == "CPUExecutionProvider" and tagger["classes"] == 10
    assert all(tagger["cpu"][f"batch {b}"] > 0 for b in BATCHES)
    assert tagger["cpu"]["pipeline"]["images/s"] > 0 and tagger["cpu"]["pipeline"]["mean batch"] >= 1
    assert "| image-tagging | CPUExecutionProvider |" in (tmp_path / "gpu_check.md").read_text()


def test_the_report_of_a_cuda_run_has_the_ratios_and_the_agreement():
    speeds = {f"batch {b}": 1000.0 * b for b in BATCHES}
    result = {
        "date": "d", "device": "NVIDIA H100", "onnxruntime": "1.31.1", "python": "3.12",
        "models": {"m": {
            "cpu": {"provider": "CPUExecutionProvider", **{k: v / 10 for k, v in speeds.items()},
                    "pipeline": {"images/s": 50.0, "mean batch": 4.0}},
            "cuda": {"provider": "CUDAExecutionProvider", **speeds, "io binding, batch 32": 40000.0,
                     "pipeline": {"images/s": 900.0, "mean batch": 30.0}},
            "agreement": {"max_prob_diff": 2e-4, "top1_same": True, "ok": True},
        }},
    }  # fmt: skip
    lines = table(result)
    assert any("CUDA vs CPU | b1 10.0x, b8 10.0x, b32 10.0x, b128 10.0x" in line for line in lines)
    assert any("max prob diff 2.0e-04, top-1 same" in line and "40,000" in line for line in lines)
