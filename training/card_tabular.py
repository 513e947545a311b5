"""A card for a tabular ONNX model trained anywhere (a scikit-learn pipeline through skl2onnx, an
XGBoost or LightGBM model through onnxmltools, any graph of numbers and strings in, a number or
probabilities out), from its schema file (training/model_schema.py) and, optionally, a data file
the model did not train on: its rows give the card its held-out metrics, its reference
distributions (drift) and the observed ranges and ID vocabularies (warnings).

Every mismatch between the schema and the graph is one line naming the field, the input and what
would fit; the folder written is then loaded exactly as the service loads it before it is called done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.cards import ONNX_FILE, DataCard, FeedCard, GraphCard, ModelCard, TensorSpec, session_signature, write_card
from service.measures import classification_metrics, regression_metrics
from service.runtime import ModelLoadError, load_model
from service.settings import Settings
from service.tasks import ADAPTERS
from service.tasks.tabular.feeds import NUMBER_DTYPES, STRING, Feeds
from training import distributions
from training.data_tabular import TabularData, feature_cards, layout, read_tabular_csv
from training.export import onnx_facts
from training.model_schema import ModelSchema
from training.runinfo import TrainingDataError, sha256_file

LOWER_IS_BETTER = ("mae", "log_loss", "calibration_error", "median_ape")


def graph_card(schema: ModelSchema, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> GraphCard:
    """Which graph input takes which fields, and where the answer is; refused field by field."""
    spec, names = schema.spec, [t.name for t in inputs]
    fields = [f.name for f in spec.features]
    if schema.inputs is not None:
        feeds = schema.inputs
    elif all(f in names for f in fields) and len(names) == len(fields):
        feeds = {f: [f] for f in fields}  # one tensor per column, as skl2onnx exports a DataFrame's
    elif len(names) == 1:
        feeds = {names[0]: list(schema.order)}  # one tensor of every column, in the schema's order
    else:
        lacking = next(f for f in fields if f not in names)
        raise TrainingDataError(f"{schema.source}: field {lacking}: the graph has no input {lacking!r} (its inputs: "
                                f"{names}): map fields to inputs in [inputs]")  # fmt: skip
    tensors = {t.name: t for t in inputs}
    kinds = {f.name: f for f in spec.features}
    for name, columns in feeds.items():
        if name not in tensors:
            raise TrainingDataError(f"{schema.source}: [inputs] {name}: the graph has no input {name!r} "
                                    f"(its inputs: {names})")  # fmt: skip
        tensor = tensors[name]
        for field in columns:
            if field not in kinds:
                raise TrainingDataError(f"{schema.source}: [inputs] {name}: {field!r} is not a declared field")
            _fits(schema, field, tensor)
        width = tensor.shape[-1] if len(tensor.shape) == 2 else None
        if len(tensor.shape) != 2 or (isinstance(width, int) and width != len(columns)):
            raise TrainingDataError(f"{schema.source}: graph input {name} {tensor.shape} takes "
                                    f"{width if isinstance(width, int) else 'a'} column(s); the schema feeds it "
                                    f"{len(columns)}: {columns}")  # fmt: skip
    if unfed := [n for n in names if n not in feeds]:
        raise TrainingDataError(f"{schema.source}: graph input(s) {unfed} are fed by no field: add them to [inputs]")
    fed = [f for columns in feeds.values() for f in columns]
    if unused := [f for f in fields if f not in fed]:
        raise TrainingDataError(f"{schema.source}: field(s) {unused} feed no graph input: add them to [inputs]")
    output = _output(schema, outputs)
    width = output.shape[1] if len(output.shape) == 2 else 1
    column = schema.column if schema.column is not None else 1 if spec.task != "regression" and width == 2 else 0
    if not isinstance(width, int) or column >= width:
        raise TrainingDataError(f"{schema.source}: [output] column {column}: output {output.name} {output.shape} "
                                "has no such column (a classifier's positive class is usually column 1)")  # fmt: skip
    feeds_cards = [FeedCard(input=n, fields=feeds[n]) for n in names]
    return GraphCard(feeds=feeds_cards, answer=spec.output, output=output.name, column=column)


def _fits(schema: ModelSchema, field: str, tensor: TensorSpec) -> None:
    """One field into one graph input: the dtype must take it as the service sends it."""
    spec, at = schema.spec, f"{schema.source}: field {field}"
    numeric = {f.name: f for f in spec.numeric}
    categorical = {f.name: f for f in spec.categorical}
    if tensor.dtype not in (STRING, *NUMBER_DTYPES):
        raise TrainingDataError(f"{at}: graph input {tensor.name} is {tensor.dtype}; a table's graph takes "
                                f"numbers ({', '.join(NUMBER_DTYPES)}) or strings")  # fmt: skip
    if tensor.dtype == STRING:
        if field in numeric or field in schema.ids:
            raise TrainingDataError(f"{at}: a number, but graph input {tensor.name} takes strings: declare it a "
                                    "category with its values, or feed it to a number input")  # fmt: skip
        if field in schema.positions:
            raise TrainingDataError(f"{at}: encoded = 'position', but graph input {tensor.name} takes strings: "
                                    "drop `encoded` (the value itself is sent)")  # fmt: skip
        return
    if field in categorical and categorical[field].values is not None and field not in schema.positions:
        raise TrainingDataError(f"{at}: a vocabulary (values) on graph input {tensor.name}, which takes numbers "
                                f"({tensor.dtype}): feed it to a string input, or declare encoded = 'position' if "
                                "the graph takes the value's position in values")  # fmt: skip
    whole = field in categorical or numeric[field].integer or numeric[field].boolean
    if tensor.dtype.startswith("int") and not whole:
        raise TrainingDataError(f"{at}: a number with fractions, but graph input {tensor.name} is {tensor.dtype}: "
                                "declare type = 'integer' if it is whole, or export a float input")  # fmt: skip


def _output(schema: ModelSchema, outputs: list[TensorSpec]) -> TensorSpec:
    named = {t.name: t for t in outputs}
    if schema.graph_output is not None:
        if schema.graph_output not in named:
            raise TrainingDataError(f"{schema.source}: [output] graph {schema.graph_output!r}: the graph's outputs "
                                    f"are {list(named)}")  # fmt: skip
        output = named[schema.graph_output]
    else:
        floats = [t for t in outputs if t.dtype in ("float32", "float64")]
        if len(floats) != 1:
            raise TrainingDataError(f"{schema.source}: the graph's outputs are {[(t.name, t.dtype) for t in outputs]}:"
                                    " name the one to answer with in [output] graph")  # fmt: skip
        output = floats[0]
    if output.dtype.startswith("seq"):
        raise TrainingDataError(f"{schema.source}: output {output.name} is {output.dtype} (skl2onnx's ZipMap): "
                                "export with options={'zipmap': False} (onnxmltools: zipmap=False)")  # fmt: skip
    if output.dtype not in ("float32", "float64"):
        raise TrainingDataError(f"{schema.source}: output {output.name} is {output.dtype}: the answer is a number "
                                "(a prediction or a probability)")  # fmt: skip
    return output


def predict(card: ModelCard, session: ort.InferenceSession, data: TabularData) -> np.ndarray:
    """The model's answers on data rows, through the service's own feeds (as it will be served)."""
    feeds = Feeds(card)
    graph_inputs = feeds.graph_inputs(data.numeric, data.categorical)
    names = [t.name for t in card.inputs]
    assert card.graph is not None
    output = session.run([card.graph.output], dict(zip(names, graph_inputs, strict=True)))[0]
    return feeds.answer(output)[:, 0].astype(np.float64)


def brought_card(onnx_path: Path, schema: ModelSchema, data_path: Path | None, out: Path) -> ModelCard:
    """Writes `out`: the ONNX file and its card. Refuses (TrainingDataError) whatever does not fit."""
    spec = schema.spec
    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        raise TrainingDataError(f"{onnx_path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
    inputs, outputs = session_signature(session)
    graph = graph_card(schema, inputs, outputs)
    data = label = None
    if data_path is not None:
        parse = float if spec.task == "regression" else _label
        data = read_tabular_csv(data_path, spec, {schema.label: parse})
        label = data.extra[schema.label].astype(np.float64)
    elif schema.ids:
        raise TrainingDataError(f"{schema.source}: id field(s) {sorted(schema.ids)} learn their vocabulary from data: "
                                "give --data, or declare them type = 'integer'")  # fmt: skip
    allowed = np.array([[f.minimum for f in spec.numeric], [f.maximum for f in spec.numeric]], dtype=np.float32)
    vocabularies = [
        sorted({int(c) for c in data.categorical[:, j]}) if data is not None and f.values is None
        else list(range(len(f.values or ()))) for j, f in enumerate(spec.categorical)
    ]  # fmt: skip
    numeric_cards, categorical_cards = feature_cards(spec, data.numeric if data is not None else allowed, vocabularies)
    card = ModelCard(
        name=spec.name, version=schema.version, task=spec.task, description=spec.description,
        output_unit=spec.output_unit, api=spec.api, numeric=numeric_cards, categorical=categorical_cards,
        inputs=inputs, outputs=outputs, graph=graph, **onnx_facts(onnx_path),
        training={"source": {"onnx": onnx_path.name, "schema": Path(schema.source).name,
                             "schema_sha256": sha256_file(Path(schema.source))},
                  "layout": layout(spec, schema.label)},
    )  # fmt: skip
    if data is not None and label is not None:
        card = _scored(card, session, data, label, data_path, schema)
    out.mkdir(parents=True, exist_ok=True)
    (out / ONNX_FILE).write_bytes(onnx_path.read_bytes())
    write_card(out, card)
    check_served(out)
    return card


def _scored(card: ModelCard, session: ort.InferenceSession, data: TabularData, label: np.ndarray,
            data_path: Path, schema: ModelSchema) -> ModelCard:  # fmt: skip
    """The card with the data file's metrics, bar, provenance and reference distributions."""
    predicted = predict(card, session, data)
    score = regression_metrics if card.task == "regression" else classification_metrics
    metrics = score(label, predicted)
    if unknown := sorted(set(schema.bar) - set(metrics)):
        raise TrainingDataError(f"{schema.source}: [bar] {unknown}: this task's metrics are {sorted(metrics)}")
    checks = {
        f"{k} {'<=' if k in LOWER_IS_BETTER else '>='} {v:g}": bool(
            metrics[k] <= v if k in LOWER_IS_BETTER else metrics[k] >= v)
        for k, v in schema.bar.items()
    }  # fmt: skip
    rows = len(data)
    where = f"{data_path.name}, {rows:,} rows (the data file given with the model, which it did not train on)"
    reference = distributions.tabular(card.numeric, data.numeric, card.categorical, data.categorical, predicted,
                                      where, where)  # fmt: skip
    files = [{"path": data_path.name, "sha256": sha256_file(data_path), "rows": rows + data.dropped}]
    return card.model_copy(update={
        "metrics": {"model": metrics}, "reference": reference,
        "bar": {"description": "the schema's [bar]" if checks else "none declared", "checks": checks},
        "data": DataCard(files=files, split="held out: the model was trained elsewhere, not on these rows",
                         rows={"held_out": rows, "dropped_outside_allowed": data.dropped}),
    })  # fmt: skip


def check_served(folder: Path) -> None:
    """The folder, loaded as the service loads it (graph, card, example row): its refusal is ours."""
    try:
        model = load_model(folder)
        ADAPTERS[model.card.task](model, Settings()).smoke()
    except ModelLoadError as e:
        raise TrainingDataError(f"the service would refuse it: {e}") from None


def _label(text: str) -> int:
    value = text.strip().lower()
    if value in ("1", "1.0", "true"):
        return 1
    if value in ("0", "0.0", "false"):
        return 0
    raise ValueError("expected a 0/1 (or true/false) label")
