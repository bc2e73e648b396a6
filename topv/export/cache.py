"""Exports reused by ``topv-bench`` and ``topv-eval``: one folder per (checkpoint, export options).

The folder name carries a key over everything that changes the graphs: the checkpoint (its path, and the
size and modification time of each of its files) and every :class:`ExportOptions` field that shapes the
export (keep, layer, prompt and new-token limits, dtype, opset, TopV config, quantization, image size).
A folder with that key is reused; any other request exports anew.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from topv.export.exporter import ExportOptions, export_model

log = logging.getLogger("topv.export")

_NOT_IN_KEY = ("force", "threads", "device", "validate_tokens")


def export_key(model_dir: Path, options: ExportOptions) -> str:
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file())
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name not in _NOT_IN_KEY}
    fields["config"] = options.config.to_dict()
    data = {"model": str(Path(model_dir).resolve()), "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files],
            "options": fields}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_export(model_dir: str | Path, work_dir: str | Path, options: ExportOptions) -> Path:
    """The export of ``model_dir`` with ``options`` under ``work_dir``, exported on first use."""
    from topv.artifact.manifest import read_manifest

    model_dir = Path(model_dir)
    keep = "all" if options.keep is None else options.keep
    out = Path(work_dir) / f"{model_dir.name}-k{keep}-{options.dtype}{'-int8' if options.quantize else ''}-{export_key(model_dir, options)}"
    if (out / "manifest.json").is_file():
        manifest = read_manifest(out)
        if (manifest.validation or {}).get("ok"):
            log.info("reusing export %s", out)
            return out
        log.warning("%s holds an export that never validated; exporting again", out)
    return export_model(model_dir, out, dataclasses.replace(options, force=True))
