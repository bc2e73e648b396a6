"""``manifest.json``: the typed description of an export folder (standard library only).

Written by ``topv-export``; read by every backend, ``topv-build`` and ``topv-check``. Reading validates
every field's type and range and confines every path to the folder, so a damaged, hand-edited or
crafted folder is refused with an :class:`~topv.errors.ArtifactError` that names the field.

Layout of an export folder (docs/DESIGN.md)::

    OUT_DIR/
      manifest.json          this file (format ARTIFACT_FORMAT)
      vision.onnx            pixel_values -> image_features
      prefill_head.onnx      input_ids + image_features -> layers 0..K (+ position ids, TopV's sources/targets)
      prune.onnx             TopV solve + selection + gather (absent without pruning)
      prefill_tail.onnx      layers K+1..L-1 + norm + LM head
      decode_step.onnx       one token through every layer over static KV buffers
      weights.bin            every large initializer, stored once (ONNX external data)
      processor/             tokenizer, image processor and chat template
      validation.json        the export's self-check
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topv._version import ARTIFACT_FORMAT, __version__
from topv.artifact import names
from topv.artifact.files import MANIFEST_NAME, FileRecord, check_relative, inside, read_json, verify_files
from topv.errors import ArtifactError, IncompatibleArtifactError
from topv.pruning.config import TopVConfig
from topv.spec import ModelSpec

DTYPES = {"fp32": "float32", "fp16": "float16"}
_DAMAGED = "The folder is damaged or was edited; re-export it."


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # ints, or symbolic axis names (names.AXES)
    dtype: str  # numpy dtype name

    def resolve(self, axes: dict[str, int]) -> tuple[int, ...]:
        """The concrete shape for the given axis values."""
        return tuple(d if isinstance(d, int) else axes[d] for d in self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphInfo:
    file: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def tensor(self, name: str) -> TensorInfo:
        for t in self.inputs + self.outputs:
            if t.name == name:
                return t
        raise ArtifactError(f"the graph {self.file} has no tensor {name!r}. {_DAMAGED}")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs]}


@dataclass(frozen=True)
class PruningInfo:
    enabled: bool
    layer: int  # K: layers 0..K see every token (the whole decoder when pruning is off)
    keep: int | None  # grid tokens kept; None without pruning
    kept_visual_tokens: int  # visual tokens after pruning (grid keep + leading extra tokens)
    config: TopVConfig = field(default_factory=TopVConfig)

    @property
    def method(self) -> str:
        return "topv" if self.enabled else "none"


@dataclass(frozen=True)
class StaticShapes:
    """Shapes fixed by the export."""

    max_prompt_tokens: int  # P
    max_new_tokens: int  # M
    num_visual_tokens: int  # N
    kept_visual_tokens: int

    @property
    def max_kept_prompt_tokens(self) -> int:
        return self.max_prompt_tokens - self.num_visual_tokens + self.kept_visual_tokens

    @property
    def capacity_head(self) -> int:
        """KV slots of layers 0..K: the full prompt plus the new tokens."""
        return self.max_prompt_tokens + self.max_new_tokens

    @property
    def capacity_tail(self) -> int:
        """KV slots of layers K+1..: the kept prompt plus the new tokens."""
        return self.max_kept_prompt_tokens + self.max_new_tokens

    def axes(self) -> dict[str, tuple[int, int]]:
        """``{axis: (min, max)}`` of the symbolic axes."""
        shift = self.kept_visual_tokens - self.num_visual_tokens
        return {names.SEQUENCE: (self.num_visual_tokens + 1, self.max_prompt_tokens),
                names.KEPT_SEQUENCE: (self.num_visual_tokens + 1 + shift, self.max_kept_prompt_tokens)}

    def kept_length(self, prompt_length: int) -> int:
        return prompt_length - self.num_visual_tokens + self.kept_visual_tokens


@dataclass(frozen=True)
class KVLayout:
    """The static KV cache: ``capacity_head`` slots for layers 0..K, ``capacity_tail`` after."""

    num_layers: int
    layer: int
    num_kv_heads: int
    head_dim: int
    capacity_head: int
    capacity_tail: int
    dtype: str  # numpy dtype name

    def capacity(self, i: int) -> int:
        return self.capacity_head if i <= self.layer else self.capacity_tail

    def shape(self, i: int) -> tuple[int, int, int, int]:
        return (1, self.num_kv_heads, self.capacity(i), self.head_dim)

    @property
    def bytes_per_slot(self) -> int:
        return 2 * self.num_kv_heads * self.head_dim * (2 if self.dtype == "float16" else 4)

    @property
    def nbytes(self) -> int:
        return sum(self.bytes_per_slot * self.capacity(i) for i in range(self.num_layers))

    @property
    def nbytes_unpruned(self) -> int:
        return self.bytes_per_slot * self.capacity_head * self.num_layers


@dataclass(frozen=True)
class Manifest:
    model_source: str
    config: dict[str, Any]  # the checkpoint's config.json
    spec: ModelSpec
    pruning: PruningInfo
    shapes: StaticShapes
    graphs: dict[str, GraphInfo]
    dtype: str  # "fp32" or "fp16"
    opset: int
    eos_token_ids: tuple[int, ...] = ()
    files: dict[str, FileRecord] = field(default_factory=dict)
    processor_folder: str = "processor"
    weights: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    topv_version: str = __version__
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    format: int = ARTIFACT_FORMAT

    @property
    def kv(self) -> KVLayout:
        return KVLayout(self.spec.num_layers, self.pruning.layer, self.spec.num_kv_heads, self.spec.head_dim,
                        self.shapes.capacity_head, self.shapes.capacity_tail, DTYPES[self.dtype])

    def graph(self, name: str) -> GraphInfo:
        if name not in self.graphs:
            raise ArtifactError(f"manifest.json lists no {name!r} graph. {_DAMAGED}")
        return self.graphs[name]

    def replace(self, **changes: Any) -> "Manifest":
        import dataclasses

        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        kv = self.kv
        axes = self.shapes.axes()
        return {
            "format": self.format,
            "topv_version": self.topv_version,
            "created": self.created,
            "model": {"source": self.model_source, "family": self.spec.family, "architecture": self.spec.architecture,
                      "config": self.config, "spec": self.spec.to_json()},
            "pruning": {"enabled": self.pruning.enabled, "method": self.pruning.method, "layer": self.pruning.layer,
                        "keep": self.pruning.keep, "kept_visual_tokens": self.pruning.kept_visual_tokens,
                        "config": self.pruning.config.to_dict()},
            "static_shapes": {
                "batch": 1, "max_prompt_tokens": self.shapes.max_prompt_tokens, "max_new_tokens": self.shapes.max_new_tokens,
                "max_kept_prompt_tokens": self.shapes.max_kept_prompt_tokens,
                "axes": {name: {"min": lo, "max": hi} for name, (lo, hi) in axes.items()},
            },
            "kv_cache": {"num_layers": kv.num_layers, "num_kv_heads": kv.num_kv_heads, "head_dim": kv.head_dim,
                         "dtype": kv.dtype, "capacity_head": kv.capacity_head, "capacity_tail": kv.capacity_tail,
                         "bytes": kv.nbytes, "bytes_unpruned": kv.nbytes_unpruned},
            "graphs": {name: g.to_json() for name, g in self.graphs.items()},
            "weights": self.weights,
            "dtype": self.dtype,
            "opset": self.opset,
            "processor": {"folder": self.processor_folder},
            "generation": {"eos_token_id": list(self.eos_token_ids)},
            "quantization": self.quantization,
            "validation": self.validation,
            "versions": self.versions,
            "files": {rel: rec.to_json() for rel, rec in self.files.items()},
        }

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, data: Any) -> "Manifest":
        return _parse(data)


# ---------------------------------------------------------------------- reading
class _Obj:
    """Typed access to one JSON object, with errors that name the field, what was expected and what was found."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ArtifactError(f"manifest.json: {where or 'the manifest'} must be a JSON object; found {type(data).__name__}. {_DAMAGED}")
        self.data, self.where = data, where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, kinds: tuple[type, ...], what: str, optional: bool = False) -> Any:
        if key not in self.data:
            if optional:
                return None
            raise ArtifactError(f"manifest.json lacks {self._path(key)}. {_DAMAGED}")
        value = self.data[key]
        if value is None and optional:
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ArtifactError(
                f"manifest.json: {self._path(key)} must be {what}; found {str(value)[:80]!r} ({type(value).__name__}). {_DAMAGED}"
            )
        return value

    def obj(self, key: str) -> "_Obj":
        return _Obj(self._get(key, (dict,), "a JSON object"), self._path(key))

    def int(self, key: str, low: int = 0, optional: bool = False) -> Any:
        value = self._get(key, (int,), f"an integer >= {low}", optional)
        if value is not None and value < low:
            raise ArtifactError(f"manifest.json: {self._path(key)} must be >= {low}; found {value}. {_DAMAGED}")
        return value

    def str(self, key: str, optional: bool = False) -> Any:
        return self._get(key, (str,), "a string", optional)

    def bool(self, key: str) -> bool:
        return self._get(key, (bool,), "true or false")

    def list(self, key: str) -> list:
        return self._get(key, (list,), "a list")


