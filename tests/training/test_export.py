"""The export parity check passes a faithful graph and fails a wrong one; the external-card writer."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from service.runtime import load_model
from tests.conftest import IMAGENET_INDEX
from training.export import ExportParityError, check_parity, export_onnx
from training.make_card import Config as CardConfig
from training.make_card import make_card, read_labels
from training.runinfo import TrainingDataError


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))


def test_parity_holds_for_the_exported_graph(tmp_path):
    model = _mlp()
    x = {"x": torch.randn(64, 4)}
    path = export_onnx(model, x, "y", tmp_path)
    assert check_parity(model, path, x, 1e-5) < 1e-5


def test_parity_fails_when_the_graph_is_not_the_model(tmp_path):
    model = _mlp()
    x = {"x": torch.randn(64, 4)}
    path = export_onnx(model, x, "y", tmp_path)
    with torch.no_grad():
        model[0].weight[0, 0] += 0.5  # the torch model moves on; the graph on disk is now wrong
    with pytest.raises(ExportParityError, match="differs from torch by"):
        check_parity(model, path, x, 1e-5)


def test_exported_batch_dimension_is_dynamic(tmp_path):
    model = _mlp()
    path = export_onnx(model, {"x": torch.randn(3, 4)}, "y", tmp_path)
    assert check_parity(model, path, {"x": torch.randn(50, 4)}, 1e-5) < 1e-5


class _TinyImageNet(nn.Module):
    """A randomly initialised 1000-class classifier on 224x224 float NCHW input, as users bring."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 1000)

    def forward(self, x):
        return self.fc(self.body(x))


def export_imagenet_like(tmp_path):
    torch.manual_seed(0)
    return export_onnx(_TinyImageNet(), {"input": torch.randn(2, 3, 224, 224)}, "logits", tmp_path / "raw")


def test_make_card_for_a_1000_class_imagenet_model(tmp_path):
    onnx_path = export_imagenet_like(tmp_path)
    out = tmp_path / "models" / "imagenet-classifier"
    card = make_card(CardConfig(onnx=onnx_path, labels=IMAGENET_INDEX, out=out))
    assert len(card.labels) == 1000 and card.labels[0] == "tench" and card.labels[285] == "Egyptian_cat"
    assert card.image.size == (224, 224) and card.image.layout == "NCHW" and card.image.output_is == "logits"
    model = load_model(out)  # the service's loader takes it as it is
    assert model.card.outputs[0].shape == ["N", 1000]


def test_make_card_refuses_a_label_count_mismatch(tmp_path):
    onnx_path = export_imagenet_like(tmp_path)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(TrainingDataError, match="3 labels, but .* outputs 1000 classes"):
        make_card(CardConfig(onnx=onnx_path, labels=labels, out=tmp_path / "m"))


def test_make_card_on_a_missing_file_says_there_is_no_such_file(tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["a", "b"]))
    with pytest.raises(TrainingDataError, match=r"resnet50.onnx: no such file: check --onnx"):
        make_card(CardConfig(onnx=tmp_path / "resnet50.onnx", labels=labels, out=tmp_path / "m"))


def test_labels_from_a_wordnet_text_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    assert read_labels(path) == ["tench", "goldfish"]
