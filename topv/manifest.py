"""The self-describing export folder: ``manifest.json``, its checks, and file checksums.

Written by ``topv-export``, read by every runtime backend and by ``topv-build``/``topv-check``. Only the
standard library is imported here, so loading and checking a folder needs neither torch nor
onnxruntime.

Layout of an export folder (see docs/DESIGN.md)::

    OUT_DIR/
      manifest.json          this file's schema (format ARTIFACT_FORMAT)
      vision.onnx            pixel_values -> image_features
      prefill_head.onnx      input_ids + image_features -> layers 0..K
      prune.onnx             TopV solve + selection + gather (absent with --keep all)
      prefill_tail.onnx      layers K+1..L-1 + norm + LM head
      decode_step.onnx       one token through every layer over static KV buffers
      weights.bin            every large initializer, deduplicated across graphs (ONNX external data)
      processor/             tokenizer, image processor and chat template (AutoProcessor loads it)
      validation.json        the export's self-check: per-graph errors and a generation comparison
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from topv._version import ARTIFACT_FORMAT, __version__
from topv.errors import ArtifactError, ChecksumMismatchError, IncompatibleArtifactError

MANIFEST_NAME = "manifest.json"
GRAPH_NAMES = ("vision", "prefill_head", "prune", "prefill_tail", "decode_step")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def file_records(folder: Path, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` for every file under ``folder``."""
    records = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in exclude:
            continue
        records[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return records


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``manifest.json`` (format version, required keys).

    Raises:
        ArtifactError: the folder or manifest is missing or unreadable.
        IncompatibleArtifactError: the folder was written by an incompatible topv format.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ArtifactError(f"{str(folder)!r} is not a folder; pass the OUT_DIR written by topv-export.")
    if not path.is_file():
        raise ArtifactError(
            f"{str(folder)!r} has no {MANIFEST_NAME}; it is not a topv export (or the export did not finish). "
            "Run topv-export MODEL_DIR OUT_DIR again."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); the folder is damaged. Re-export it.") from exc
    fmt = manifest.get("format")
    if fmt != ARTIFACT_FORMAT:
        raise IncompatibleArtifactError(
            f"{str(folder)!r} was written by topv {manifest.get('topv_version', '?')} in artifact format {fmt!r}; "
            f"this topv ({__version__}) reads format {ARTIFACT_FORMAT}. Re-export the model with this version "
            f"(topv-export MODEL_DIR OUT_DIR --force) or install the matching topv."
        )
    for key in ("graphs", "files", "model", "pruning", "static_shapes", "kv_cache"):
        if key not in manifest:
            raise ArtifactError(f"{path} lacks the {key!r} section; the folder is damaged or hand-edited. Re-export it.")
    return manifest


def check_file(path: Path, expected_bytes: int, expected_sha256: str, *, what: str, hint: str, checksums: bool = True) -> None:
    """One listed file: present, of the listed size, and (optionally) of the listed SHA-256.

    Raises:
        ArtifactError: the file is missing or truncated.
        ChecksumMismatchError: its content differs.
    """
    if not path.is_file():
        raise ArtifactError(f"{what}, listed in the manifest, is missing from {str(path.parent)!r}. {hint}")
    size = path.stat().st_size
    if size != expected_bytes:
        raise ArtifactError(
            f"{what} has {size} bytes but the manifest expects {expected_bytes}; the file is truncated or was replaced. {hint}"
        )
    if checksums:
        digest = sha256_file(path)
        if digest != expected_sha256:
            raise ChecksumMismatchError(
                f"{what} does not match its SHA-256 in the manifest (expected {expected_sha256[:16]}..., found {digest[:16]}...); the "
                f"file was modified or corrupted. {hint}"
            )


def verify_files(folder: str | Path, manifest: dict[str, Any], *, checksums: bool = True) -> None:
    """Check that every file the manifest lists exists with its size and (optionally) SHA-256.

    Raises:
        ArtifactError: a file is missing or truncated.
        ChecksumMismatchError: a file's content differs from the manifest.
    """
    folder = Path(folder)
    hint = "Copy the folder again or re-export the model."
    for rel, record in manifest["files"].items():
        check_file(folder / rel, record["bytes"], record["sha256"], what=rel, hint=hint, checksums=checksums)


def graph_entry(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        return manifest["graphs"][name]
    except KeyError:
        raise ArtifactError(f"The manifest has no {name!r} graph; the folder is damaged. Re-export it.") from None
