"""The Open Inference Protocol over gRPC: Triton's and KServe's `inference.GRPCInferenceService`, on the same
models, versions and data plane as the HTTP form (service/protocol/oip.py).

Supported: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig (what tritonclient
and perf_analyzer read: the graph's tensors and the batch limit), ModelStatistics (the service's answers, every
worker's), ModelInfer with typed `contents` or `raw_input_contents` (answered in the same form; FP16 is raw
only) and the classification extension, and the repository extension (RepositoryIndex open; load and unload
behind NNSERVE_MANAGEMENT). The rest of Triton's service (streaming, shared memory, trace and log settings)
answers UNIMPLEMENTED. Each method is a translation: messages in, the data plane's verbs, messages out; the
edge (edge.py) does the rest.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from service import telemetry
from service.dataplane.plane import DataPlane
from service.errors import ServiceError
from service.models.control import Control
from service.models.registry import Registry
from service.protocol import tensors, views
from service.protocol.context import REQUEST_KEY, Context
from service.protocol.rpc.edge import RpcEdge
from service.protocol.rpc.proto import grpc_service_pb2 as pb
from service.protocol.rpc.proto import model_config_pb2 as config_pb
from service.protocol.tensors import OIP_DTYPES, Declared, OIPError
from service.shutdown import drain

SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = ["classification", "model_repository", "statistics"]
TYPED = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "UINT8": "uint_contents",
    "BYTES": "bytes_contents",
}  # fmt: skip  (FP16 has no typed field)
CONFIG_TYPES = {"FP32": config_pb.TYPE_FP32, "FP64": config_pb.TYPE_FP64, "INT64": config_pb.TYPE_INT64,
                "INT32": config_pb.TYPE_INT32, "UINT8": config_pb.TYPE_UINT8, "FP16": config_pb.TYPE_FP16,
                "BYTES": config_pb.TYPE_STRING}  # fmt: skip


class Inference:
    """The methods served (server.py registers those this class has; the others answer UNIMPLEMENTED)."""

    def __init__(self, edge: RpcEdge, registry: Registry, plane: DataPlane, control: Control,
                 server_version: str) -> None:  # fmt: skip
        self.edge, self.registry, self.plane, self.control = edge, registry, plane, control
        self.server_version = server_version

    # --- each method: the edge, then the translation below --------------------------------------------------
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/ModelInfer", self.infer, request, prediction=True)

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/ServerLive", self.live, request)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/ServerReady", self.ready, request)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/ModelReady", self.model_ready, request)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/ServerMetadata", self.server_metadata, request)

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/ModelMetadata", self.model_metadata, request)

    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/ModelConfig", self.model_config, request)

    async def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/ModelStatistics", self.statistics, request)

    async def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/RepositoryIndex", self.index, request)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> pb.RepositoryModelLoadResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/RepositoryModelLoad", self.load, request)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> pb.RepositoryModelUnloadResponse:  # noqa: N802
        return await self.edge.call(context, f"/{SERVICE}/RepositoryModelUnload", self.unload, request)

    # --- health and metadata ------------------------------------------------------------------------------
    async def live(self, ctx: Context, request: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ready(self, ctx: Context, request: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.registry.ready and not drain.draining)

    async def model_ready(self, ctx: Context, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        """Triton's answer: false for a model or version not served, not an error."""
        try:
            self.registry.get(request.name, request.version or None)
        except ServiceError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, ctx: Context, request: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="nnserve", version=self.server_version, extensions=EXTENSIONS)

    async def model_metadata(self, ctx: Context, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        adapter = self.registry.get(request.name, request.version or None)
        card = adapter.model.card

        def tensor(t: Any) -> pb.ModelMetadataResponse.TensorMetadata:
            return pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=OIP_DTYPES[t.dtype],
                                                           shape=[-1 if d == "N" else d for d in t.shape])  # fmt: skip

        return pb.ModelMetadataResponse(name=card.name, versions=list(self.registry.served(card.name).versions),
                                        platform="onnxruntime_onnx", inputs=[tensor(t) for t in card.inputs],
                                        outputs=[tensor(t) for t in card.outputs])  # fmt: skip

    async def model_config(self, ctx: Context, request: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
        """Triton's model configuration, as far as a card says it: the tensors (dims without the batch's),
        the batch limit, the task."""
        adapter = self.registry.get(request.name, request.version or None)
        card = adapter.model.card
        batched = all(t.shape[:1] == ["N"] for t in (*card.inputs, *card.outputs))

        def dims(t: Any) -> list[int]:
            return [-1 if d == "N" else d for d in (t.shape[1:] if batched else t.shape)]

        config = config_pb.ModelConfig(
            name=card.name, platform="onnxruntime_onnx", backend="onnxruntime",
            max_batch_size=adapter.batch_limit()[0] if batched else 0,
            input=[config_pb.ModelInput(name=t.name, data_type=CONFIG_TYPES[OIP_DTYPES[t.dtype]], dims=dims(t))
                   for t in card.inputs],
            output=[config_pb.ModelOutput(name=t.name, data_type=CONFIG_TYPES[OIP_DTYPES[t.dtype]], dims=dims(t))
                    for t in card.outputs],
            parameters={k: config_pb.ModelParameter(string_value=v if isinstance(v, str) else json.dumps(v))
                        for k, v in adapter.describe().items()},
        )  # fmt: skip
        return pb.ModelConfigResponse(config=config)

    async def statistics(self, ctx: Context, request: pb.ModelStatisticsRequest) -> pb.ModelStatisticsResponse:
        """Answers by version, over every worker (nnserve_predictions_total); `success.ns` sums the latency
        of every answer, failed ones included (one histogram holds both)."""
        if request.name:
            self.registry.get(request.name, request.version or None)  # NOT_FOUND for one not served
        totals = telemetry.prediction_totals()
        stats = []
        for name, served in sorted(self.registry.table.models.items()):
            for version in served.versions:
                if (request.name and name != request.name) or (request.version and version != request.version):
                    continue
                t = totals.get((name, version), {"success": 0, "fail": 0, "seconds": 0.0})
                duration = pb.StatisticDuration
                inference = pb.InferStatistics(success=duration(count=int(t["success"]), ns=int(t["seconds"] * 1e9)),
                                               fail=duration(count=int(t["fail"])))  # fmt: skip
                answered = int(t["success"])
                stats.append(pb.ModelStatistics(name=name, version=version, inference_count=answered,
                                                execution_count=answered, inference_stats=inference))  # fmt: skip
        return pb.ModelStatisticsResponse(model_stats=stats)

    # --- the repository extension (service/models/control.py) ------------------------------------------------
    async def index(self, ctx: Context, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
        entries = [e for e in views.index(self.registry) if e["state"] == "READY" or not request.ready]
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

    async def load(self, ctx: Context, request: pb.RepositoryModelLoadRequest) -> pb.RepositoryModelLoadResponse:
        if request.parameters:
            raise OIPError(400, "load parameters (a config or files override) are not supported: change the folder")
        await self.control.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def unload(self, ctx: Context, request: pb.RepositoryModelUnloadRequest) -> pb.RepositoryModelUnloadResponse:
        await self.control.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # --- inference -----------------------------------------------------------------------------------------------
    async def infer(self, ctx: Context, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """The version the request pins, else the default or the canary (the same draw as HTTP, keyed by
        `x-request-key` metadata)."""
        routed = self.plane.route(request.model_name, request.model_version or None, ctx.header(REQUEST_KEY))
        adapter = routed.adapter
        model = adapter.model
        declared = [Declared(i.name, i.datatype, list(i.shape)) for i in request.inputs]
        checked = tensors.checked(model, declared, adapter.batch_limit())
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise OIPError(400, f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs: "
                                "one per input, in order")  # fmt: skip
        arrays = {}
        for i, (item, (spec, shape)) in enumerate(zip(request.inputs, checked, strict=True)):
            if raw:
                if item.HasField("contents"):
                    raise OIPError(400, f"input {spec.name}: contents and raw_input_contents together: send one")
                arrays[spec.name] = tensors.from_raw(spec, raw[i], shape, f"raw_input_contents[{i}] "
                                                                          f"of {len(raw[i])} bytes")  # fmt: skip
            else:
                arrays[spec.name] = _typed(spec, item, shape)
        ctx.answered_by(adapter.name, adapter.version)
        output = await self.plane.infer(routed, tuple(arrays[name] for name in model.input_names))
        name = model.card.graph.output if model.card.graph is not None else model.card.outputs[0].name
        return _response(model, request, {name: output}, bool(raw))


def _typed(spec: Any, item: pb.ModelInferRequest.InferInputTensor, shape: list[int]) -> np.ndarray:
    """An input's typed contents: the one field of its datatype, as many values as its shape holds."""
    datatype = OIP_DTYPES[spec.dtype]
    field = TYPED.get(datatype)
    used = [f.name for f, _ in item.contents.ListFields()]
    if field is None:
        raise OIPError(400, f"input {spec.name}: {datatype} has no typed contents: send raw_input_contents")
    if used != [field]:
        raise OIPError(400, f"input {spec.name}: datatype {datatype} takes its values in contents.{field}, "
                            f"got {', '.join(used) or 'no contents'}")  # fmt: skip
    values = getattr(item.contents, field)
    if datatype == "BYTES":
        try:
            values = [v.decode() for v in values]
        except UnicodeDecodeError:
            raise OIPError(400, f"input {spec.name}: an element of contents.bytes_contents is not UTF-8 text") from None
    return tensors.from_values(spec, list(values), shape)


def _response(model: Any, request: pb.ModelInferRequest, results: dict[str, np.ndarray],
              raw: bool) -> pb.ModelInferResponse:  # fmt: skip
    """The requested outputs (all without a list), raw when the inputs came raw or a datatype has no typed
    field (the protocol: raw for one output, raw for all)."""
    answer = pb.ModelInferResponse(model_name=model.name, model_version=model.card.version, id=request.id)
    values = []
    for item in request.outputs or [pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in results]:
        if item.name not in results:
            raise OIPError(400, f"model {model.name} has outputs {sorted(results)}, not {item.name!r}")
        value = results[item.name]
        if "classification" in item.parameters:  # "score:index:label" strings
            value = tensors.classify(model, value, _parameter(item.parameters["classification"]))
        values.append((item.name, value))
    raw = raw or any(tensors.datatype(v) not in TYPED for _, v in values)
    for name, value in values:
        datatype = tensors.datatype(value)
        output = answer.outputs.add(name=name, datatype=datatype, shape=value.shape)
        if raw:
            answer.raw_output_contents.append(tensors.to_raw(value))
        elif datatype == "BYTES":
            output.contents.bytes_contents.extend(str(v).encode() for v in value.ravel())
        else:
            getattr(output.contents, TYPED[datatype]).extend(value.ravel().tolist())
    return answer


def _parameter(p: pb.InferParameter) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None
