"""Token sampling and stop rules shared by the PyTorch reference and every runtime backend."""
