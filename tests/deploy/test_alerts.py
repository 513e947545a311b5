"""The Prometheus alerting rules (deploy/prometheus/alerts.yml): `promtool check rules` passes, and
`promtool test rules` fires each alert on the series that should fire it and no other; broken copies
fail. A live Prometheus evaluating them against a running nnserve: tests/integration/test_prometheus.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

RULES = REPO / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is needed (Debian's prometheus package; `make test` installs it)")
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)


def test_the_rules_check_and_their_unit_tests_pass():
    checked = promtool("check", "rules", "alerts.yml", cwd=RULES)
    assert checked.returncode == 0 and "SUCCESS: 6 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml", cwd=RULES)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize(
    ("old", "new", "command"),
    [
        ("> 0.01", "> > 0.01", "check"),  # not PromQL
        ("expr: max by (model, version) (nnserve_model_refused) == 1", "", "check"),  # no expression
        ("for: 10m", "for: 10 minutes", "check"),  # not a duration
        ("> 0.01", "> 0.10", "test"),  # 5% errors no longer fire: the unit test says so
        ('nnserve_model_refused) == 1', 'nnserve_model_refusd) == 1', "test"),  # a misspelled series
    ],
)  # fmt: skip
def test_a_broken_copy_fails(tmp_path, old, new, command):
    shutil.copytree(RULES, tmp_path, dirs_exist_ok=True)
    text = (tmp_path / "alerts.yml").read_text()
    assert old in text
    (tmp_path / "alerts.yml").write_text(text.replace(old, new, 1))
    args = ("check", "rules", "alerts.yml") if command == "check" else ("test", "rules", "alerts.test.yml")
    assert promtool(*args, cwd=tmp_path).returncode != 0
