"""Training and evaluating the bundled shapes-VQA model."""
