"""``torch``: the export's graph modules in PyTorch, on the source checkpoint, on any device."""
