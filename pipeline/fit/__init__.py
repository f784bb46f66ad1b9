"""Stage two: a dense Keras head trained on cached vectors (`fit-head`).

    from pipeline.fit import fit_head
    run_dir = fit_head("cache/<store>.h5", {"hidden_units": (256,)})
    run_dir = fit_head("cache/<store>.h5", HeadConfig.from_mapping({"epochs": 50}))

`options.py` holds the option table and `HeadConfig`, the frozen settings class made from it
(the one list of defaults); `training.py` is the one head trainer (also used by grid-search's
Keras estimator).

`heads.py` builds heads and picks the output layer and loss from the labels (splits, data
checks and calibration figures come from `pipeline.evaluation`), `head_data.py` feeds
vectors from memory or streamed from HDF5, `reports.py` writes the run folder's tables and plots,
and `run.py` ties them together. It reads the store, never the backbone.
"""

from __future__ import annotations

from pipeline.fit.options import FIT_HEAD_OPTIONS, HeadConfig


def __getattr__(name):
    # Lazy, so reading the option table loads neither h5py nor Keras.
    if name == "fit_head":
        from pipeline.fit.run import fit_head

        return fit_head
    raise AttributeError(f"module 'pipeline.fit' has no attribute {name!r}")


__all__ = ["FIT_HEAD_OPTIONS", "HeadConfig", "fit_head"]
