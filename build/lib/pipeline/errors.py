"""Typed errors for bad input.

`run_pipeline.py` catches `PipelineError` only: it prints the message as one line and exits
non-zero. Anything else is a bug and keeps its traceback. Messages name the problem, echo what
was received and say how to fix it.
"""


class PipelineError(Exception):
    """Base class of every error caused by the user's input or environment."""


class ConfigError(PipelineError):
    """An option or config-file value is unknown, missing or out of range."""


class DataError(PipelineError):
    """The data folder or manifest cannot be used (empty, unlabelled, inconsistent)."""


class BackboneError(PipelineError):
    """Unknown backbone or feature layer."""


class WeightsError(PipelineError):
    """Weights cannot be fetched, read, or do not fit the backbone."""


class StoreError(PipelineError):
    """A feature store is missing, locked, corrupt or made with other settings."""


class DecodeError(PipelineError):
    """One input file cannot be decoded; recorded as a per-sample failure, never fatal."""


class EngineError(PipelineError):
    """The chosen inference engine is missing or cannot run this model."""


class ResourceError(PipelineError):
    """The machine, not the input, failed while reading: permission denied, too many open files,
    out of memory, a file that vanished. Never recorded as a per-sample failure: the run stops
    (finished work is kept) and the same command retries."""
