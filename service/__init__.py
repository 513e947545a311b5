"""nnserve's serving side: the contract, the model cards, onnxruntime, and the BentoML service."""

__version__ = "0.1.0"  # the one place the version is written: pyproject, the image tag and /v2 read it
