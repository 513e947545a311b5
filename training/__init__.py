"""Training and ONNX export of nnserve's three models (needs the `train` extra: torch, onnx)."""
