"""Random-weight models built from configs, saved like Hugging Face checkpoints (no downloads).

For the tests (tiny models, fixed seeds) and for ``topv-bench --model-shape`` (models with the shapes of
real architectures, since no checkpoint can be downloaded on the machines topv is benchmarked on). Their
weights are random: the answers are noise, only the mechanics and the speed are real.
"""
