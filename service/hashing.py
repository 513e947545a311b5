"""Feature hashing of open IDs: any ID (a hex string, a 64-bit integer, a word) -> one of `buckets` codes.

Training (training/clicklog_data.py) and serving (service/tasks/tabular/encoder.py) call these functions, so a raw
ID lands in the same bucket in both; tests/training/test_clicklog.py checks the three ways to compute
it (one value, a list of values, a log column's bytes) against each other and pins its values.

The hash of an ID is FNV-1a (64 bits) over the UTF-8 bytes of its text, started from a per-column salt
and finished with splitmix64's mixer (FNV alone leaves the low bits, the ones `% buckets` keeps, poorly
mixed). An integer's text is its decimal form, so 18446744073709551615 sent as a JSON number and
"18446744073709551615" read from a log are the same ID; "007" and 7 are not. Only the first
MAX_ID_BYTES bytes count: memory and time stay bounded whatever a log or a client sends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FUNCTION = "fnv1a64-splitmix64"  # recorded in the card: a card naming another function is refused
MAX_ID_BYTES = 256
_MASK = (1 << 64) - 1
_FNV_OFFSET, _FNV_PRIME, _GOLDEN = 0xCBF29CE484222325, 0x100000001B3, 0x9E3779B97F4A7C15


def _start(salt: int) -> int:
    return _FNV_OFFSET ^ ((salt * _GOLDEN) & _MASK)


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def id_text(value: str | int) -> bytes:
    return str(value).encode("utf-8", "surrogatepass")[:MAX_ID_BYTES]  # a lone surrogate is an ID too, not a 500


def bucket(value: str | int, salt: int, buckets: int) -> int:
    """One ID's bucket, in plain Python: the fastest way for the few IDs of one request."""
    h = _start(salt)
    for byte in id_text(value):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return _mix(h) % buckets


def buckets_of_bytes(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, salt: int, buckets: int) -> np.ndarray:
    """Buckets of many IDs given as one byte buffer: ID i is data[starts[i] : starts[i] + lengths[i]]
    (how a log reader holds a column). int64 codes. Work is the total length of the IDs: rows are
    visited longest first, so at byte j only the IDs longer than j are touched."""
    data = np.asarray(data, dtype=np.uint8)
    lengths = np.minimum(np.asarray(lengths, dtype=np.int64), MAX_ID_BYTES)
    starts = np.asarray(starts, dtype=np.int64)
    order = None
    if len(lengths) and lengths.min() != lengths.max():
        order = np.argsort(-lengths, kind="stable")
        starts, lengths = starts[order], lengths[order]
    h = np.full(len(lengths), _start(salt), dtype=np.uint64)
    # active[j]: how many IDs (a prefix, once sorted longest first) have a byte at position j
    active = np.searchsorted(-lengths, -np.arange(int(lengths.max(initial=0))), side="left")
    prime = np.uint64(_FNV_PRIME)
    for j, k in enumerate(active.tolist()):
        h[:k] = (h[:k] ^ data[starts[:k] + j].astype(np.uint64)) * prime  # uint64 arrays wrap, as FNV wants
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    codes = (h % np.uint64(buckets)).astype(np.int64)
    if order is not None:
        codes[order] = codes.copy()
    return codes


def buckets_of(values: Sequence[str | int], salt: int, buckets: int) -> np.ndarray:
    """Buckets of a list of IDs (a batch request's column), through the byte-buffer way."""
    texts = [id_text(v) for v in values]
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(texts) else lengths
    return buckets_of_bytes(np.frombuffer(b"".join(texts), dtype=np.uint8), starts, lengths, salt, buckets)
