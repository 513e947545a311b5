"""Every setting of the service, from one place: environment variables prefixed NNSERVE_.

Nothing else in service/ reads the environment, and nothing reads it at import: service/app.py makes
one Settings() and passes it on (in-process tests make their own). `make serve`, the bento and the
container all take the same variables, e.g. NNSERVE_PROVIDERS=auto NNSERVE_WORKERS=2 make serve.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from service.errors import ConfigError
from service.runtime import Execution, Providers

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NNSERVE_", frozen=True)

    models_dir: Path = Field(REPO_MODELS, description="Directory of model folders (model.onnx + card.json each).")
    version_policy: str = Field(
        "latest",
        description="Which versions of a model are served when policy.json says nothing: latest, all, latest:N.",
    )
    policy_file: Path | None = Field(
        None, description="The version policies (canary, shadow...); default: models_dir/policy.json."
    )
    model_poll_s: float = Field(
        2.0,
        ge=0,
        description="How often each worker looks for new, changed or removed versions; 0: only on a load call.",
    )
    models_dir_timeout_s: float = Field(
        20,
        gt=0,
        description="How long a management call waits for a look at the models directory (a hung mount); "
        "beyond, 503 while the models in force keep serving.",
    )
    max_card_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest card.json read; a larger one refuses its version, named."
    )
    management: bool = Field(
        False, description="Model management routes (load, unload, policy); behind the API keys when they are set."
    )
    providers: Providers = Field(
        "cpu",
        description="onnxruntime execution providers: cpu, cuda, tensorrt, or auto (CUDA when installed, else CPU).",
    )
    device_id: int = Field(0, ge=0, description="The GPU the CUDA and TensorRT providers run on.")
    cuda_options: dict[str, str] = Field(
        default_factory=dict,
        description='onnxruntime CUDA provider options, as JSON: {"cudnn_conv_algo_search": "HEURISTIC"}.',
    )
    tensorrt_cache_dir: Path | None = Field(None, description="TensorRT engine cache: built engines survive restarts.")
    provider_fallback: Literal["fail", "warn"] = Field(
        "fail",
        description="A GPU provider asked for but not bound: refuse the model (fail), or serve on the CPU and warn.",
    )
    threads: int = Field(
        0, ge=0, description="onnxruntime intra-op threads per session; 0: the cores shared out among the workers."
    )
    tabular_batch_max: int = Field(
        64, ge=0, description="Most rows of waiting tabular requests run together (never waits for more); 0 or 1: off."
    )
    dynamic_batch_max: int = Field(
        0,
        ge=0,
        description="Most photos in one run of an image model (dynamic batching); 0: in the event loop, small "
        "photos that queued together on the CPU (8 at most), one a run on a GPU; N: a batcher in a thread for "
        "every photo; 1: off.",
    )
    dynamic_batch_wait_ms: float = Field(
        -1,
        ge=-1,
        description="How long a batch in a thread may wait to fill; set above 0, it asks for that batcher; "
        "-1: 2 ms on a GPU, 0 (never) on the CPU.",
    )
    workers: int = Field(0, ge=0, description="Worker processes, each with its own sessions; 0: one per CPU core.")
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="The Open Inference Protocol over gRPC (with the health and reflection services), served by "
        "every worker; 0: no gRPC.",
    )
    grpc_host: str = Field("0.0.0.0", min_length=1, description="The address gRPC listens on.")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request line and headers, in bytes; larger gets 431 and a close."
    )
    max_headers: int = Field(100, ge=8, description="Most request headers; more gets 431 and a close.")
    header_timeout_s: float = Field(
        20, gt=0, description="Time a request's headers have to arrive, from its first byte; late gets 408."
    )
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest request body; larger gets 413.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest decoded photo (width x height); 413 beyond.")
    fast_jpeg_decode: bool = Field(
        False,
        description="Decode a large JPEG at a reduced scale (libjpeg's 1/2, 1/4, 1/8) no smaller than the model's "
        "resize: several times faster on camera photos; scores move slightly (docs/performance.md). Predictions "
        "only: an explanation's heat map keeps the whole photo.",
    )
    max_batch_rows: int = Field(1024, ge=1, description="Most rows in one tabular batch request.")
    max_batch_images: int = Field(64, ge=1, description="Most photos in one batch request.")
    explain_background_rows: int = Field(
        16,
        ge=1,
        le=256,
        description="Rows drawn from a tabular card's reference distributions that an explanation's "
        "baseline averages over (service/tasks/tabular/explain.py).",
    )
    explain_max_rows: int = Field(
        65_536,
        ge=1024,
        description="Most graph rows one tabular explanation may run: exact Shapley values when every "
        "coalition fits, sampled permutations up to it otherwise.",
    )
    explain_permutations: int = Field(
        64,
        ge=2,
        description="Permutations a sampled tabular explanation takes, at most (fewer when the rows cap binds).",
    )
    explain_max_batch: int = Field(
        16, ge=1, description="Most rows (photos) in one explain-batch request; beyond: 413."
    )
    explain_grid: int = Field(
        8,
        ge=2,
        le=32,
        description="A photo's explanation occludes a grid of this many cells a side (grid² + 1 photos run).",
    )
    max_in_flight: int = Field(32, ge=0, description="Prediction requests in progress per worker; 0: no limit.")
    max_queue: int = Field(64, ge=0, description="Prediction requests waiting for a slot per worker; beyond: 503.")
    request_timeout_s: int = Field(30, ge=1, description="BentoML's per-request timeout (answers 504).")
    shutdown_grace_s: float = Field(
        20,
        ge=0,
        description="After SIGTERM, how long in-flight predictions may take before the worker exits anyway; "
        "keep it under BentoML's 30 s kill and the orchestrator's grace period (Kubernetes: 30 s).",
    )
    drift_window_rows: int = Field(
        5000, ge=0, description="Rows per model version (per worker) that drift is measured over; 0: no drift."
    )
    drift_window_s: float = Field(3600, ge=0, description="Oldest row in the drift window, seconds; 0: no limit.")
    drift_psi_threshold: float = Field(
        0.2, gt=0, description="A feature or output whose PSI passes this is drifted: a warning in /v1/health."
    )
    drift_min_rows: int = Field(500, ge=1, description="Rows in the window before a feature can count as drifted.")
    payload_log_dir: Path | None = Field(
        None, description="Where sampled requests and answers are written as JSON lines; unset: no payload log."
    )
    payload_log_sample: float = Field(1.0, ge=0, le=1, description="Share of predictions the payload log keeps.")
    payload_log_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Payload log file size before rotating.")
    payload_log_max_files: int = Field(10, ge=1, description="Payload log files kept per worker, the current included.")
    payload_log_dir_max_bytes: int = Field(
        1 << 30,
        ge=1 << 20,
        description="The payload log directory's bytes in all (every worker's files, outcomes."
        "sqlite); beyond, the oldest data goes, counted.",
    )
    payload_log_queue: int = Field(
        10_000, ge=0, description="Entries waiting for the payload log's writer; beyond, dropped and counted."
    )
    feedback_ttl_s: float = Field(
        7 * 86_400, gt=0, description="How long a logged prediction can be joined to its outcome (POST .../feedback)."
    )
    feedback_keep_s: float = Field(
        30 * 86_400, gt=0, description="How long posted outcomes are kept (online measures, training data)."
    )
    feedback_window: int = Field(5000, ge=1, description="Joined rows per model version the online metrics cover.")
    access_log: bool = Field(True, description="Log one line per request.")
    docs_ui: bool = Field(
        True, description="Serve the API docs page at /docs and / (local assets only); /docs.json stays."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text: BentoML's log lines; json: one JSON object per line, with the request id."
    )
    api_keys: str = Field("", description="Comma-separated API keys; empty (and no keys file): no authentication.")
    api_keys_file: Path | None = Field(None, description="A file of API keys, one per line (# comments).")
    auth_exempt_paths: str = Field(
        "/livez,/readyz,/healthz,/metrics,/v2/health/live,/v2/health/ready,/schema.json,"
        "/grpc.health.v1.Health/Check,/grpc.health.v1.Health/Watch,"
        "/inference.GRPCInferenceService/ServerLive,/inference.GRPCInferenceService/ServerReady",
        description="Comma-separated paths that need no API key: probes, the metrics scraper, and the schema "
        "BentoML's client is built from (so that it reports a refused call as 401); a gRPC method's path is "
        "/<service>/<method>.",
    )

    @field_validator("version_policy")
    @classmethod
    def _version_policy(cls, value: str) -> str:
        if value in ("latest", "all") or re.fullmatch(r"latest:[1-9][0-9]*", value):
            return value
        raise ValueError("expected latest, all or latest:N (N >= 1)")

    def execution(self) -> Execution:
        return Execution(
            self.providers,
            self.device_id,
            self.cuda_options,
            self.tensorrt_cache_dir,
            self.provider_fallback,
            self.threads or self.cores_per_worker(),
        )

    def cores_per_worker(self) -> int:
        """Workers that each let onnxruntime use every core fight over them: with 2 workers on 2 cores,
        the CIFAR photo scenario ran 0.32x raw onnxruntime with a 164 ms p99, and 0.45x with 26 ms
        once each worker's sessions took one thread (loadtests/RESULTS.md)."""
        cores = available_cores()
        return max(1, cores // (self.workers or cores))


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: the machine's, or fewer under a CPU quota (a container's or a
    Kubernetes pod's CPU limit), counted as BentoML counts them for `workers="cpu_count"`: whole cores,
    at least one. os.cpu_count() alone gives a pod on a 64-core node 64 onnxruntime threads per worker."""
    cores = os.cpu_count() or 1
    try:
        if (cgroup / "cpu.max").exists():  # cgroup v2: "<quota> <period>" or "max <period>"
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        else:  # cgroup v1
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
    except (OSError, ValueError):
        return cores
    if quota.isdigit() and period.isdigit() and int(period) > 0:
        return max(1, min(cores, int(quota) // int(period)))
    return cores  # "max" or -1: no quota


PREFIX = Settings.model_config["env_prefix"]


def load_settings(**values: object) -> Settings:
    """The settings from the environment (and `values`); a value that cannot be served with is one
    ConfigError line naming the variable, what it holds and what it takes, never a traceback."""
    try:
        return Settings(**values)
    except ValidationError as e:
        problems = [_problem(str(error["loc"][0]), error["input"], error["msg"]) for error in e.errors()]
        raise ConfigError("; ".join(problems)) from None
    except SettingsError as e:  # a value the source could not even parse (a dict's JSON)
        name = next((n for n in Settings.model_fields if f'"{n}"' in str(e)), "")
        raise ConfigError(_problem(name, os.environ.get(PREFIX + name.upper()), "not valid JSON")) from None


def _problem(name: str, value: object, message: str) -> str:
    described = Settings.model_fields[name].description if name in Settings.model_fields else None
    text = f"{PREFIX}{name.upper()}={value!r}: {message.removeprefix('Value error, ')}"
    return text + (f" ({described})" if described else "")
