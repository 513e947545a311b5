"""loadtests/cost.py: the process tree of a server started with --port, its CPU time and peak memory."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from loadtests.cost import cost
from tests.serving import free_port, server_processes

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
