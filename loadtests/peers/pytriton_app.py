"""Triton Inference Server, through NVIDIA's PyTriton (its wheel ships a real `tritonserver`, CPU here),
serving nnserve's models as Triton serves them: a table as one input tensor per column ([rows, 1],
the datatype of the column in the card's request type), a photo as a BYTES tensor (the file, sent
binary), answered by the Open Inference Protocol at /v2/models/<name>/infer. Configured as
PyTriton's docs set a model up for throughput: one model instance per core (a list of inference
callables) and Triton's dynamic batcher (1 ms queue delay). The inference callables do nnserve's work
(loadtests/peers/common.py): rows validated by nnserve's pydantic type and encoded by its encoder,
photos decoded by its image code; answered field by field (lists as JSON text).

    python loadtests/peers/pytriton_app.py --port PORT --workers N

PyTriton's Python-backend stub links the system's libpython3.11: this runs in a venv made with
/usr/bin/python3.11 (stacks.py), not one of another 3.11 build.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from common import TABULAR, TAGGER, GraphModel, ImageModel, TabularModel, columns, command_line, free_port  # noqa: I001
from pydantic import ValidationError
from pytriton.decorators import batch
from pytriton.exceptions import PyTritonBadParameterError
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tritonclient.utils import InferenceServerException

DTYPES = {"INT64": np.int64, "FP64": np.float64, "BOOL": np.bool_, "BYTES": np.bytes_}
FIELDS = ("model", "version", "warnings")  # nnserve's answer besides the prediction: strings


def infer_function(name: str):
    served = TabularModel(name)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        count = len(next(iter(inputs.values())))
        plain = {k: [v.decode() if isinstance(v, bytes) else v.item() for v in a[:, 0]] for k, a in inputs.items()}
        try:
            rows = [served.validate({k: values[i] for k, values in plain.items()}) for i in range(count)]
        except ValidationError as e:
            raise PyTritonBadParameterError(str(e)) from None
        answers = served.predict(rows)
        out = {served.types.output: np.array([[a[served.types.output]] for a in answers], np.float64)}
        for field in FIELDS:
            text = [json.dumps(a[field]) if field == "warnings" else a[field] for a in answers]
            out[field] = np.array([[t.encode()] for t in text], np.bytes_)
        return out

    return infer, served.types.output


def tagger_function():
    served = ImageModel(TAGGER)

    @batch
    def infer(photo: np.ndarray) -> dict[str, np.ndarray]:
        answers = [served.tag(bytes(p)) for p in photo[:, 0]]
        return {field: np.array([[(json.dumps(a[field]) if field == "tags" else a[field]).encode()] for a in answers],
                                np.bytes_) for field in ("model", "version", "tags")}  # fmt: skip

    return infer


def tensor_function(served: GraphModel):
    """The gRPC scenarios' model: the graph's own tensors in, its output out (Triton's gRPC endpoint)."""

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {served.output: served.run(*(inputs[name] for name, _, _ in served.inputs))}

    return infer


def serve(port: int, workers: int, grpc_port: int) -> None:
    config = TritonConfig(http_address="127.0.0.1", http_port=port, grpc_address="127.0.0.1",
                          grpc_port=grpc_port or free_port(), metrics_port=free_port(), log_verbose=0)  # fmt: skip
    with Triton(config=config) as triton:
        for name in TABULAR:
            graphs = [GraphModel(name) for _ in range(workers)]  # one model instance per core
            triton.bind(
                model_name=graphs[0].name, infer_func=[tensor_function(g) for g in graphs],
                inputs=[Tensor(name=n, dtype=np.dtype(d).type, shape=shape) for n, d, shape in graphs[0].inputs],
                outputs=[Tensor(name=graphs[0].output, dtype=np.float32, shape=(-1,))],
                config=ModelConfig(max_batch_size=1024, batcher=DynamicBatcher(max_queue_delay_microseconds=1000)),
            )  # fmt: skip
        for name in TABULAR:
            functions = [infer_function(name) for _ in range(workers)]  # one model instance per core
            inputs = [Tensor(name=k, dtype=DTYPES[kind], shape=(1,)) for k, kind in columns(name).items()]
            outputs = [Tensor(name=functions[0][1], dtype=np.float64, shape=(1,)),
                       *(Tensor(name=f, dtype=np.bytes_, shape=(1,)) for f in FIELDS)]  # fmt: skip
            triton.bind(
                model_name=name, infer_func=[f for f, _ in functions], inputs=inputs, outputs=outputs,
                config=ModelConfig(max_batch_size=256, batcher=DynamicBatcher(max_queue_delay_microseconds=1000)),
            )  # fmt: skip
        if TAGGER:
            triton.bind(
                model_name=TAGGER, infer_func=[tagger_function() for _ in range(workers)],
                inputs=[Tensor(name="photo", dtype=np.bytes_, shape=(1,))],
                outputs=[Tensor(name=f, dtype=np.bytes_, shape=(1,)) for f in ("model", "version", "tags")],
                config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=1000)),
            )  # fmt: skip
        triton.serve()


if __name__ == "__main__":
    args = command_line()
    for attempt in range(3):
        try:
            serve(args.port, args.workers, args.grpc_port)
            break
        except InferenceServerException as e:
            # PyTriton 0.7.0's model instances race at load: a second instance may ask the first for its
            # configuration before the first listens (ConnectionRefusedError, seen on a busy machine)
            print(f"model load failed (attempt {attempt + 1} of 3): {e}", file=sys.stderr, flush=True)
