"""Files the tools write (kept-token maps, JSON results, predictions): never an input, never a user's file.

A target is refused when it is a folder, one of the command's inputs (the same file, also through links),
inside an input folder, or an existing file topv did not write. Files topv writes carry a mark it checks
before replacing them (a PNG text chunk, a ``written_by`` key, the predictions' own fields). Writes go to
a temporary file in the same folder and are renamed into place, so a failure leaves the old file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from topv._version import __version__
from topv.errors import OutputExistsError

WRITTEN_BY = f"topv {__version__}"
PNG_MARK = ("Software", "topv kept-token map")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: str | Path, *, inputs: Iterable[str | Path | None], ours: Callable[[Path], bool],
                      what: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Validate an output file path before any work starts; returns it as a Path.

    Raises:
        OutputExistsError: it is a folder, an input, inside an input folder, or an existing file topv did not write.
        InputError: it lacks one of ``suffixes``.
    """
    from topv.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{what} {str(path)!r} is a folder; give a file name such as {path / ('out' + (suffixes[0] if suffixes else ''))}.")
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"{what} {str(path)!r} must end in {' or '.join(suffixes)}; got {path.suffix or 'no extension'!r}.")
    refuse_inputs(path, inputs, what)
    if path.exists() and not ours(path):
        raise OutputExistsError(
            f"{what} {str(path)!r} exists and was not written by topv; topv only replaces its own output files. Remove it "
            "or choose another path."
        )
    return path


def refuse_inputs(path: Path, inputs: Iterable[str | Path | None], what: str) -> None:
    """Refuse an output ``path`` that is one of the command's inputs (also through links) or lies inside an input folder.

    Raises:
        OutputExistsError: it is.
    """
    resolved = path.resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item)
        if _same(path, source) or resolved == source.resolve():
            raise OutputExistsError(f"{what} {str(path)!r} is one of this command's inputs; topv never overwrites an input. Choose another path.")
        if source.is_dir() and source.resolve() in resolved.parents:
            raise OutputExistsError(f"{what} {str(path)!r} lies inside the input folder {str(source)!r}; write it elsewhere.")


def atomic_write(path: Path, data: bytes | Callable[[Path], None]) -> Path:
    """Write ``data`` (bytes, or a function writing a given temporary path) and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if isinstance(data, bytes):
            Path(tmp).write_bytes(data)
        else:
            data(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def json_is_ours(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and str(data.get("written_by", "")).startswith("topv")


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return atomic_write(path, (json.dumps({"written_by": WRITTEN_BY, **data}, indent=2) + "\n").encode())


def png_is_ours(path: Path) -> bool:
    try:
        from PIL import Image

        with Image.open(path) as img:
            return img.format == "PNG" and str(img.info.get(PNG_MARK[0], "")).startswith("topv")
    except Exception:  # noqa: BLE001 - anything PIL cannot read as our PNG is not ours
        return False


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as a PNG marked as topv's (atomically), then close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={PNG_MARK[0]: "topv plot"}))
    finally:
        plt.close(fig)


def check_result_outputs(args: Any, inputs: list[Any]) -> tuple[Path | None, Path | None]:
    """``--json`` and ``--plot`` of a results command, checked before it runs (see :func:`check_output_file`)."""
    json_path = args.json_path and check_output_file(args.json_path, inputs=inputs, ours=json_is_ours, what="--json")
    plot = args.plot and check_output_file(args.plot, inputs=inputs, ours=png_is_ours, what="--plot", suffixes=(".png",))
    return json_path or None, plot or None


def predictions_are_ours(path: Path) -> bool:
    try:
        with open(path) as f:
            first = json.loads(f.readline())
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and {"index", "method", "prediction", "answer"} <= set(first)
