"""A free TCP port on 127.0.0.1, for the servers the tests and the bench start. No dependencies beyond the
standard library: the peers' own virtual environments import it too (loadtests/peers/common.py)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# The kernel hands ports in its ephemeral range to outgoing connections (wrk's, httpx's, a peer's own
# gRPC client), so a port picked there can be taken between being picked and being bound: seen once,
# mid-bench, as "Address already in use" from a server given a port by `bind(0)`. Ports below the range
# are only ever taken by an explicit bind.
_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000


def free_port() -> int:
    low = int(_RANGE.read_text().split()[0]) if _RANGE.exists() else 0
    candidates = range(_LOWEST, low) if low - _LOWEST >= 1_000 else ()
    for port in random.sample(candidates, min(len(candidates), 50)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no room below the range: any port the kernel gives
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