def _tensor(data: Any, where: str) -> TensorInfo:
    o = _Obj(data, where)
    shape = o.list("shape")
    if not all((isinstance(d, int) and not isinstance(d, bool) and d > 0) or d in names.AXES for d in shape):
        raise ArtifactError(f"manifest.json: {where}.shape {shape} holds a dimension that is neither fixed nor a declared axis. {_DAMAGED}")
    dtype = o.str("dtype")
    if dtype not in ("float32", "float16", "int64", "int32", "bool", "uint8", "int8"):
        raise ArtifactError(f"manifest.json: {where}.dtype {dtype!r} is not a tensor type topv writes. {_DAMAGED}")
    return TensorInfo(o.str("name"), tuple(shape), dtype)


def _graph(name: str, data: Any) -> GraphInfo:
    o = _Obj(data, f"graphs.{name}")
    file = check_relative(o.str("file"), f"graphs.{name}.file")
    return GraphInfo(file, tuple(_tensor(t, f"graphs.{name}.inputs") for t in o.list("inputs")),
                     tuple(_tensor(t, f"graphs.{name}.outputs") for t in o.list("outputs")))


def _files(o: _Obj) -> dict[str, FileRecord]:
    out = {}
    for rel, rec in o.data.items():
        check_relative(rel, f"files entry {rel!r}")
        r = _Obj(rec, f"files.{rel}")
        digest = r.str("sha256")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ArtifactError(f"manifest.json: files.{rel}.sha256 is not a SHA-256 hex digest. {_DAMAGED}")
        out[rel] = FileRecord(digest, r.int("bytes"))
    return out


