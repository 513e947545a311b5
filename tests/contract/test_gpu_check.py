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


def test_the_served_check_reports_what_bound_and_flags_a_model_off_its_provider_or_answers_that_disagree():
    """loadtests/gpu_serve.py's verdicts, on a result shaped as a run writes it (its servers run in make
    test's integration tests through the same bentoml_serve; only the GPU is missing here)."""
    from loadtests.gpu_serve import agreement, problems
    from loadtests.gpu_serve import table as served_table

    tags = {"image-tagging": [[{"label": "cat", "score": 0.9}, {"label": "dog", "score": 0.1}]],
            "imagenet-classifier": [[{"label": "tabby", "score": 0.5}]], "housing-price": 500_000.0}  # fmt: skip
    load = {
        "statuses": {"200": 10},
        "per_s": 100.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "mean_batch": 0.0,
        "gpu_mid_load": "",
    }

    def server(bound: str) -> dict:
        return {"bound": {"readyz_status": 200, "readyz": {}, "providers": {"image-tagging": bound}, "model_info": []},
                "answers": tags, "load": {"image-tagging": dict(load)}}  # fmt: skip

    result = {"date": "d", "device": "H200", "python": "3.12", "workers": 2, "clients": 64, "processes": 8,
              "seconds": 8.0, "servers": {"cuda": server("CUDAExecutionProvider"),
                                          "cpu": server("CPUExecutionProvider")}}  # fmt: skip
    result["agreement"] = agreement(tags, tags, 1e-3)
    assert result["agreement"]["ok"] and problems(result) == []
    assert "| cuda | image-tagging | 100 | 1.0 | 2.0 | none |" in "\n".join(served_table({**result, "problems": []}))
    moved = {**tags, "image-tagging": [[{"label": "cat", "score": 0.8}, {"label": "dog", "score": 0.2}]]}
    assert not agreement(moved, tags, 1e-3)["ok"]  # a score 0.1 off
    result["servers"]["cuda"] = server("CPUExecutionProvider")  # cuda asked for, the CPU bound
    result["servers"]["cpu"]["load"]["image-tagging"]["statuses"] = {"200": 9, "503": 1}
    found = problems(result)
    assert len(found) == 2 and "cuda: models on another provider" in found[0] and "503" in found[1]
