"""The HTTP edge: BentoML's validation errors reshaped, limits, and no torch on the serving path."""

from __future__ import annotations

import json
import subprocess
import sys

from service.middleware import _rewrite
from tests.conftest import REPO


def test_bentoml_validation_errors_get_the_received_values():
    answer = json.dumps({
        "error": "2 validation error for HouseFeaturesIODescriptor",
        "detail": [{"type": "greater_than_equal", "loc": ["bedrooms"], "msg": "Input should be >= 0"},
                   {"type": "missing", "loc": ["zipcode"], "msg": "Field required"}],
    }).encode()  # fmt: skip
    out = _rewrite(answer, b'{"bedrooms": -2}', "application/json")
    assert out["detail"] == [
        {"loc": ["bedrooms"], "msg": "Input should be >= 0", "received": -2, "type": "greater_than_equal"},
        {"loc": ["zipcode"], "msg": "Field required", "received": None, "type": "missing"},
    ]
    assert "IODescriptor" not in out["error"] and "bedrooms" in out["error"]


def test_values_inside_batches_and_awkward_values():
    answer = json.dumps({"error": "x", "detail": [{"type": "t", "loc": ["houses", 1, "bedrooms"], "msg": "m"}]})
    assert _rewrite(answer.encode(), b'{"houses": [{}, {"bedrooms": 1e999}]}', "")["detail"][0]["received"] == "inf"
    big = b'{"houses": [{}, {"bedrooms": 123456789012345678901234567890}]}'
    assert _rewrite(answer.encode(), big, "")["detail"][0]["received"] == "123456789012345678901234567890"


def test_bentoml_list_wrapped_errors_become_objects():
    assert _rewrite(b'[{"error": "bad"}]', b"", "") == {"error": "bad", "detail": []}


def test_serving_path_never_imports_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import service.app, service.runtime, service.images, service.tabular\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_our_own_error_bodies_pass_through_unchanged():
    ours = {"error": "model x is not loaded", "detail": []}
    assert _rewrite(json.dumps(ours).encode(), b"{}", "application/json") == ours
    ours = {"error": "e", "detail": [{"loc": ["a"], "msg": "m", "received": 1, "type": "t"}]}
    assert _rewrite(json.dumps(ours).encode(), b"{}", "application/json") == ours
