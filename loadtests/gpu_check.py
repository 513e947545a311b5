"""The GPU check: the serving runtime on onnxruntime's CUDA provider against its CPU provider.

    python -m loadtests.gpu_check --imagenet DIR --out DIR      (on the GPU machine: see gpu/README.md)
    python -m loadtests.gpu_check --cpu-only ...                 (anywhere: the CPU half, to keep it working)

For the committed tagger (CIFAR-10, 32x32) and a 1000-class 224x224 CNN (--imagenet, a models folder
made by `make gpu-prepare`), through service.runtime.load_model (so the provider check runs too):

1. agreement: the same real photos (decoded and resized by service.tasks.image.photos) through CUDA and the CPU;
   the largest difference of class probabilities must stay under --tolerance (default 1e-3: cuDNN
   may use TF32 and other algorithms than the CPU) and the top-1 labels must agree;
2. the model alone: images/s at batch 1, 8, 32 and 128 for each provider, host arrays in and out on
   every call as the service does; on CUDA also with IO binding and the arrays kept on the device (the
   ceiling without transfers), at batch 32;
3. the serving pipeline without HTTP: 64 concurrent clients, each decoding a real photo in the event
   loop and running it as the image endpoint does by default (photo_batcher: on the CPU with the photos
   that queued with it, up to 8; on CUDA alone), images/s end to end.

It prints a table and writes gpu_check.json and gpu_check.md into --out. It needs numpy, onnxruntime
(onnxruntime-gpu for CUDA), pydantic, pydantic-settings, pillow and anyio; not bentoml, not torch.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.runtime import Execution, LoadedModel, load_model
from service.settings import Settings
from service.tasks.image.adapter import photo_batcher
from service.tasks.image.photos import decode_photo, to_input

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "images" / "sample_photos"
BATCHES = (1, 8, 32, 128)


def device_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
        return out.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "no NVIDIA GPU visible"


def photos(model: LoadedModel, photo_dir: Path) -> np.ndarray:
    """Every sample photo as the service would feed it to `model` (decode, rotate, resize, crop)."""
    image = model.card.image
    assert image is not None
    files = sorted(p for p in photo_dir.iterdir() if p.suffix in (".jpg", ".png"))
    return np.concatenate([to_input(decode_photo(p.read_bytes(), 100_000_000, ["photo"]), image) for p in files])


def model_sized_jpegs(model: LoadedModel, photo_dir: Path) -> list[bytes]:
    """The sample photos as JPEGs at the model's input size, as the bench sends them (a CIFAR-sized
    photo to the tagger, a 224x224 one to the ImageNet model): the pipeline measures serving, not the
    decoding of 10-megapixel files."""
    from PIL import Image

    image = model.card.image
    assert image is not None
    out = []
    for p in sorted(photo_dir.iterdir()):
        buffer = io.BytesIO()
        Image.open(p).convert("RGB").resize(tuple(reversed(image.size))).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def probabilities(model: LoadedModel, scores: np.ndarray) -> np.ndarray:
    assert model.card.image is not None
    if model.card.image.output_is == "probabilities":
        return scores
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def per_second(run, rows: int, seconds: float) -> float:
    """Rows per second of `run` (one call = `rows` rows) over at least `seconds` (the bench's ceiling too)."""
    run()  # warm-up: kernel selection for this shape
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        run()
        n += 1
    return n * rows / (time.perf_counter() - start)


def model_alone(model: LoadedModel, sample: np.ndarray, seconds: float) -> dict[str, float]:
    out = {}
    for b in BATCHES:
        batch = np.resize(sample, (b, *sample.shape[1:]))
        out[f"batch {b}"] = per_second(lambda batch=batch: model.run(batch), b, seconds)
    return out


def io_bound(model: LoadedModel, sample: np.ndarray, seconds: float, device_id: int) -> float:
    """images/s at batch 32 with input and output kept on the GPU (IO binding): no host transfers."""
    batch = np.ascontiguousarray(np.resize(sample, (32, *sample.shape[1:])))
    binding = model.session.io_binding()
    binding.bind_ortvalue_input(model.input_names[0], ort.OrtValue.ortvalue_from_numpy(batch, "cuda", device_id))
    binding.bind_output(model.card.outputs[0].name, "cuda", device_id)
    return per_second(lambda: model.session.run_with_iobinding(binding), 32, seconds)


def pipeline(model: LoadedModel, files: list[bytes], seconds: float) -> dict[str, float]:
    """images/s through decode + the model, 64 concurrent clients, no HTTP: as the image endpoint takes a
    small photo by default (service/tasks/image/adapter.py, photo_batcher), decoded in the event loop
    and run there, with the photos that queued with it on the CPU, alone on a GPU."""
    image = model.card.image
    assert image is not None
    sizes: list[int] = []
    batcher = photo_batcher(model, Settings(), sizes.append)

    async def client(i: int, end: float) -> int:
        done = 0
        while time.perf_counter() < end:
            await asyncio.sleep(0)  # a request's turn of the loop, as the endpoint gives a photo's
            pixels = to_input(decode_photo(files[(i + done) % len(files)], 10**8, ["p"]), image)
            if batcher is not None:
                await batcher(pixels)
            else:
                model.run(pixels)
                sizes.append(1)
            done += 1
        return done

    async def run() -> tuple[int, float]:
        start = time.perf_counter()
        counts = await asyncio.gather(*(client(i, start + seconds) for i in range(64)))
        return sum(counts), time.perf_counter() - start

    done, took = asyncio.run(run())
    return {"images/s": done / took, "mean batch": float(np.mean(sizes)) if sizes else 0.0}


def check(
    models_dirs: list[Path], photo_dir: Path, cpu_only: bool, seconds: float, tolerance: float, device_id: int
) -> dict:
    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": device_name(),
        "onnxruntime": f"{ort.__version__} {ort.get_available_providers()}",
        "python": platform.python_version(),
        "models": {},
    }
    for directory in models_dirs:
        cpu = load_model(directory, Execution("cpu"))
        gpu = None if cpu_only else load_model(directory, Execution("cuda", device_id=device_id))
        sample, jpegs = photos(cpu, photo_dir), model_sized_jpegs(cpu, photo_dir)
        entry: dict = {"input": cpu.card.inputs[0].shape, "classes": len(cpu.card.labels)}
        entry["cpu"] = {"provider": cpu.provider, **model_alone(cpu, sample, seconds)}
        entry["cpu"]["pipeline"] = pipeline(cpu, jpegs, seconds * 2)
        if gpu is not None:
            p_cpu, p_gpu = probabilities(cpu, cpu.run(sample)), probabilities(gpu, gpu.run(sample))
            diff = float(np.abs(p_cpu - p_gpu).max())
            same_top1 = bool((p_cpu.argmax(1) == p_gpu.argmax(1)).all())
            entry["agreement"] = {"max_prob_diff": diff, "top1_same": same_top1, "ok": diff <= tolerance and same_top1}
            entry["cuda"] = {"provider": gpu.provider, "device": gpu.device, **model_alone(gpu, sample, seconds)}
            entry["cuda"]["io binding, batch 32"] = io_bound(gpu, sample, seconds, device_id)
            entry["cuda"]["pipeline"] = pipeline(gpu, jpegs, seconds * 2)
        result["models"][cpu.name] = entry
    return result


