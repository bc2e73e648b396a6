"""The graphs of an export as PyTorch modules: what ``topv-export`` traces and the ``torch`` backend runs."""
