"""The Open Inference Protocol's BYTES tensors, as a brought graph's string inputs take them: JSON
strings, and the binary form (each element a 4-byte little-endian length, then its UTF-8 bytes),
with every way a body can lie about them a 400 naming the input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from service.protocol.oip import OIPError, _from_json, _strings


def _packed(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_binary_and_json_strings_are_read_as_sent():
    assert _strings("zipcode", _packed(b"98103", "Zürich".encode(), b""), 3).tolist() == ["98103", "Zürich", ""]
    assert _from_json("zipcode", [["98103"], ["98001"]], np.dtype(object), 2).tolist() == ["98103", "98001"]


@pytest.mark.parametrize(
    ("data", "count", "says"),
    [
        (_packed(b"98103")[:-1], 1, "runs past"),  # the length claims more than is there
        (_packed(b"98103") + b"\x00\x00", 1, "exactly 1"),  # bytes left over
        (_packed(b"a"), 2, "exactly 2"),  # fewer elements than the shape
        (b"\x05\x00", 1, "runs past"),  # not even a length
        (_packed(b"\xff\xfe"), 1, "not UTF-8"),
    ],
)
def test_binary_strings_that_lie_are_a_400_naming_the_input(data, count, says):
    with pytest.raises(OIPError) as e:
        _strings("zipcode", data, count)
    assert e.value.status == 400 and "zipcode" in str(e.value) and says in str(e.value)


@pytest.mark.parametrize("data", [[1, 2], ["a"], [["a"], "b", ["c", "d"]], "ab", None])
def test_json_bytes_that_are_not_that_many_strings_are_a_400(data):
    with pytest.raises(OIPError) as e:
        _from_json("zipcode", data, np.dtype(object), 2)
    assert e.value.status == 400 and "zipcode" in str(e.value)
