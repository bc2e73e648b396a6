"""Accuracy against keep budgets (``topv-eval``): TopV versus FastV, random, uniform and no pruning."""
