"""Where an export is written: nothing a user owns is lost.

* The export is built in a hidden sibling ``.NAME.partial-*`` and moved into place only after it has
  validated; ``OUT_DIR`` is never touched before that.
* An existing ``OUT_DIR`` is replaced only with ``force=True`` and only if it is a topv export (its
  ``manifest.json`` says so); never the model folder, a folder that contains it, or the working directory.
* Replacing is one atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``), so a kill at any moment leaves
  either the old or the new export in place; where the exchange is unavailable, two renames are used and
  the next export into the same place restores an interrupted swap.
* Each export holds a lock on its own partial folder while it runs, and a short lock on the parent folder
  while it cleans up and moves into place (``flock``; no lock files are left behind). Of two exports into
  the same new ``OUT_DIR`` the second to finish refuses to replace the first without ``force``. Partial
  folders whose export is no longer running (killed) are removed by the next export into the same place.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from topv.errors import OutputExistsError

log = logging.getLogger("topv.export")

_RENAME_EXCHANGE = 2


def is_topv_export(folder: Path) -> bool:
    """Whether ``folder`` holds a ``manifest.json`` written by topv (of any format)."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "topv_version" in data and "graphs" in data and "format" in data


def check_output(out_dir: Path, model_dir: Path, force: bool) -> None:
    """Refuse an ``out_dir`` the export may not write.

    Raises:
        OutputExistsError: it exists without ``force``, is not a topv export, or is (or contains) the model
            folder or the working directory.
    """
    out, model = out_dir.resolve(), model_dir.resolve()
    if out == model or out in model.parents:
        raise OutputExistsError(
            f"OUT_DIR {str(out_dir)!r} is the model folder {str(model_dir)!r} or contains it; an export never replaces its "
            "input. Choose another folder."
        )
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise OutputExistsError(f"OUT_DIR {str(out_dir)!r} is the working directory or contains it; choose a named folder for the export.")
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise OutputExistsError(f"{str(out_dir)!r} exists and is not a folder; remove it or choose another path.")
    if not force:
        raise OutputExistsError(
            f"{str(out_dir)!r} already exists; pass --force to replace it (a topv export is only replaced once the new "
            "one has passed validation) or choose another folder."
        )
    if not is_topv_export(out_dir):
        raise OutputExistsError(
            f"{str(out_dir)!r} exists and is not a topv export (it has no topv manifest.json); --force only replaces "
            "topv exports. Choose another folder or remove it yourself."
        )


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on a folder; yields whether it was taken (always True when blocking)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def parent_lock(out_dir: Path) -> Iterator[None]:
    """A short exclusive lock on ``OUT_DIR``'s parent folder (cleanup and the final move)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _flock(out_dir.parent):
        yield


def recover_and_clean(out_dir: Path) -> None:
    """Under :func:`parent_lock`: restore an interrupted two-rename swap; remove partial folders of dead exports."""
    parent = out_dir.parent
    olds = sorted(parent.glob(f".{out_dir.name}.old-*"))
    if olds and not out_dir.exists() and is_topv_export(olds[-1]):
        log.warning("restoring %s from an interrupted replacement (%s)", out_dir, olds[-1].name)
        os.rename(olds[-1], out_dir)
        olds = olds[:-1]
    for leftover in olds + sorted(parent.glob(f".{out_dir.name}.partial-*")):
        with _flock(leftover, blocking=False) as free:
            if free:  # no running export holds it
                log.info("removing %s, left by an interrupted export", leftover)
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def partial_dir(out_dir: Path) -> Iterator[Path]:
    """A new hidden sibling folder for the export, locked for as long as the export runs."""
    path = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    with _flock(path):
        yield path


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the call is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_cwd = -100
    if fn(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def move_into_place(tmp: Path, out_dir: Path, model_dir: Path, force: bool) -> None:
    """Publish the finished export ``tmp`` as ``out_dir`` (call under :func:`parent_lock`)."""
    if out_dir.exists():
        check_output(out_dir, model_dir, force)  # re-checked under the lock: another export may have finished first
        if _exchange(tmp, out_dir):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old export
            return
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(tmp, out_dir)
