"""No file takes the service down: hostile model folders and policy files, in-process (service.models.registry,
service.models.control) on copies of the committed models. Each case is that folder's or that file's refusal,
named and logged once; the rest serves."""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import shutil
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.errors import ModelUnavailable
from service.models import versions
from service.models.control import Control
from service.models.versions import Policy, read_policies, write_policy
from service.settings import Settings
from service.worker import Worker
from tests.conftest import MODELS

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on it


def _models(tmp_path, *names: str, versioned: str | None = None):
    models = tmp_path / "models"
    for name in names:
        shutil.copytree(MODELS / name, models / name)
    if versioned:
        shutil.copytree(MODELS / versioned, models / versioned / "1")
    return models


def _version(models, name: str, version: str, card_text: str | None = None, onnx_bytes: bytes | None = None):
    folder = models / name / version
    shutil.copytree(models / name / "1", folder)
    card = json.loads((folder / "card.json").read_text())
    card["version"] = version
    if onnx_bytes is not None:
        (folder / "model.onnx").write_bytes(onnx_bytes)
        card["onnx_sha256"] = hashlib.sha256(onnx_bytes).hexdigest()
    (folder / "card.json").write_text(card_text if card_text is not None else json.dumps(card))
    return folder


def test_a_card_nested_too_deep_refuses_its_folder_and_the_rest_serves(tmp_path, caplog):
    models = _models(tmp_path, "ad-click", versioned="housing-price")
    (models / "ad-click" / "card.json").write_text(DEEP)  # a flat folder: its model is not served
    _version(models, "housing-price", "2", card_text=DEEP)  # a version: refused, version 1 serves
    worker = Worker(Settings(models_dir=models))
    registry = worker.registry
    health = worker.health()
    assert health["models"]["housing-price"]["version"] == "1" and health["refused"] == {"housing-price": ["2"]}
    assert health["errors"] == ["ad-click"] and not registry.ready  # a broken flat folder: up, not ready
    said = [r.getMessage() for r in caplog.records if "nested too deep" in r.getMessage()]
    assert len(said) == 2, said
    asyncio.run(registry.refresh())  # a second look: nothing said again, nothing raised
    assert len([r for r in caplog.records if "nested too deep" in r.getMessage()]) == 2


def test_a_policy_file_nested_too_deep_is_named_and_the_models_serve(tmp_path):
    models = _models(tmp_path, "housing-price")
    (models / "policy.json").write_text(DEEP)
    worker = Worker(Settings(models_dir=models))
    registry = worker.registry
    assert registry.ready and "nested too deep" in worker.health()["policy_error"]


