"""TorchServe serving nnserve's models the way its docs set a model up: a model archive (.mar) per
model made by torch-model-archiver around a custom handler (this file's `handle`), registered at
start-up with a worker per core (minWorkers = maxWorkers) and TorchServe's dynamic batching
(batchSize 16, maxBatchDelay 1 ms), answering POST /predictions/<name>: nnserve's JSON body (one
row, or nnserve's batch request), or a photo file as the body, as TorchServe's image handlers take one.
The handler does nnserve's work (loadtests/peers/common.py); TorchServe's Java frontend (Netty) takes
the HTTP, its Python workers run the handler. Token authorization is off, as for the other stacks.

    python loadtests/peers/torchserve_app.py --port PORT --workers N    (archives, writes config, runs torchserve)

TorchServe needs Java (Debian's openjdk-17-jre-headless) and its model workers import torch (pinned to
the CPU wheel, 2.13.0), though nothing here runs a torch model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_served: Any = None


def handle(data: list[dict] | None, context: Any) -> list[Any] | None:
    """TorchServe's entry point: a batch of requests in, one answer per request out."""
    global _served
    from common import TAGGER, ImageModel, TabularModel  # on PYTHONPATH (this folder), set by main() below
    from pydantic import ValidationError

    name = context.manifest["model"]["modelName"]
    if _served is None:
        _served = ImageModel(name) if name == TAGGER else TabularModel(name)
    if data is None:  # the call TorchServe makes at load
        return None
    bodies = [request.get("body") or request.get("data") for request in data]
    if isinstance(_served, ImageModel):
        return [_served.tag(bytes(photo)) for photo in bodies]
    field = _served.types.batch_field
    if any(isinstance(b, dict) and field in b for b in bodies):  # nnserve's batch requests: one at a time
        return [_served.predict_batch(_served.validate_batch(b)) for b in bodies]
    rows: list[dict | None] = []
    for i, body in enumerate(bodies):
        try:
            rows.append(_served.validate(body))
        except ValidationError as e:
            context.set_response_status(422, str(e).splitlines()[0], idx=i)
            rows.append(None)
    answers = iter(_served.predict([r for r in rows if r is not None]))
    return [next(answers) if r is not None else {"detail": "invalid request"} for r in rows]


def main() -> int:
    from common import MODELS, TABULAR, TAGGER, command_line, free_port

    args = command_line()
    root = Path(tempfile.mkdtemp(prefix="torchserve-"))
    store = root / "model-store"
    store.mkdir()
    bin_dir = Path(sys.executable).parent
    names = (*TABULAR, *([TAGGER] if TAGGER else []))
    for name in names:
        subprocess.run([str(bin_dir / "torch-model-archiver"), "--model-name", name, "--version", "1.0", "--handler",
                        f"{__file__}", "--export-path", str(store), "--archive-format", "default"],
                       check=True)  # fmt: skip
    per_model = {"minWorkers": args.workers, "maxWorkers": args.workers, "batchSize": 16, "maxBatchDelay": 1,
                 "responseTimeout": 30}  # fmt: skip
    models = {name: {"1.0": {"defaultVersion": True, "marName": f"{name}.mar", **per_model}} for name in names}
    (root / "config.properties").write_text(
        f"inference_address=http://127.0.0.1:{args.port}\n"
        f"management_address=http://127.0.0.1:{free_port()}\n"
        f"metrics_address=http://127.0.0.1:{free_port()}\n"
        f"model_store={store}\nload_models=all\ndisable_token_authorization=true\nasync_logging=true\n"
        f"default_workers_per_model={args.workers}\nmodels={json.dumps(models)}\n"
    )
    logs = str(root / "logs")  # TorchServe writes logs/ under its working directory unless told
    env = {**os.environ, "PYTHONPATH": str(HERE), "NNSERVE_MODELS_DIR": str(MODELS.resolve()),
           "LOG_LOCATION": logs, "METRICS_LOCATION": logs}  # fmt: skip
    command = [str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs", "--model-store", str(store),
               "--ts-config", str(root / "config.properties"), "--disable-token-auth"]  # fmt: skip
    return subprocess.run(command, cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
