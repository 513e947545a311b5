"""The one layer around onnxruntime: load a model directory, check it, bind providers, warm up, run.

A model directory holds `model.onnx` and `card.json`. Loading refuses (ModelLoadError, naming the
file and the problem) when either is missing or unreadable, when the ONNX file is not the one the
card describes (sha256), or when the graph's inputs/outputs differ from the card's; what a task
needs of a card beyond that, its adapter checks (service/tasks/). No torch here: this module is on
the serving path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from service.cards import CARD_FILE, ONNX_FILE, ModelCard, read_card, session_signature
from service.files import MAX_CARD_BYTES, FileRefused, check_regular

log = logging.getLogger(__name__)

Providers = Literal["cpu", "cuda", "tensorrt", "auto"]
CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@dataclass(frozen=True)
class Execution:
    """Where sessions run: the provider setting and its options (service.settings fills it)."""

    providers: Providers = "cpu"
    device_id: int = 0
    cuda_options: dict[str, str] = field(default_factory=dict)  # onnxruntime CUDA provider options
    tensorrt_cache: Path | None = None  # TensorRT engine cache: built engines survive restarts
    fallback: Literal["fail", "warn"] = "fail"  # a GPU provider asked for that does not bind
    threads: int = 0  # intra-op threads; 0 lets onnxruntime choose

    @property
    def wanted(self) -> str:
        """The provider that must bind: the setting's first choice (auto: CUDA when installed)."""
        if self.providers == "auto":
            return CUDA if CUDA in ort.get_available_providers() else CPU
        return {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}[self.providers]

    def chain(self) -> list[str | tuple[str, dict[str, str]]]:
        """onnxruntime's providers argument, in priority order, with options; CPU always last."""
        cuda: dict[str, str] = {"device_id": str(self.device_id), **self.cuda_options}
        trt: dict[str, str] = {"device_id": str(self.device_id)}
        if self.tensorrt_cache is not None:
            trt |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(self.tensorrt_cache)}
        wanted = self.wanted
        if wanted == TENSORRT:
            return [(TENSORRT, trt), (CUDA, cuda), CPU]
        if wanted == CUDA:
            return [(CUDA, cuda), CPU]
        return [CPU]


def onnxruntime_packages(site: Path) -> list[str]:
    """The onnxruntime distributions installed in `site` (a site-packages directory)."""
    names = {d.metadata["Name"].lower() for d in importlib.metadata.distributions(path=[str(site)])}
    return sorted(names & {"onnxruntime", "onnxruntime-gpu"})


ORT_SITE = Path(ort.__file__).resolve().parents[1]  # the site-packages onnxruntime was imported from


def check_one_onnxruntime(site: Path = ORT_SITE) -> None:
    """onnxruntime and onnxruntime-gpu install the same `onnxruntime` package: in one directory, the one
    installed last overwrites the other file by file, and the result may bind no GPU or not load at all."""
    found = onnxruntime_packages(site)
    if len(found) > 1:
        raise ImportError(
            f"{site} holds both {' and '.join(found)}: they overwrite each other. Reinstall one: "
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install -e '.[gpu]' (or '.[cpu]')"
        )


check_one_onnxruntime()


SHRINK_ARENA = ort.RunOptions()
SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


class ModelLoadError(RuntimeError):
    """A model directory that must not be served; the message names the file and the problem."""


@dataclass
class LoadedModel:
    card: ModelCard
    session: ort.InferenceSession
    directory: Path
    provider: str  # the execution provider that actually bound
    input_names: list[str] = field(default_factory=list)
    device: str = "cpu"  # "cpu", or "cuda:<id>" when a GPU provider bound
    shrink_above: int = 256  # rows (photos) a run must exceed for the arena to give memory back after it
    fetch: list[str] | None = None  # the output to compute (a brought graph's, named by its card); None: the first

    def __post_init__(self) -> None:
        # On the CPU a run goes straight to onnxruntime's C++ session: InferenceSession.run checks the feed's
        # names and OrtValues (ours are the card's inputs, numpy arrays, checked before) and retries on the CPU
        # when a GPU provider fails, which a CPU session never needs: about 2 us of a one-row housing run's 20.
        outputs = self.fetch or [self.session.get_outputs()[0].name]
        direct = getattr(self.session, "_sess", None) if self.provider == "CPUExecutionProvider" else None
        self._run = (lambda feed: direct.run(outputs, feed, None)) if direct is not None else (
            lambda feed: self.session.run(self.fetch, feed))  # fmt: skip

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"

    @property
    def name(self) -> str:
        return self.card.name

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        """Runs the graph on inputs in the card's input order; returns its (single) output. After a
        large batch, onnxruntime's memory arena gives back what the batch took: without that, one
        64-photo request left a worker 85 MB larger for good (make memory: +25% 10 s after a burst of
        the largest legal requests; with it +5%). Small runs, the hot path, skip the shrinking."""
        feed = dict(zip(self.input_names, inputs, strict=True))
        if len(inputs[0]) > self.shrink_above:
            return self.session.run(self.fetch, feed, SHRINK_ARENA)[0]
        return self._run(feed)[0]

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        """One run at each batch size: on a GPU the first run of each input shape pays for kernel
        selection (cuDNN's algorithm search), which must not fall on a request."""
        for rows in batch_sizes:
            self.run(*[_zeros([rows if d == "N" else d for d in t.shape], t.dtype) for t in self.card.inputs])


