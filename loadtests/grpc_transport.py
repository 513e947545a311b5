"""What a gRPC call costs the server before any of nnserve's work: grpcio's aio server against nnserve's own
HTTP/2 (service/protocol/rpc/http2.py), each a bare servicer answering fixed bytes, in 2 processes on one
SO_REUSEPORT port, under the same h2load run (16 connections, one call at a time each); calls per second and
server CPU per call (docs/grpc.md, "The transport").

    python -m loadtests.grpc_transport [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import uvloop

from loadtests.grpc_load import framed
from loadtests.paths import REPO
from loadtests.ports import free_port
from service.protocol.rpc.http2 import Connection
from service.protocol.rpc.server import OK_TRAILERS

PATH = "/inference.GRPCInferenceService/ModelInfer"
ANSWER = b"\x0a\x07housing"  # a ModelInferResponse naming its model


async def grpcio_server(port: int) -> None:
    async def infer(request: bytes, context: object) -> bytes:
        return ANSWER

    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    method = grpc.unary_unary_rpc_method_handler(infer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(PATH.split("/")[1], {"ModelInfer": method}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class Fixed:
    """http2.Connection's calls: every call answered ANSWER when the client's side ends."""

    def ended(self, conn: Connection, stream: object) -> None:
        conn.send(stream, ANSWER, OK_TRAILERS)

    def __getattr__(self, name: str):  # connected, opened, message, reset ...: nothing to do
        return lambda *args: None


async def own_server(port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    server = await asyncio.get_running_loop().create_server(lambda: Connection(Fixed(), 1 << 20, 65536, 1000, 20),
                                                            sock=sock)  # fmt: skip
    await server.serve_forever()


def measure(kind: str, seconds: int) -> dict:
    port = free_port()
    serve = [sys.executable, "-m", "loadtests.grpc_transport", "--serve", kind, str(port)]
    servers = [subprocess.Popen(serve, cwd=REPO) for _ in range(2)]
    try:
        time.sleep(3)
        before = sum(_cpu(p.pid) for p in servers)
        with tempfile.TemporaryDirectory() as tmp:
            body = Path(tmp) / "body"
            body.write_bytes(framed(b""))
            command = ["h2load", "-c16", "-t2", "-m1", "-D", str(seconds), "-d", str(body),
                       "-H", "content-type: application/grpc", "-H", "te: trailers",
                       f"http://127.0.0.1:{port}{PATH}"]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        cpu = sum(_cpu(p.pid) for p in servers) - before
    finally:
        for p in servers:
            p.kill()
            p.wait()
    done = int(out.split("requests:", 1)[1].split(" done", 1)[0].split(",")[-1])
    return {"server": kind, "calls_per_s": round(done / seconds), "cpu_us_per_call": round(cpu / max(done, 1) * 1e6)}


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, port = args.serve[0], int(args.serve[1])
        uvloop.run(grpcio_server(port) if kind == "grpcio" else own_server(port))
        return
    for kind in ("grpcio", "nnserve"):
        print(measure(kind, args.seconds))


if __name__ == "__main__":
    main()
