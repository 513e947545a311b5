"""Generates the Python messages and service stubs from the .proto files beside this script.

    python -m service.protocol.rpc.proto.generate           (make protos)
    python -m service.protocol.rpc.proto.generate --check   (exit 1 when the committed files differ)

Needs grpcio-tools (the dev extra); the service only imports what it wrote. protoc writes
`import model_config_pb2`, a top-level import: the generated files import it from this package instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
PROTOS = ("grpc_service.proto", "model_config.proto")
WRITTEN = ("grpc_service_pb2.py", "grpc_service_pb2_grpc.py", "model_config_pb2.py")


def generate(out: Path) -> None:
    from grpc_tools import protoc  # dev only

    args = ["protoc", f"-I{HERE}", f"--python_out={out}", f"--grpc_python_out={out}", *(str(HERE / p) for p in PROTOS)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for name in WRITTEN:
        path = out / name
        text = path.read_text()
        for module in ("model_config_pb2", "grpc_service_pb2"):
            text = text.replace(f"\nimport {module} as ", f"\nfrom . import {module} as ")
        path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args()
    if not args.check:
        generate(HERE)
        (HERE / "model_config_pb2_grpc.py").unlink(missing_ok=True)  # no services in it
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [n for n in WRITTEN if (Path(tmp) / n).read_text() != (HERE / n).read_text()]
    if stale:
        print(f"stale: {', '.join(stale)}: run `make protos`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