def _zeros(shape: list[int], dtype: str) -> np.ndarray:
    """A warm-up input: zeros, or empty strings for a string input (object zeros are not strings)."""
    return np.full(shape, "", dtype=object) if dtype == "object" else np.zeros(shape, dtype=dtype)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_model(
    directory: Path, execution: Execution | None = None, max_card_bytes: int = MAX_CARD_BYTES
) -> LoadedModel:
    """Loads, checks, binds and warms up (batch 1) one model directory."""
    execution = execution or Execution()
    card_path, onnx_path = directory / CARD_FILE, directory / ONNX_FILE
    for path in (card_path, onnx_path):
        try:
            check_regular(path)  # never a FIFO: opening one would block this look at the folder for good
        except FileNotFoundError:
            raise ModelLoadError(f"{path}: missing") from None
        except FileRefused as e:
            raise ModelLoadError(str(e)) from None
    try:
        card = read_card(directory, max_card_bytes)
    except FileRefused as e:
        raise ModelLoadError(str(e)) from None
    except Exception as e:  # pydantic's ValidationError, or its own recursion guard on a deep document
        raise ModelLoadError(f"{card_path}: not a valid model card ({str(e).splitlines()[0]})") from None
    digest = sha256_file(onnx_path)
    if digest != card.onnx_sha256:
        raise ModelLoadError(
            f"{onnx_path}: sha256 {digest[:12]}... is not the card's {card.onnx_sha256[:12]}... "
            "(the ONNX file was changed or truncated after its card was written)"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = execution.threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=execution.chain())
    except Exception as e:  # onnxruntime raises its own exception types for bad graphs
        raise ModelLoadError(f"{onnx_path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from e
    inputs, outputs = session_signature(session)
    if inputs != card.inputs or outputs != card.outputs:
        raise ModelLoadError(
            f"{card_path}: the card's signature {card.inputs} -> {card.outputs} "
            f"is not the graph's {inputs} -> {outputs}"
        )
    bound = check_binding(session, execution, onnx_path)
    device = f"cuda:{execution.device_id}" if bound in (CUDA, TENSORRT) else "cpu"
    # An image batch's activations are large from a few photos on; a table's only past hundreds of rows.
    shrink_above = 8 if card.image is not None else 256
    fetch = [card.graph.output] if card.graph is not None else None
    if fetch and fetch[0] not in [t.name for t in outputs]:
        raise ModelLoadError(f"{card_path}: graph.output {fetch[0]!r} is not one of the graph's outputs "
                             f"{[t.name for t in outputs]}")  # fmt: skip
    model = LoadedModel(card, session, directory, bound, [t.name for t in inputs], device, shrink_above, fetch)
    model.warm_up([1])
    log.info("loaded %s v%s from %s on %s (%s)", card.name, card.version, directory, bound, model.device)
    return model


def check_binding(session: ort.InferenceSession, execution: Execution, onnx_path: Path) -> str:
    """The provider that actually bound. onnxruntime falls back to the CPU quietly when a GPU provider
    cannot start (no GPU, CUDA libraries missing, the CPU-only package): a GPU asked for and not
    bound refuses the model (fallback "fail") or says so in the log (fallback "warn")."""
    bound = session.get_providers()[0]
    if bound != execution.wanted:
        problem = (
            f"{onnx_path}: {execution.wanted} was asked for (NNSERVE_PROVIDERS={execution.providers}) but {bound} "
            f"bound; onnxruntime offers {ort.get_available_providers()} (is onnxruntime-gpu installed, a GPU "
            "visible, CUDA and cuDNN on the library path?)"
        )
        if execution.fallback == "fail" and execution.providers != "auto":  # auto means: whatever binds
            raise ModelLoadError(problem + "; NNSERVE_PROVIDER_FALLBACK=warn serves on it anyway")
        log.warning("%s; serving on %s (NNSERVE_PROVIDER_FALLBACK=warn)", problem, bound)
    return bound


def discover(models_dir: Path) -> list[Path]:
    """Model directories under `models_dir`: every sub-directory that holds a card or an ONNX file,
    except hidden ones (a model being copied in by `--publish` is a hidden folder until it is whole)."""
    if not models_dir.is_dir():
        raise ModelLoadError(f"{models_dir}: models directory missing")
    return sorted(
        p
        for p in models_dir.iterdir()
        if not p.name.startswith(".") and ((p / CARD_FILE).exists() or (p / ONNX_FILE).exists())
    )
