"""``openvino``: the exported graphs on OpenVINO (CPU by default, or any OpenVINO device by name)."""
