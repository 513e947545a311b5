"""Image classification: a photo in, labels with scores out, for any classifier brought as an ONNX file."""
