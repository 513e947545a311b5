"""Training and ONNX export of nnserve's three models (needs the `train` extra: torch, onnx).

`make serve` installs only what serving needs: without the extra, any `python -m training...` stops
here with one line saying how to get it, rather than a ModuleNotFoundError traceback."""

import importlib.util


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except ValueError:  # sys.modules[name] is None: imports of it are blocked
        return True


_MISSING = [name for name in ("torch", "onnx", "sklearn") if _missing(name)]
if _MISSING:
    raise SystemExit(
        f"training needs {', '.join(_MISSING)}, which `make serve` does not install: run `make train-env` once "
        "(it installs the training dependencies into .venv), then .venv/bin/python -m training..."
    )
