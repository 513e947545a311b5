"""The Open Inference Protocol's BYTES tensors, as a brought graph's string inputs take them: JSON
strings, and the binary form (each element a 4-byte little-endian length, then its UTF-8 bytes),
with every way a body can lie about them a 400 naming the input."""

from __future__ import annotations

import struct

import pytest

from service.cards import TensorSpec
from service.protocol.tensors import OIPError, from_values, strings

ZIP = TensorSpec(name="zipcode", dtype="object", shape=["N", 1])


def _packed(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_binary_and_json_strings_are_read_as_sent():
    assert strings("zipcode", _packed(b"98103", "Zürich".encode(), b""), 3).tolist() == ["98103", "Zürich", ""]
    assert from_values(ZIP, [["98103"], ["98001"]], [2, 1]).ravel().tolist() == ["98103", "98001"]


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
        strings("zipcode", data, count)
    assert e.value.status == 400 and "zipcode" in str(e.value) and says in str(e.value)


@pytest.mark.parametrize("data", [[1, 2], ["a"], [["a"], "b", ["c", "d"]], "ab", None])
def test_json_bytes_that_are_not_that_many_strings_are_a_400(data):
    with pytest.raises(OIPError) as e:
        from_values(ZIP, data, [2, 1])
    assert e.value.status == 400 and "zipcode" in str(e.value)
