"""Keep a CustomResourceDefinition's schema in the repo, for offline validation (tests/deploy).

    python deploy/kubernetes/crds/extract.py CRD.yaml [CRD.yaml ...]

writes <plural>.<group>.<version>.json.gz beside this file for each served version: the CRD's
openAPIV3Schema without its descriptions (the InferenceService CRD is 2 MB of YAML, 0.6 MB of JSON
without them, 40 KB compressed). README.md says where each came from.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def main(paths: list[str]) -> None:
    for path in paths:
        crd = yaml.safe_load(Path(path).read_text())
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = without_descriptions(version["schema"]["openAPIV3Schema"])
            out = HERE / f"{plural}.{group}.{version['name']}.json.gz"
            text = json.dumps({"kind": crd["spec"]["names"]["kind"], "schema": schema}, sort_keys=True)
            out.write_bytes(gzip.compress(text.encode(), mtime=0))
            print(f"{out.name}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
