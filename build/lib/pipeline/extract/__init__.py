"""Stage one: files -> frozen backbone (inference mode) -> vectors in the feature store.

    from pipeline.extract import run_extraction
    store = run_extraction({"data": "photos/", "backbone": "resnet50", "weights": "imagenet"})

The options are any subset of the extract options (the CLI's defaults fill the rest) or an
`ExtractConfig`. Inside: `sources/` holds one reader per source type (it knows no backbone),
`backbones/` is the registry of frozen trunks, `engines.py` one Engine object per engine,
`plugins.py` imports the user's registration modules, `forward_pass.py` runs batches
with decoding overlapped (`prefetch.py`, `decode_pool.py`), and `journal.py` publishes finished
samples crash-safely before `run.py` assembles the store. Nothing here knows about heads.
"""

from __future__ import annotations

from pipeline.extract.options import EXTRACT_OPTIONS, ExtractConfig


def __getattr__(name):
    # Lazy, so importing a light sub-module (sources, options) does not load Keras or h5py.
    if name in ("run_extraction", "ExtractResult"):
        from pipeline.extract import run

        return getattr(run, name)
    raise AttributeError(f"module 'pipeline.extract' has no attribute {name!r}")


__all__ = ["EXTRACT_OPTIONS", "ExtractConfig", "run_extraction", "ExtractResult"]