def _parse(data: Any) -> Manifest:
    top = _Obj(data, "")
    fmt = data.get("format")
    if fmt != ARTIFACT_FORMAT:
        raise IncompatibleArtifactError(
            f"This folder was written by topv {data.get('topv_version', '?')} in artifact format {fmt!r}; this topv "
            f"({__version__}) reads format {ARTIFACT_FORMAT}. Re-export the model with this version (topv-export "
            "MODEL_DIR OUT_DIR --force) or install the matching topv."
        )
    model, pruning, shapes_o = top.obj("model"), top.obj("pruning"), top.obj("static_shapes")
    spec = ModelSpec.from_json(model.obj("spec").data)
    try:
        config = TopVConfig.from_dict(pruning.obj("config").data)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"manifest.json: pruning.config is invalid ({exc}). {_DAMAGED}") from None
    enabled = pruning.bool("enabled")
    layer = pruning.int("layer")
    keep = pruning.int("keep", 1, optional=True)
    kept_visual = pruning.int("kept_visual_tokens", 1)
    if layer >= spec.num_layers or enabled != (keep is not None) or (keep or spec.num_grid_tokens) > spec.num_grid_tokens \
            or kept_visual != (keep or spec.num_grid_tokens) + spec.num_extra_visual_tokens:
        raise ArtifactError(f"manifest.json: the pruning section (layer {layer}, keep {keep}) does not fit the model. {_DAMAGED}")
    shapes = StaticShapes(shapes_o.int("max_prompt_tokens", spec.num_visual_tokens + 1), shapes_o.int("max_new_tokens", 1),
                          spec.num_visual_tokens, kept_visual)
    graphs = {name: _graph(name, g) for name, g in top.obj("graphs").data.items()}
    required = {names.VISION, names.PREFILL_HEAD, names.PREFILL_TAIL, names.DECODE_STEP} | ({names.PRUNE} if enabled else set())
    if set(graphs) != required:
        raise ArtifactError(f"manifest.json lists the graphs {sorted(graphs)}; this export needs {sorted(required)}. {_DAMAGED}")
    dtype = top.str("dtype")
    if dtype not in DTYPES:
        raise ArtifactError(f"manifest.json: dtype must be one of {sorted(DTYPES)}; found {dtype!r}. {_DAMAGED}")
    eos = top.obj("generation").data.get("eos_token_id") or []
    eos = [eos] if isinstance(eos, int) else eos
    if not isinstance(eos, list) or not all(isinstance(i, int) for i in eos):
        raise ArtifactError(f"manifest.json: generation.eos_token_id must be token ids; found {eos!r}. {_DAMAGED}")
    manifest = Manifest(
        model_source=model.str("source"), config=model.obj("config").data, spec=spec,
        pruning=PruningInfo(enabled, layer, keep, kept_visual, config), shapes=shapes, graphs=graphs, dtype=dtype,
        opset=top.int("opset", 1), eos_token_ids=tuple(eos), files=_files(top.obj("files")),
        processor_folder=check_relative(top.obj("processor").str("folder"), "processor.folder"),
        weights=dict(data.get("weights") or {}), quantization=data.get("quantization"), validation=data.get("validation"),
        versions=dict(data.get("versions") or {}), topv_version=top.str("topv_version"), created=str(data.get("created", "?")),
        format=fmt,
    )
    _check_consistent(manifest, top.obj("kv_cache"))
    return manifest