def _gather_graph() -> bytes:
    """The housing signature, and a Gather over a 10-row table by the ZIP code: zeros (the warm-up) run,
    the card's example (98103) raises onnxruntime's index-out-of-range error."""
    table = numpy_helper.from_array(np.ones((10, 1), np.float32), "table")
    nodes = [helper.make_node("Gather", ["table", "categorical"], ["rows"], axis=0),
             helper.make_node("Squeeze", ["rows", "axis2"], ["price"])]  # fmt: skip
    axis2 = numpy_helper.from_array(np.array([2], np.int64), "axis2")
    graph = helper.make_graph(
        nodes, "gather", [helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["N", 13]),
                          helper.make_tensor_value_info("categorical", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("price", TensorProto.FLOAT, ["N", 1])], [table, axis2],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()


def test_a_graph_that_fails_the_smoke_prediction_is_refused_named(tmp_path, caplog):
    models = _models(tmp_path, versioned="housing-price")
    (models / "policy.json").write_text(json.dumps({"housing-price": {"versions": "all"}}))
    _version(models, "housing-price", "2", onnx_bytes=_gather_graph())
    worker = Worker(Settings(models_dir=models))
    registry = worker.registry
    health = worker.health()
    assert registry.ready and health["models"]["housing-price"]["versions"] == ["1"]
    assert health["refused"] == {"housing-price": ["2"]}
    (line,) = [r.getMessage() for r in caplog.records if "smoke prediction" in r.getMessage()]
    assert "housing-price/2" in line and ("Gather" in line or "indices" in line), line


@pytest.mark.parametrize("content", [b'{"housing-price": {"default": "1"', b"\xff\xfe{}"], ids=["syntax", "0xff"])
def test_a_broken_policy_file_makes_a_management_write_a_503_naming_it(tmp_path, content):
    models = _models(tmp_path, versioned="housing-price")
    (models / "policy.json").write_bytes(content)
    worker = Worker(Settings(models_dir=models, management=True))
    registry = worker.registry
    control = Control(registry, True)
    with pytest.raises(ModelUnavailable, match=r"policy.json: not valid JSON.*fix or remove the file"):
        asyncio.run(control.set_policy("housing-price", b'{"default": "1"}'))
    assert (models / "policy.json").read_bytes() == content  # never overwritten


def test_a_fifo_policy_file_is_never_opened_and_management_recovers_when_it_is_a_file_again(tmp_path):
    models = _models(tmp_path, versioned="housing-price")
    os.mkfifo(models / "policy.json")  # opening it would block the reader until a writer came
    worker = Worker(Settings(models_dir=models, management=True))
    registry = worker.registry
    assert registry.ready and "not a regular file" in worker.health()["policy_error"]
    control = Control(registry, True)
    with pytest.raises(ModelUnavailable, match="not a regular file"):
        asyncio.run(control.set_policy("housing-price", b'{"default": "1"}'))
    (models / "policy.json").unlink()
    (models / "policy.json").write_text("{}")
    answer = asyncio.run(control.set_policy("housing-price", b'{"default": "1"}'))
    assert answer["policy"]["default"] == "1" and "policy_error" not in worker.health()


def test_a_look_that_hangs_is_not_waited_for_and_is_applied_when_it_comes_back(tmp_path):
    models = _models(tmp_path, versioned="housing-price")
    worker = Worker(Settings(models_dir=models, models_dir_timeout_s=0.2))
    registry = worker.registry
    plan, release = registry.planner.plan, threading.Event()

    def hung(now):  # as a read on a hung network mount would
        release.wait(30)
        return plan(now)

    async def scenario():
        registry.planner.plan = hung
        with pytest.raises(ModelUnavailable, match="NNSERVE_MODELS_DIR_TIMEOUT_S"):
            await registry.refresh()
        with pytest.raises(ModelUnavailable):  # a second call starts no second thread: it waits for the first
            await registry.refresh()
        stuck = worker.health()
        registry.planner.plan = plan
        release.set()
        await registry.refresh()  # the hung look comes back, then a look of its own
        return stuck, worker.health()

    stuck, after = asyncio.run(scenario())
    assert stuck["ready"] and any("has not come back" in w for w in stuck["warnings"])
    assert after["ready"] and "warnings" not in after and registry.stuck_since is None


def test_a_symlinked_policy_file_is_written_through_the_link(tmp_path):
    models = _models(tmp_path, versioned="housing-price")
    real = tmp_path / "config" / "policy.json"
    real.parent.mkdir()
    real.write_text("{}")
    (models / "policy.json").symlink_to(real)
    worker = Worker(Settings(models_dir=models, management=True))
    registry = worker.registry
    asyncio.run(Control(registry, True).set_policy("housing-price", b'{"default": "1"}'))
    assert (models / "policy.json").is_symlink() and read_policies(real) == {"housing-price": Policy(default="1")}
    real.write_text(json.dumps({"housing-price": {"default": "1", "versions": "all"}}))  # an edit of the target
    asyncio.run(registry.refresh())
    assert registry.table.policies["housing-price"].versions == "all"


def _write_many(path: str, prefix: str, count: int) -> None:
    for i in range(count):
        write_policy(__import__("pathlib").Path(path), f"{prefix}-{i}", Policy(default=str(i)))


def test_writes_for_different_models_from_two_processes_all_land(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text("{}")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(str(path), p, 200)) for p in ("a", "b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    policies = read_policies(path)
    assert len(policies) == 400 and policies["a-199"].default == "199" and policies["b-0"].default == "0"


def test_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    models = _models(tmp_path, "ad-click", versioned="housing-price")
    (models / "policy.json").write_text(json.dumps({"housing-price": {"default": "1"}}))
    worker = Worker(Settings(models_dir=models))
    registry = worker.registry
    reads = []
    original = versions.read_json
    monkeypatch.setattr(versions, "read_json", lambda path, limit: reads.append(path.name) or original(path, limit))
    for _ in range(3):
        asyncio.run(registry.refresh())
    assert reads == []  # three looks: every file stat'ed, none read
    (models / "policy.json").write_text(json.dumps({"housing-price": {"default": "1", "versions": "all"}}))
    _version(models, "housing-price", "2")
    asyncio.run(registry.refresh())
    assert sorted(reads) == ["card.json", "policy.json"] and registry.table.models["housing-price"].versions.keys() == {
        "1",
        "2",
    }


def test_a_card_over_the_size_limit_refuses_its_version_named(tmp_path, caplog):
    models = _models(tmp_path, versioned="housing-price")
    (models / "policy.json").write_text(json.dumps({"housing-price": {"versions": "all"}}))
    card = json.loads((models / "housing-price" / "1" / "card.json").read_text())
    _version(models, "housing-price", "2", card_text=json.dumps({**card, "version": "2", "pad": "x" * 40_000}))
    limit = (models / "housing-price" / "1" / "card.json").stat().st_size + 1000
    worker = Worker(Settings(models_dir=models, max_card_bytes=limit))
    registry = worker.registry
    assert registry.ready and worker.health()["refused"] == {"housing-price": ["2"]}
    assert [r.getMessage() for r in caplog.records if "over the limit" in r.getMessage()]