def table(result: dict) -> list[str]:
    lines = [
        f"## GPU check {result['date']}: {result['device']}",
        "",
        f"onnxruntime {result['onnxruntime']}, Python {result['python']}; images/s, host arrays in and out.",
        "",
        "| model | provider | "
        + " | ".join(f"batch {b}" for b in BATCHES)
        + " | IO binding b32 | pipeline | agreement |",
        "|---|---|" + "---|" * len(BATCHES) + "---|---|---|",
    ]
    for name, entry in result["models"].items():
        for provider in ("cpu", "cuda"):
            if provider not in entry:
                continue
            e = entry[provider]
            io = f"{e['io binding, batch 32']:,.0f}" if "io binding, batch 32" in e else ""
            pipe = f"{e['pipeline']['images/s']:,.0f} (mean batch {e['pipeline']['mean batch']:.1f})"
            agree = ""
            if provider == "cuda":
                a = entry["agreement"]
                agree = f"max prob diff {a['max_prob_diff']:.1e}, top-1 {'same' if a['top1_same'] else 'DIFFERS'}"
            cells = " | ".join(f"{e[f'batch {b}']:,.0f}" for b in BATCHES)
            lines.append(f"| {name} | {e['provider']} | {cells} | {io} | {pipe} | {agree} |")
        if "cuda" in entry:
            ratios = ", ".join(f"b{b} {entry['cuda'][f'batch {b}'] / entry['cpu'][f'batch {b}']:.1f}x" for b in BATCHES)
            lines.append(f"| {name} | CUDA vs CPU | {ratios} | | | | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imagenet", type=Path, help="a 1000-class 224x224 model folder (make gpu-prepare)")
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="real photos (default: the shared samples)")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest class-probability difference")
    parser.add_argument("--device-id", type=int, default=0)
    parser.add_argument("--cpu-only", action="store_true", help="no CUDA: check the script and the CPU half")
    args = parser.parse_args(argv)
    dirs = [REPO / "models" / "image-tagging", *([args.imagenet] if args.imagenet else [])]
    result = check(dirs, args.photos, args.cpu_only, args.seconds, args.tolerance, args.device_id)
    lines = table(result)
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    agreement = [e["agreement"]["ok"] for e in result["models"].values() if "agreement" in e]
    if not all(agreement):
        print("CUDA and CPU disagree beyond the tolerance")
    return 0 if all(agreement) else 1


if __name__ == "__main__":
    sys.exit(main())
