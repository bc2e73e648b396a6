"""The errors topv raises.

Every error a user can cause derives from :class:`TopvError` and says what was expected, what was
found and what to do. :class:`InternalError` is reserved for topv's own bugs.
"""

from __future__ import annotations


class TopvError(Exception):
    """Base class for user-facing errors (bad input, bad configuration, unusable artifacts)."""


class ConfigError(TopvError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class KeepOutOfRangeError(ConfigError):
    """The keep budget is not between 1 and the number of visual tokens."""


class LayerOutOfRangeError(ConfigError):
    """The pruning layer index is not inside the decoder."""


class UnsupportedModelError(TopvError):
    """The model's architecture is not one topv knows how to split and prune."""


class InputError(TopvError, ValueError):
    """A request's input (image, prompt, generation settings) cannot be used."""


class ImageError(InputError):
    """The image is missing, unreadable, or not an image."""


class PromptTooLongError(InputError):
    """The prompt does not fit the static shapes fixed at export time."""


class BusyError(TopvError):
    """Every KV state of a ``Pipeline`` is in use (an unfinished stream holds one until it ends or is closed)."""


class ArtifactError(TopvError):
    """An exported folder or engine cannot be used (missing, truncated, modified, or from elsewhere)."""


class ChecksumMismatchError(ArtifactError):
    """A file in an exported folder does not match the checksum in its manifest."""


class IncompatibleArtifactError(ArtifactError):
    """An artifact was written by another topv format, TensorRT version or GPU."""


class OutputExistsError(TopvError):
    """The output folder exists and overwriting was not requested."""


class ExportError(TopvError):
    """Exporting a model to ONNX failed."""


class ResourceError(ExportError):
    """The machine evidently has too little free memory or disk for the requested export."""


class ToleranceError(ExportError):
    """An exported graph or generation does not match its PyTorch reference within tolerance."""


class BackendUnavailableError(TopvError, ImportError):
    """A backend's library (onnxruntime, tensorrt, CUDA) is not installed or cannot be used here."""


class InternalError(Exception):
    """A bug in topv itself; please report it with the traceback."""
