"""A brought model's schema file against its graph (training/model_schema.py, training/card_tabular.py):
each kind of mismatch is refused with one line naming the field and the graph input, before anything
is written; a fitting schema gives the card that the service then loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression

from service.cards import TensorSpec
from tests.conftest import REPO
from training.card_tabular import graph_card
from training.model_schema import read_schema
from training.runinfo import TrainingDataError

HEAD = """name = "toy"
task = "regression"
description = "A toy."
[output]
name = "y"
unit = "units"
"""
AREA = '[fields.area]\ntype = "number"\ndescription = "Area."\nrange = [0, 100]\nexample = 5\n'
ROOMS = '[fields.rooms]\ntype = "integer"\ndescription = "Rooms."\nrange = [0, 10]\nexample = 2\n'
COLOUR = '[fields.colour]\ntype = "category"\ndescription = "Colour."\nvalues = ["red", "blue"]\n'
OUT = [TensorSpec(name="variable", dtype="float32", shape=["N", 1])]


def _schema(tmp_path: Path, *parts: str):
    path = tmp_path / "schema.toml"
    path.write_text(HEAD + "".join(parts))
    return read_schema(path)


def _input(name: str, dtype: str, width: int = 1) -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype, shape=["N", width])


def _refused(schema, inputs, outputs=OUT) -> str:
    with pytest.raises(TrainingDataError) as e:
        graph_card(schema, inputs, outputs)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_one_input_per_field_by_name_and_one_input_for_all_in_the_declared_order(tmp_path):
    schema = _schema(tmp_path, AREA, ROOMS)
    by_name = graph_card(schema, [_input("rooms", "int64"), _input("area", "float32")], OUT)
    assert [(f.input, f.fields) for f in by_name.feeds] == [("rooms", ["rooms"]), ("area", ["area"])]
    single = graph_card(schema, [_input("X", "float32", 2)], OUT)
    assert single.feeds[0].fields == ["area", "rooms"] and single.output == "variable" and single.column == 0


def test_a_field_the_graph_lacks_is_refused_naming_it(tmp_path):
    schema = _schema(tmp_path, AREA, ROOMS)
    message = _refused(schema, [_input("area", "float32"), _input("bedrooms", "int64")])
    assert "field rooms" in message and "no input 'rooms'" in message and "[inputs]" in message
    mapped = _schema(tmp_path, '[inputs]\nX = ["area", "rooms"]\n', AREA, ROOMS)
    assert "no input 'X'" in _refused(mapped, [_input("features", "float32", 2)])
    typo = _schema(tmp_path, '[inputs]\nX = ["area", "room"]\n', AREA, ROOMS)
    assert "'room' is not a declared field" in _refused(typo, [_input("X", "float32", 2)])


def test_a_dtype_that_does_not_fit_is_refused(tmp_path):
    schema = _schema(tmp_path, AREA, ROOMS)
    message = _refused(schema, [_input("area", "int64"), _input("rooms", "int64")])
    assert "field area" in message and "fractions" in message and "int64" in message
    message = _refused(schema, [_input("area", "object"), _input("rooms", "int64")])
    assert "field area" in message and "takes strings" in message
    message = _refused(schema, [_input("area", "float16"), _input("rooms", "int64")])
    assert "float16" in message
    assert "takes 3 column(s)" in _refused(schema, [_input("X", "float32", 3)])


def test_a_vocabulary_on_a_numeric_input_is_refused_unless_declared_a_position(tmp_path):
    schema = _schema(tmp_path, AREA, COLOUR)
    message = _refused(schema, [_input("X", "float32", 2)])
    assert "field colour" in message and "vocabulary" in message and "encoded = 'position'" in message
    positions = _schema(tmp_path, AREA, COLOUR + 'encoded = "position"\n')
    assert graph_card(positions, [_input("X", "float32", 2)], OUT).feeds[0].fields == ["area", "colour"]
    strings = graph_card(schema, [_input("area", "float32"), _input("colour", "object")], OUT)
    assert strings.feeds[1].fields == ["colour"]


def test_outputs_the_answer_cannot_be_read_from_are_refused(tmp_path):
    schema = _schema(tmp_path, AREA)
    zipmap = [TensorSpec(name="label", dtype="int64", shape=["N"]),
              TensorSpec(name="p", dtype="seq(map(int64,tensor(float)))", shape=[])]  # fmt: skip
    assert "name the one" in _refused(schema, [_input("area", "float32")], zipmap)
    path = tmp_path / "named.toml"
    path.write_text(HEAD + 'graph = "p"\n' + AREA)
    assert "zipmap" in _refused(read_schema(path), [_input("area", "float32")], zipmap)
    path.write_text(HEAD + "column = 1\n" + AREA)
    assert "no such column" in _refused(read_schema(path), [_input("area", "float32")])


def test_a_bad_schema_file_is_one_line_naming_the_key(tmp_path):
    for text, expected in [
        (HEAD + AREA.replace('"number"', '"float"'), "type 'float'"),
        (HEAD + AREA + "colour = 3\n", "unknown key(s) ['colour']"),
        (HEAD.replace('"regression"', '"ranking"') + AREA, "task 'ranking'"),
        (HEAD + AREA.replace("range = [0, 100]", "range = [100, 0]"), "lowest is above"),
        (HEAD + '[fields.zip]\ntype = "id"\nvalues = ["a"]\nrange = [0, 9]\n', "an id has no values"),
        ("name = [", "not readable"),
    ]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(TrainingDataError) as e:
            read_schema(path)
        assert expected in str(e.value) and "\n" not in str(e.value), (expected, str(e.value))


def test_make_card_refuses_a_mismatch_with_one_line_and_writes_nothing(tmp_path):
    x = np.random.default_rng(0).uniform(0, 10, (200, 2))
    model = LinearRegression().fit(x, x @ [2.0, 3.0])
    onnx = tmp_path / "toy.onnx"
    onnx.write_bytes(to_onnx(model, initial_types=[("X", FloatTensorType([None, 2]))]).SerializeToString())
    schema = tmp_path / "toy.toml"
    schema.write_text(HEAD + AREA + COLOUR)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "training.make_card", "--onnx", str(onnx), "--schema", str(schema),
               "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [done.stderr.strip()]
    assert "field colour" in done.stderr and not out.exists()
    schema.write_text(HEAD + AREA + ROOMS)  # a fitting schema: the card the service loads
    assert subprocess.run(command, cwd=REPO, capture_output=True, timeout=120).returncode == 0
    assert (out / "card.json").is_file() and (out / "model.onnx").is_file()


def test_a_yaml_schema_reads_as_its_toml_twin(tmp_path):
    import yaml

    toml = _schema(tmp_path, AREA, COLOUR)
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump({
        "name": "toy", "task": "regression", "description": "A toy.", "output": {"name": "y", "unit": "units"},
        "fields": {"area": {"type": "number", "description": "Area.", "range": [0, 100], "example": 5},
                   "colour": {"type": "category", "description": "Colour.", "values": ["red", "blue"]}},
    }, sort_keys=False))  # fmt: skip
    assert read_schema(path).spec == toml.spec and read_schema(path).order == ("area", "colour")
