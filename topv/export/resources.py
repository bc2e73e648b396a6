"""What an export needs from the machine, checked before any weight is loaded.

The weights' size at the export dtype comes from the checkpoint's safetensors headers (dtype and shape of every
tensor, read without the data). A streaming export holds the model once plus one tensor
(:mod:`topv.export.stream`), and validation releases the PyTorch model before ONNX Runtime maps
``weights.bin``; so an export evidently cannot finish when the available memory is below the weights themselves,
or the free disk of the output's filesystem below the weights written (an int8 export writes them twice).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

from topv.errors import ResourceError

_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_FLOATS = {"F64", "F32", "F16", "BF16"}
GIB = 2**30


def checkpoint_bytes(model_dir: Path, dtype_bytes: int) -> int | None:
    """The checkpoint's weights at ``dtype_bytes`` per float (integers as stored), from its safetensors headers;
    None when it has no readable safetensors files (then nothing is checked)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        try:
            with open(path, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(min(size, 100_000_000)))
        except (OSError, ValueError, struct.error):
            return None
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            count = 1
            for d in info.get("shape", []):
                count *= int(d)
            kind = info.get("dtype", "F32")
            total += count * (dtype_bytes if kind in _FLOATS else _BYTES.get(kind, 4))
    return total


def available_memory() -> int | None:
    """``MemAvailable`` (what can be allocated without swapping, page cache included), or None off Linux."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_resources(model_dir: Path, out_dir: Path, options: Any) -> None:
    """Refuse before loading when the machine evidently cannot hold the export.

    Raises:
        ResourceError: available memory below the weights at the export dtype, or free disk below what is written.
    """
    weights = checkpoint_bytes(model_dir, 2 if options.dtype == "fp16" else 4)
    if weights is None:
        return
    memory = available_memory()
    if memory is not None and memory < weights:
        raise ResourceError(
            f"Exporting {model_dir} at {options.dtype} holds its {weights / GIB:.1f} GiB of weights in memory, but only "
            f"{memory / GIB:.1f} GiB is available here. Free memory, use a machine with at least {weights * 1.2 / GIB:.0f} "
            "GiB, or export at fp16 (--dtype fp16) if it was fp32.")
    written = weights * (2 if options.quantize else 1)
    parent = next((p for p in [Path(out_dir).resolve(), *Path(out_dir).resolve().parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(parent).free
    if free < written * 1.05:
        existing = _export_size(Path(out_dir)) if options.force else 0  # --force replaces it only after validation
        raise ResourceError(
            f"The export writes about {written / GIB:.1f} GiB to {parent} (weights.bin at {options.dtype}"
            f"{', and again int8' if options.quantize else ''}), but its filesystem has {free / GIB:.1f} GiB free"
            f"{f' (the {existing / GIB:.1f} GiB of the export it replaces are freed only at the end)' if existing else ''}. "
            "Free disk space or choose another OUT_DIR.")


def _export_size(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not os.path.islink(p))
