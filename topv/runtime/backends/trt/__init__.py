"""``trt``: TensorRT engines built by ``topv-build`` (TensorRT >= 10 and torch)."""
