"""The serving systems a user would pick instead of nnserve, each serving the same ONNX models with the
same preprocessing (common.py) from a virtual environment of its own (stacks.py builds them)."""
