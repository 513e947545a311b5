"""loadtests/cost.py: the process tree of a server started with --port, its CPU time and peak memory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.cost import cost
from loadtests.serving import free_port, server_processes

BUSY = """
import subprocess, sys, time
held = bytearray(200 * 1024 * 1024)  # 200 MB resident: written, not only reserved
held[::4096] = b"x" * len(held[::4096])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
end = time.time() + 30
while time.time() < end:
    pass
"""


def test_cost_counts_the_server_and_its_children_cpu_and_memory():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", BUSY, "--port", str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while len(server_processes(url)) < 2:  # the child is up
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with cost(url, every_s=0.05) as spent:
            time.sleep(1.0)
        assert spent["cpu_s"] > 0  # the busy loop ran
        assert spent["peak_rss_mb"] > 200  # the 200 MB it holds, plus the child's
    finally:
        for child in server_processes(f"http://127.0.0.1:{port}")[1:]:
            child.kill()
        server.kill()
        server.wait()


def test_no_server_on_the_port_is_an_error():
    with pytest.raises(RuntimeError, match="no server started with --port"):
        server_processes(f"http://127.0.0.1:{free_port()}")


def test_a_peer_answers_the_same_only_with_the_same_fields_and_numbers():
    from loadtests.bench import same_answer

    ours = {"model": "ad-click", "version": "1", "click_probability": 0.017087966203689575, "warnings": []}
    assert same_answer({**ours, "click_probability": 0.0170879662}, ours)  # float32 digits, as JSON writes them
    assert not same_answer({**ours, "click_probability": 0.0171}, ours)
    assert not same_answer({**ours, "warnings": [{"field": "age"}]}, ours)
    assert not same_answer({"predictions": [ours]}, ours)
    assert not same_answer({k: v for k, v in ours.items() if k != "version"}, ours)


def test_every_peer_starts_with_a_port_flag_so_its_cost_can_be_measured():
    from loadtests.peers.stacks import PEERS

    for peer in PEERS:
        argv = peer.command(Path("/venv/bin"), 8123, 2)
        assert argv[argv.index("--port") + 1] == "8123", peer.name
