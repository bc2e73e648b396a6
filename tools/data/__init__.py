"""Tools outside the wheel: run from the repository root with python -m tools.<package>.<module>."""
