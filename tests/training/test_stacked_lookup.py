"""The tabular nets' export form: every code column in one StackedLookup (and a click net's numbers binned in
one StackedBins) answers as the columns one by one did (in torch and in onnxruntime), in a file no larger,
and the graph no longer grows by a dozen nodes per column."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training.export import export_onnx
from training.models import ClickNet, CodeLookup, Stacked, TabularNet

# (low, table length, rows of the embedding, width): a low offset, widths that need padding, one column of one code
COLUMNS = [(98001, 199, 71, 8), (0, 3, 4, 4), (-5, 40, 13, 13), (7, 1, 2, 16), (0, 2000, 900, 16)]


def _lookups(columns, generator) -> list[CodeLookup]:
    return [CodeLookup(low, torch.randint(0, rows, (size,), generator=generator)) for low, size, rows, _ in columns]


def _codes(columns, n: int, generator) -> torch.Tensor:
    """Codes inside each column's range, at both of its ends, and outside it on both sides."""
    out = []
    for low, size, _, _ in columns:
        inside = low + torch.randint(0, size, (n - 4,), generator=generator)
        out.append(torch.cat([inside, torch.tensor([low, low + size - 1, low - 1, low + size + 10**6])]))
    return torch.stack(out, dim=1)[torch.randperm(n, generator=generator)]


def _tabular(columns) -> TabularNet:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    lookups = _lookups(columns, g)
    edges = {1: torch.tensor([-1.0, 0.0, 1.0])}
    net = TabularNet(torch.zeros(3), torch.ones(3), lookups, [w for *_, w in columns], (32, 16), "probability",
                     log_mask=torch.tensor([True, False, False]), bucket_edges=edges)  # fmt: skip
    for emb in net.embeddings:
        torch.nn.init.normal_(emb.weight)
    return net.eval()


def _click(columns, wide: bool) -> ClickNet:
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    lookups = _lookups(columns, g)
    deep = [torch.randint(0, 5, (int(lk.table.max()) + 1,), generator=g) for lk in lookups] if wide else None
    net = ClickNet(torch.zeros(2), torch.ones(2), torch.tensor([True, False]), lookups, [w for *_, w in columns],
                   (16,), cross_layers=1, bin_edges=[torch.tensor([0.5, 2.0]), torch.tensor([0.0])], wide=wide,
                   deep_rows=deep)  # fmt: skip
    for p in net.wide_parameters() if wide else []:
        torch.nn.init.normal_(p)  # zero at the start of training: give the wide part something to add
    return net.eval()


def _inputs(net, columns, n=400) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    numeric = torch.randn(n, len(net.num_mean), generator=g) * 3
    numeric[:5] = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0]).unsqueeze(1)  # on the bins' edges: not above them
    return {"numeric": numeric, "categorical": _codes(columns, n, g)}


def _onnx(module, inputs, tmp_path) -> tuple[np.ndarray, int]:
    path = export_onnx(module, inputs, "y", tmp_path)
    if isinstance(module, Stacked):  # the tables stored once, as column by column: no larger a file
        per_column = export_onnx(module.net, inputs, "y", tmp_path / "per-column").stat().st_size
        assert path.stat().st_size <= per_column * 1.05 + 4096, (path.stat().st_size, per_column)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    return got, sum(n.op_type != "Constant" for n in onnx.load(str(path)).graph.node)  # constants cost no run time


@pytest.mark.parametrize("build", [_tabular, lambda c: _click(c, wide=False), lambda c: _click(c, wide=True)],
                         ids=["tabular", "click", "click-wide"])  # fmt: skip
def test_the_stacked_lookup_answers_as_the_columns_did(build, tmp_path):
    net = build(COLUMNS)
    inputs = _inputs(net, COLUMNS)
    with torch.no_grad():
        expected = net(**inputs)
        stacked = net.exported()(**inputs)
    assert isinstance(net.exported(), Stacked)
    assert torch.equal(stacked, expected)  # the same rows gathered, the same arithmetic after
    got, _ = _onnx(net.exported(), inputs, tmp_path)
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=2e-6)
    assert expected.std() > 0.01  # the codes move the answer: a lookup that ignored them would fail above


def test_the_graph_does_not_grow_with_the_number_of_columns(tmp_path):
    nodes = {}
    for k in (2, 5):
        net = _tabular(COLUMNS[:k])
        _, nodes[("stacked", k)] = _onnx(net.exported(), _inputs(net, COLUMNS[:k]), tmp_path / f"s{k}")
        _, nodes[("columns", k)] = _onnx(net, _inputs(net, COLUMNS[:k]), tmp_path / f"c{k}")
    # at most a slice per column (where padding splits the row), against a dozen nodes per column before
    assert nodes[("stacked", 5)] - nodes[("stacked", 2)] <= 3, nodes
    assert nodes[("columns", 5)] - nodes[("columns", 2)] >= 3 * 8, nodes
