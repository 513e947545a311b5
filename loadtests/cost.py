"""What a server costs while it answers: CPU-seconds and peak resident memory of its processes (the
server and every worker it runs), read from /proc through psutil, around one load run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psutil

from loadtests.serving import server_processes


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with suppress(psutil.Error):  # a worker that exited: its time is lost, as it would be to `top`
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with suppress(psutil.Error):
            total += p.memory_info().rss
    return total


@contextmanager
def cost(url: str, every_s: float = 0.25) -> Iterator[dict]:
    """Yields a dict that holds, once the block ends, `cpu_s` (user + system seconds the server's
    processes used during it) and `peak_rss_mb` (their summed resident memory, sampled every_s)."""
    procs = server_processes(url)
    figures = {"peak_rss_mb": _rss(procs) / 1e6}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every_s):
            figures["peak_rss_mb"] = max(figures["peak_rss_mb"], _rss(procs) / 1e6)

    before = _cpu_s(procs)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield figures
    finally:
        done.set()
        sampler.join()
        figures["cpu_s"] = _cpu_s(procs) - before