def _check_consistent(m: Manifest, kv_json: _Obj) -> None:
    """The graphs' declared I/O agree with the KV layout, the pruning layer and the dtype (an edited manifest
    is refused here instead of failing inside a runtime)."""
    kv = m.kv
    for key in ("capacity_head", "capacity_tail", "num_kv_heads", "head_dim", "dtype", "num_layers"):
        if kv_json.data.get(key) != getattr(kv, key):
            raise ArtifactError(f"manifest.json: kv_cache.{key} is {kv_json.data.get(key)!r} but the static shapes and the "
                                f"model give {getattr(kv, key)!r}. {_DAMAGED}")
    problems = []
    decode = m.graph(names.DECODE_STEP)
    declared = {t.name: t for t in decode.inputs}
    for i in range(kv.num_layers):
        for name in names.kv_names("past", [i]):
            t = declared.get(name)
            if t is None or t.shape != kv.shape(i) or t.dtype != kv.dtype:
                problems.append(f"decode_step input {name} is {t and (list(t.shape), t.dtype)}, the KV cache gives "
                                f"{list(kv.shape(i))} {kv.dtype}")
    head = {t.name for t in m.graph(names.PREFILL_HEAD).outputs}
    tail = {t.name for t in m.graph(names.PREFILL_TAIL).outputs}
    if head != head | set(names.kv_names("present", range(kv.layer + 1))) or \
            tail != tail | set(names.kv_names("present", range(kv.layer + 1, kv.num_layers))):
        problems.append(f"the prefill graphs' KV outputs do not split the decoder after layer {kv.layer}")
    if problems:
        raise ArtifactError("manifest.json does not match its graphs: " + "; ".join(problems[:3]) + f". {_DAMAGED}")


