"""The Open Inference Protocol's tensors, whichever transport brought them (HTTP JSON or binary, gRPC typed
contents or raw bytes): an input checked against the graph's signature from its declared name, datatype and
shape before any array is made, its data read into the array the session takes, and an output written back.

Errors are OIPError: the HTTP status a client mistake gets (400, or 413 past the batch limit), and a message
naming the input; gRPC maps the status to its code (service/protocol/rpc/edge.py).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.cards import TensorSpec
from service.errors import ServiceError
from service.runtime import LoadedModel

OIP_DTYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "uint8": "UINT8",
              "float16": "FP16", "object": "BYTES"}  # fmt: skip


class OIPError(ServiceError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.message}


@dataclass(frozen=True, slots=True)
class Declared:
    """An input as a request declares it: values as they came, checked by `checked`."""

    name: Any
    datatype: Any
    shape: Any


def short(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 80 else text[:80] + "..."


def checked(model: LoadedModel, declared: list[Declared], limit: tuple[int, str]) -> list[tuple[TensorSpec, list[int]]]:
    """Every declared input against the graph's signature and the batch limit, from the declared shapes
    alone: each input's spec and shape, in the request's order."""
    expected = {t.name: t for t in model.card.inputs}
    names = [d.name for d in declared]
    if sorted(map(str, names)) != sorted(expected) or len(set(names)) != len(names):
        raise OIPError(400, f"model {model.name} takes inputs {sorted(expected)}, got {names}")
    batch_sizes = set()
    found = []
    for item in declared:
        spec, shape = expected[item.name], item.shape
        want = OIP_DTYPES[spec.dtype]
        if item.datatype != want:
            raise OIPError(400, f"input {spec.name}: datatype must be {want}, got {short(item.datatype)}")
        if (
            not isinstance(shape, list)
            or len(shape) != len(spec.shape)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or any(s != "N" and d != s for d, s in zip(shape, spec.shape, strict=True))
        ):
            want_shape = [-1 if d == "N" else d for d in spec.shape]
            raise OIPError(400, f"input {spec.name}: shape must be {want_shape}, -1 given as the batch's size, "
                                f"got {short(shape)}")  # fmt: skip
        rows = max((d for d, s in zip(shape, spec.shape, strict=True) if s == "N"), default=1)
        batch_sizes.add(rows)
        if rows > limit[0]:
            raise OIPError(413, f"input {spec.name}: a batch of {rows} is over the limit of {limit[0]} ({limit[1]})")
        if rows == 0:
            raise OIPError(400, f"input {spec.name}: shape {shape} holds no rows")
        found.append((spec, shape))
    if len(batch_sizes) > 1:
        raise OIPError(400, f"inputs {names}: batch sizes {sorted(batch_sizes)} differ; every input needs the same")
    return found


def from_raw(spec: TensorSpec, data: bytes | memoryview, shape: list[int], what: str) -> np.ndarray:
    """An input's raw bytes (little-endian; BYTES length-prefixed), of the shape checked; `what` says where
    they came from, for the message."""
    count, dtype = math.prod(shape), np.dtype(spec.dtype)
    if dtype.kind == "O":
        return strings(spec.name, bytes(data), count).reshape(shape)
    if len(data) != count * dtype.itemsize:
        raise OIPError(400, f"input {spec.name}: {what} is not shape {shape} x {dtype.itemsize} bytes = "
                            f"{count * dtype.itemsize}")  # fmt: skip
    array = np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=count)
    return np.ascontiguousarray(array.reshape(shape), dtype=dtype)


def strings(name: str, data: bytes, count: int) -> np.ndarray:
    """The protocol's binary BYTES: each element a 4-byte little-endian length, then its UTF-8 bytes."""
    values, at = [], 0
    while at < len(data) and len(values) < count:
        (length,) = struct.unpack_from("<I", data, at) if at + 4 <= len(data) else (len(data),)  # short: too long
        if at + 4 + length > len(data):
            raise OIPError(400, f"input {name}: element {len(values)}'s length runs past its binary data")
        try:
            values.append(data[at + 4 : at + 4 + length].decode())
        except UnicodeDecodeError:
            raise OIPError(400, f"input {name}: element {len(values)} is not UTF-8 text") from None
        at += 4 + length
    if len(values) != count or at != len(data):
        raise OIPError(400, f"input {name}: its binary data does not hold exactly {count} length-prefixed strings")
    return np.array(values, dtype=object)


def from_values(spec: TensorSpec, data: Any, shape: list[int]) -> np.ndarray:
    """An input's values as a (nested) list, or a gRPC repeated field: numbers, or strings for BYTES."""
    name, count, dtype = spec.name, math.prod(shape), np.dtype(spec.dtype)
    if data is None:
        raise OIPError(400, f"input {name}: no data (neither `data` nor parameters.binary_data_size)")
    if dtype.kind == "O":  # BYTES: strings
        try:
            flat = np.asarray(data, dtype=object).ravel() if isinstance(data, list) else None
        except ValueError:  # ragged lists
            flat = None
        if flat is None or flat.size != count or not all(isinstance(v, str) for v in flat):
            raise OIPError(400, f"input {name}: BYTES data must be a (nested) list of {count} strings")
        return flat.reshape(shape)
    try:
        array = np.asarray(data, dtype=np.float64 if dtype.kind == "f" else object).ravel()
    except (ValueError, TypeError):
        raise OIPError(400, f"input {name}: data must be a (nested) list of numbers") from None
    if array.size != count:
        raise OIPError(400, f"input {name}: {array.size} values do not fill its shape ({count} elements)")
    if dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise OIPError(400, f"input {name}: NaN or Infinity in data")
        return array.astype(dtype).reshape(shape)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in array):
        raise OIPError(400, f"input {name}: datatype {OIP_DTYPES[dtype.name]} needs integers")
    info = np.iinfo(dtype)
    if any(v < info.min or v > info.max for v in array):
        raise OIPError(400, f"input {name}: a value does not fit {OIP_DTYPES[dtype.name]}")
    return array.astype(dtype).reshape(shape)


def to_raw(value: np.ndarray) -> bytes:
    """An output's raw bytes: little-endian, BYTES each prefixed with its 4-byte length."""
    if value.dtype == object:
        return b"".join(struct.pack("<I", len(s)) + s for s in (str(x).encode() for x in value.ravel()))
    return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()


def datatype(value: np.ndarray) -> str:
    return "BYTES" if value.dtype == object else OIP_DTYPES[value.dtype.name]


def classify(model: LoadedModel, scores: np.ndarray, k: Any) -> np.ndarray:
    """Triton's classification extension: the top-k of each row as "score:index:label" strings."""
    labels = model.card.labels
    if not labels:
        raise OIPError(400, f"model {model.name} has no labels: the classification extension does not apply")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(labels):
        raise OIPError(400, f"classification must be an integer from 1 to {len(labels)}, got {k!r}")
    rows = scores.reshape(scores.shape[0], -1)
    best = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    return np.array([[f"{rows[r, i]:f}:{i}:{labels[i]}" for i in row] for r, row in enumerate(best)], dtype=object)
