"""An audit counts as the store's own only while it describes the same vectors of the same files:
the vector key (settings) and the source fingerprint (which files) both have to match."""

import json

import h5py
import numpy as np


def test_an_audit_goes_stale_when_the_same_settings_cover_other_files(tmp_path):
    from pipeline.audit.run import run_audit
    from pipeline.evaluation.exclusions import read_audit_summary
    from pipeline.store.feature_store import open_store, write_store

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    store = write_store(tmp_path / "s.h5", rng.normal(size=(60, 6)).astype(np.float32) +
                        labels[:, None], labels, class_names=["a", "b"],
                        split=["train"] * 45 + ["test"] * 15,
                        provenance={"source_fingerprint": "files-one"})
    run_audit(store, {"folds": 2}, echo=lambda *_: None)
    with open_store(store) as opened:
        assert read_audit_summary(opened) is not None
    with h5py.File(store, "a") as fh:  # same key and rows, other files behind them
        provenance = json.loads(fh.attrs["provenance"])
        provenance["source_fingerprint"] = "files-two"
        fh.attrs["provenance"] = json.dumps(provenance)
    with open_store(store) as opened:
        assert read_audit_summary(opened) is None
