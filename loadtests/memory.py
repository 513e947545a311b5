"""Memory under large legal requests: the service's resident memory before, during, and 10 s after a
burst of the largest requests the limits allow, on every bulk route; and after versions are unloaded.

    python -m loadtests.memory [--seconds 20] [--clients 4] [--cycles 4] [--versions 500]   (or: make memory)

First the unload cycles: 500 versions of the housing model loaded, then all but one retired, four times
(policy.json edited, as by hand); the resident memory after the fourth retirement must be within
[memory].max_unload_growth of the first's (glibc kept freed memory: 177 -> 600 -> 890 -> 1,040 -> 1,155 MB
before workers gave it back).

One worker, the default limits. The burst: 64 CIFAR photos as OIP binary tensors, 1,024 impressions
as OIP binary tensors, 1,024 houses as JSON, 64 photos as multipart files, from `--clients` threads
for `--seconds`. Memory is sampled every second. It exits 1 when memory 10 s after the burst is more
than [memory].max_rss_after of the level before it (loadtests/slo.toml), and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import httpx
import numpy as np

from loadtests.payloads import cifar_jpegs, houses, impressions
from loadtests.serving import REPO, bentoml_serve, service_rss_mb
from training.contract import AD_CLICK


def oip_binary(arrays: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    datatypes = {"float32": "FP32", "int64": "INT64", "uint8": "UINT8"}
    header = json.dumps({"inputs": [
        {"name": name, "shape": list(a.shape), "datatype": datatypes[a.dtype.name],
         "parameters": {"binary_data_size": a.nbytes}} for name, a in arrays.items()
    ]}).encode()  # fmt: skip
    body = header + b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    return body, {"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"}


def requests() -> list[tuple[str, dict]]:
    from PIL import Image

    photos = [jpeg for _, jpeg in cifar_jpegs()][:64]
    pixels = np.stack([np.asarray(Image.open(__import__("io").BytesIO(p)).convert("RGB")) for p in photos])
    rows = impressions()[:1024]
    numeric = np.array([[r["age"]] for r in rows], np.float32)
    codes = np.array([[f.code(r[f.name]) for f in AD_CLICK.categorical] for r in rows], np.int64)
    tagger, tagger_headers = oip_binary({"image": pixels})
    clicks, clicks_headers = oip_binary({"numeric": numeric, "categorical": codes})
    return [
        ("/v2/models/image-tagging/infer", {"content": tagger, "headers": tagger_headers}),
        ("/v2/models/ad-click/infer", {"content": clicks, "headers": clicks_headers}),
        ("/v1/housing-price/predict-batch", {"json": {"houses": houses()[:1024]}}),
        ("/v1/image-tagging/predict-batch", {"files": [("photos", (f"{i}.jpg", p)) for i, p in enumerate(photos)]}),
    ]


def versions_dir(root: Path, count: int) -> Path:
    """A models directory holding `count` versions of the housing model (hard links to one graph)."""
    folder = root / "models" / "housing-price"
    card = json.loads((REPO / "models" / "housing-price" / "card.json").read_text())
    for v in range(1, count + 1):
        (folder / str(v)).mkdir(parents=True)
        (folder / str(v) / "model.onnx").hardlink_to(REPO / "models" / "housing-price" / "model.onnx")
        (folder / str(v) / "card.json").write_text(json.dumps({**card, "version": str(v)}))
    return root / "models"


def serving(url: str, count: int, deadline_s: float = 300) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        versions = httpx.get(url + "/v1/health", timeout=30).json()["models"].get("housing-price", {}).get("versions")
        if versions is not None and len(versions) == count:
            return
        time.sleep(0.5)  # polling the watch, with a deadline
    raise TimeoutError(f"not serving {count} versions after {deadline_s} s")


def unload_cycles(cycles: int, count: int, limit: float) -> bool:
    """Loads `count` versions, then retires all but one, `cycles` times (by editing policy.json, as an
    operator would); the resident memory after each retirement must not ratchet up."""
    with tempfile.TemporaryDirectory() as tmp:
        models = versions_dir(Path(tmp), count)
        policy = models / "policy.json"
        after = []
        with bentoml_serve(models, NNSERVE_WORKERS="1", NNSERVE_MODEL_POLL_S="1", deadline_s=300) as url:
            for cycle in range(cycles):
                policy.write_text(json.dumps({"housing-price": {"versions": "all"}}))
                serving(url, count)
                loaded = service_rss_mb(url)
                policy.write_text("{}")
                serving(url, 1)
                time.sleep(5)  # the worker gives memory back 2 s after a retirement (service/models/registry.py)
                after.append(service_rss_mb(url))
                print(f"cycle {cycle + 1}: {count} versions {loaded:.0f} MB, then one {after[-1]:.0f} MB")
    held = after[-1] <= after[0] * (1 + limit)
    growth = after[-1] / after[0] - 1
    print(f"after {cycles} cycles: {after[-1]:.0f} MB against {after[0]:.0f} after the first ({growth:+.1%})"
          + ("" if held else f": BREACHED, more than {limit:.0%}"))  # fmt: skip
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="length of the burst (default 20)")
    parser.add_argument("--clients", type=int, default=4, help="threads sending at once (default 4)")
    parser.add_argument("--slo", type=Path, default=Path(__file__).with_name("slo.toml"))
    parser.add_argument("--cycles", type=int, default=4, help="load-and-retire cycles (default 4; 0: none)")
    parser.add_argument("--versions", type=int, default=500, help="versions loaded in each cycle (default 500)")
    args = parser.parse_args(argv)
    slo = tomllib.loads(args.slo.read_text())["memory"]
    limit = slo["max_rss_after"]
    cycles_held = unload_cycles(args.cycles, args.versions, slo["max_unload_growth"]) if args.cycles else True
    bodies = requests()
    with bentoml_serve(REPO / "models", NNSERVE_WORKERS="1") as url:
        with httpx.Client(base_url=url, timeout=60) as client:  # each route once: sessions and caches warm
            for route, kwargs in bodies:
                client.post(route, **kwargs).raise_for_status()
        before = service_rss_mb(url)
        stop = time.monotonic() + args.seconds
        counts = {route: 0 for route, _ in bodies}
        failures: list[str] = []

        def client_loop(offset: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                i = offset
                while time.monotonic() < stop:
                    route, kwargs = bodies[i % len(bodies)]
                    r = client.post(route, **kwargs)
                    counts[route] += 1
                    if r.status_code != 200:
                        failures.append(f"{route}: {r.status_code} {r.text[:100]}")
                    i += 1

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        during = []
        while any(t.is_alive() for t in threads):
            time.sleep(1)  # sampling interval
            during.append(service_rss_mb(url))
        for t in threads:
            t.join()
        time.sleep(10)  # the measure: 10 s after the burst
        after = service_rss_mb(url)
    print(f"requests: {counts}; failures: {len(failures)} {failures[:3]}")
    print(f"memory (server and worker): before {before:.0f} MB, during {min(during):.0f}-{max(during):.0f} MB, "
          f"10 s after {after:.0f} MB ({after / before - 1:+.1%})")  # fmt: skip
    held = after <= before * (1 + limit) and not failures
    print("memory returned" if held else f"BREACHED: more than {limit:.0%} above the level before, or failures")
    return 0 if held and cycles_held else 1


if __name__ == "__main__":
    sys.exit(main())
