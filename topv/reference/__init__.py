"""The PyTorch reference pipeline on Hugging Face LLaVA (``topv.generate``)."""
