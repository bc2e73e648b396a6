"""``ort-cpu``: ONNX Runtime's CPU provider over host (numpy) buffers."""
