"""Stage one: files -> frozen backbone (inference mode) -> vectors in the feature store.

    from pipeline.extract import run_extraction
    result = run_extraction({"data": "photos/", "backbone": "resnet50", "weights": "imagenet"})

Inside: `sources/` decodes files into arrays (it knows no backbone), `backbones/` is the
registry of frozen trunks, `engines.py` picks the Keras backend, `forward_pass.py` runs batches
with decoding overlapped (`prefetch.py`, `decode_pool.py`), and `journal.py` publishes finished
samples crash-safely before `run.py` assembles the store. Nothing here knows about heads.
"""

from __future__ import annotations

from pipeline.extract.options import EXTRACT_OPTIONS


def __getattr__(name):
    # Lazy, so importing a light sub-module (sources, options) does not load Keras or h5py.
    if name in ("run_extraction", "ExtractResult"):
        from pipeline.extract import run

        return getattr(run, name)
    raise AttributeError(f"module 'pipeline.extract' has no attribute {name!r}")


__all__ = ["EXTRACT_OPTIONS", "run_extraction", "ExtractResult"]
