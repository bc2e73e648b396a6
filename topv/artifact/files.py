"""The files of an export folder: confined relative paths, SHA-256 records, and their verification.

Every path an export folder names (graphs, weights, the processor, the listed files) must be a plain
relative path that stays inside the folder, also after following symlinks: a crafted folder cannot make
topv read, hash or run anything outside it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from topv.errors import ArtifactError, ChecksumMismatchError

MANIFEST_NAME = "manifest.json"
REEXPORT = "Copy the folder again or re-export the model."


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes}


def read_json(path: Path, *, missing: str, damaged: str) -> Any:
    """A JSON file's content; ``missing`` / ``damaged`` say what to do when it is absent or not JSON.

    Raises:
        ArtifactError: the file is missing, unreadable or not JSON.
    """
    if not path.is_file():
        raise ArtifactError(missing)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}). {damaged}") from None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_relative(name: Any, what: str) -> str:
    """``name`` as a plain relative POSIX path without ``..``; raises ArtifactError otherwise."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise ArtifactError(f"manifest.json: {what} must be a relative path inside the folder; found {name!r}. {REEXPORT}")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or any(p in ("..", "") for p in parts) or name.startswith("~"):
        raise ArtifactError(
            f"manifest.json: {what} is {name!r}, which points outside the export folder; topv only reads files inside "
            f"it. {REEXPORT}"
        )
    return name


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` after checking that it (and every symlink on the way) stays inside ``folder``."""
    check_relative(name, what)
    root = Path(folder).resolve()
    path = root / name
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ArtifactError(
            f"{what} ({name!r}) resolves to {str(resolved)!r}, outside the export folder {str(root)!r} (a symlink?); "
            f"topv only reads files inside it. {REEXPORT}"
        )
    return path


def file_records(folder: Path, exclude: Iterable[str] = (MANIFEST_NAME,)) -> dict[str, FileRecord]:
    """``{relative path: FileRecord}`` for every file under ``folder``."""
    skip = set(exclude)
    records = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel not in skip:
            records[rel] = FileRecord(sha256_file(path), path.stat().st_size)
    return records


def check_file(path: Path, record: FileRecord, *, what: str, hint: str = REEXPORT, checksum: bool = True) -> None:
    """One listed file: a regular file of the listed size and (optionally) SHA-256.

    Raises:
        ArtifactError: the file is missing, not a regular file, or truncated.
        ChecksumMismatchError: its content differs.
    """
    if not path.is_file():
        raise ArtifactError(f"{what}, listed in the manifest, is missing from {str(path.parent)!r}. {hint}")
    size = path.stat().st_size
    if size != record.bytes:
        raise ArtifactError(f"{what} has {size} bytes but the manifest lists {record.bytes}; it is truncated or was replaced. {hint}")
    if checksum and sha256_file(path) != record.sha256:
        raise ChecksumMismatchError(f"{what} does not match its SHA-256 in the manifest; it was modified or corrupted. {hint}")


def verify_files(folder: Path, files: dict[str, FileRecord], *, checksums: bool = True, stamp_key: str | None = None) -> None:
    """Every listed file present, inside the folder, of its size and (optionally) SHA-256.

    With ``stamp_key`` (the manifest's own hash), a folder whose every file still has the size, modification
    time and inode it had when it was last hashed in full is not hashed again (see :func:`_stamp_path`).
    """
    paths = {rel: inside(folder, rel, f"file {rel!r}") for rel in files}
    for rel, record in files.items():
        check_file(paths[rel], record, what=rel, checksum=False)
    if not checksums:
        return
    identity = {rel: _identity(p) for rel, p in paths.items()}
    stamp = _stamp_path(folder) if stamp_key else None
    if stamp is not None and _read_stamp(stamp) == {"key": stamp_key, "files": identity}:
        return
    for rel, record in files.items():
        check_file(paths[rel], record, what=rel, checksum=True)
    if stamp is not None:
        _write_stamp(stamp, {"key": stamp_key, "files": identity})


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def _stamp_path(folder: Path) -> Path | None:
    """Where the "verified" stamp of a folder lives: the user's cache (never inside the export folder)."""
    from topv.config import cache_dir

    root = cache_dir()
    if root is None:
        return None
    return root / "verified" / (hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:32] + ".json")


def _read_stamp(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs the next load a full hash
        pass


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folder itself to disk (before an atomic rename)."""
    for path in [p for p in Path(folder).rglob("*") if p.is_file()] + [Path(folder)]:
        flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
        try:
            fd = os.open(path, flags)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
