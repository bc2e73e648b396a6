"""Helpers shared by the console scripts (argument types, logging set-up, error reporting)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from topv.errors import TopvError


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    for noisy in ("transformers", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_cli(main: Callable[[], int]) -> int:
    """Run a CLI body; user errors print one clear message and exit 2 instead of a traceback."""
    try:
        return main()
    except TopvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def options_from_args(cls: type, args: argparse.Namespace, **overrides: object) -> object:
    """A dataclass of options from parsed arguments: fields named like an argument take its value."""
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def add_kept_set_argument(p: argparse.ArgumentParser, applies_to: str) -> None:
    """``--kept-set float32|follow``: the one switch for the precision of the graphs that decide the kept tokens
    (:mod:`topv.precision`). ``applies_to`` says which of this command's precisions it concerns."""
    from topv.precision import KEPT_SET_CHOICES

    p.add_argument("--kept-set", choices=KEPT_SET_CHOICES, default="float32",
                   help=f"precision of the graphs that decide the kept tokens (vision, layers 0..K) under {applies_to}: "
                        "float32 (default: the kept tokens of float32) or follow (they take that precision too: faster, "
                        "the kept set may differ; measure with topv-eval --agreement). The TopV solve is always float32.")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def keep_value(text: str) -> int | None:
    """``--keep N`` or ``--keep all``."""
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep takes a number of visual tokens or 'all', got {text!r}") from None


def seed_value(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed, an integer >= 0; got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed, an integer in 0..2**63-1; got {value}")
    return value


def device_value(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, or an OpenVINO device (``gpu``, ``gpu.N``, ``npu``, ``auto``) for the openvino
    backend (availability is checked by the backend that uses it)."""
    value = text.strip().lower()
    if value in ("cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    base, _, index = value.partition(".")
    if base in ("gpu", "npu", "auto") and (not index or index.isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"expected a device: cpu, cuda or cuda:N (or gpu, gpu.N, npu for openvino); got {text!r}")


def topv_config(text: str | None):
    """``--config``: TopV hyperparameters as a JSON file or an inline JSON object."""
    import json
    from pathlib import Path

    from topv.errors import ConfigError
    from topv.pruning.config import TopVConfig

    if not text:
        return TopVConfig()
    try:
        data = json.loads(Path(text).read_text()) if Path(text).is_file() else json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config must be a JSON file or a JSON object; could not parse it: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config must be a JSON object of TopVConfig fields; got {type(data).__name__}.")
    return TopVConfig.from_dict(data)


def image_size(text: str) -> tuple[int, int]:
    """``--image-size HxW`` (or a single number for a square)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW in pixels, e.g. 448x644; got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW with two positive numbers of pixels; got {text!r}")
    return values
