"""Memory under large legal requests: the service's resident memory before, during, and 10 s after a
burst of the largest requests the limits allow, on every bulk route.

    python -m loadtests.memory [--seconds 20] [--clients 4]        (or: make memory)

One worker, the default limits. The burst: 64 CIFAR photos as OIP binary tensors, 1,024 impressions
as OIP binary tensors, 1,024 houses as JSON, 64 photos as multipart files, from `--clients` threads
for `--seconds`. Memory is sampled every second. It exits 1 when memory 10 s after the burst is more
than [memory].max_rss_after of the level before it (loadtests/slo.toml), and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import numpy as np

from loadtests.payloads import cifar_jpegs, houses, impressions
from tests.serving import REPO, bentoml_serve, service_rss_mb
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="length of the burst (default 20)")
    parser.add_argument("--clients", type=int, default=4, help="threads sending at once (default 4)")
    parser.add_argument("--slo", type=Path, default=Path(__file__).with_name("slo.toml"))
    args = parser.parse_args(argv)
    limit = tomllib.loads(args.slo.read_text())["memory"]["max_rss_after"]
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
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
