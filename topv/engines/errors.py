"""Errors of the TensorRT path (in addition to :mod:`topv.errors`).

Loading problems use the shared types: a missing or damaged engine is an ``ArtifactError``, an engine from
another TensorRT version or GPU an ``IncompatibleArtifactError``, a missing ``tensorrt`` module a
``BackendUnavailableError``, existing engines without ``--force`` an ``OutputExistsError``.
"""

from __future__ import annotations

from topv.errors import TopvError


class EngineBuildError(TopvError):
    """TensorRT could not parse a graph or build an engine (the message lists the parser's errors)."""


class EngineRunError(TopvError):
    """TensorRT refused to run an engine (a shape outside its profile, a failed enqueue)."""
