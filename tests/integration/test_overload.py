"""A short `make overload`: Locust at 4x what the service admits, against a real server. Behaviour
only (statuses, refusals, recovery): its latency, throughput and memory figures are `make overload`'s."""

from __future__ import annotations

import pytest

from loadtests.overload import REFUSED, main

pytestmark = pytest.mark.alone  # Locust's load: no other test beside it (tests/conftest.py)


def test_4x_capacity_gets_only_200_or_503_and_the_service_recovers(tmp_path, capsys):
    assert main(["--seconds", "10", "--reports", str(tmp_path), "--behaviour-only"]) == 0
    printed = capsys.readouterr().out
    assert "overload handled" in printed and REFUSED in printed
    refused = next(line for line in printed.splitlines() if line.startswith("refused:"))
    assert int(refused.split()[1]) > 0  # the load did exceed capacity
