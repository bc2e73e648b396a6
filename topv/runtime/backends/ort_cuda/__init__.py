"""``ort-cuda``: ONNX Runtime's CUDA provider with every tensor resident on the device."""