def read_manifest(folder: str | Path) -> Manifest:
    """Read and validate ``manifest.json`` of an export folder.

    Raises:
        ArtifactError: the folder or manifest is missing, unreadable, malformed or names paths outside the folder.
        IncompatibleArtifactError: the folder was written in another artifact format.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise ArtifactError(f"{str(folder)!r} {what}; pass the OUT_DIR written by topv-export.")
    data = read_json(folder / MANIFEST_NAME, damaged="The folder is damaged; re-export it.", missing=(
        f"{str(folder)!r} has no {MANIFEST_NAME}; it is not a topv export (or the export did not finish). "
        "Run topv-export MODEL_DIR OUT_DIR again."))
    manifest = Manifest.from_json(data)
    if _newer(manifest.topv_version, __version__):
        logging.getLogger("topv").warning(
            "%s was written by topv %s, newer than this topv %s (same artifact format %s); if it fails to load, "
            "upgrade topv", folder, manifest.topv_version, __version__, manifest.format)
    return manifest


def _newer(a: str, b: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())

    return parts(a) > parts(b)


def verify_folder(folder: str | Path, manifest: Manifest, *, checksums: bool | str = "stamp") -> None:
    """Check that the folder holds exactly what the manifest lists: every graph, the weights and the processor
    are listed files inside the folder, of their size and SHA-256.

    ``checksums``: ``"stamp"`` (default) hashes every file unless the user's cache holds a stamp saying this
    manifest's files were hashed in full and none has changed size, modification time or inode since;
    ``True`` always hashes; ``False`` checks sizes only.

    Raises:
        ArtifactError / ChecksumMismatchError: a file is missing, unlisted, outside the folder, truncated or modified.
    """
    folder = Path(folder)
    needed = [g.file for g in manifest.graphs.values()]
    if manifest.weights.get("file"):
        needed.append(check_relative(manifest.weights["file"], "weights.file"))
    for rel in needed:
        if rel not in manifest.files:
            raise ArtifactError(f"{rel} is used by the graphs but manifest.json does not list it, so it cannot be verified. {_DAMAGED}")
    inside(folder, manifest.processor_folder, "processor.folder")
    if not any(rel.startswith(manifest.processor_folder + "/") for rel in manifest.files):
        raise ArtifactError(f"manifest.json lists no files of the processor folder {manifest.processor_folder!r}. {_DAMAGED}")
    unlisted = sorted(rel for rel in _present(folder) if rel not in manifest.files and not _ours(rel))
    if unlisted:
        raise ArtifactError(
            f"{str(folder)!r} holds files manifest.json does not list ({', '.join(unlisted[:5])}); graphs could read them "
            f"unverified, so the folder is refused. Remove them or re-export the model."
        )
    key = hashlib.sha256((folder / MANIFEST_NAME).read_bytes()).hexdigest()
    verify_files(folder, manifest.files, checksums=checksums, stamp_key=key if checksums == "stamp" else None)


def _present(folder: Path) -> list[str]:
    """Relative paths of every file and symlink under ``folder`` (symlinks are not followed)."""
    out = []
    for path in folder.rglob("*"):
        if path.is_symlink() or path.is_file():
            out.append(path.relative_to(folder).as_posix())
    return out


def _ours(rel: str) -> bool:
    """Files topv adds to an export after the manifest: TensorRT engines, their manifest, and the temporary
    engine files a killed ``topv-build`` leaves (never read; the next build replaces them)."""
    if "/" in rel:
        return False
    return rel in (MANIFEST_NAME, "engines.json") or rel.endswith(".engine") or re.fullmatch(r"\..+\.engine\.tmp-\d+", rel) is not None
