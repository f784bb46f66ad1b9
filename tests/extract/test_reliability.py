"""Nothing lost, nothing stuck: odd file names, environment errors that are not the file's
fault, decode workers that die. Real files, a real (tiny) ResNet50, real processes."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store
from tests.conftest import write_images


def _extract(data, cache, **kw):
    opts = {"data": str(data), "backbone": "resnet50", "weights": "none", "layer": "pooled",
            "pooling": "avg", "input_size": 32, "resize": "squash", "batch_size": 4,
            "workers": 2, "dtype": "float32", "cache_dir": str(cache), **kw}
    return run_extraction(opts, progress=False, echo=lambda *_: None)


def test_file_names_that_are_not_utf8_are_stored_with_an_escape(tmp_path):
    data = write_images(tmp_path / "data", per_class=2)
    odd = os.fsencode(data / "cat") + b"/caf\xe9 \xff.png"  # Latin-1 bytes: not UTF-8
    shutil.copy(data / "cat" / "cat_0.png", odd)
    odd_dir = os.fsencode(data / "dog") + b"/sub\xfe"
    os.mkdir(odd_dir)
    shutil.copy(data / "dog" / "dog_0.png", odd_dir + b"/x.png")
    with open(os.fsencode(data / "dog") + b"/bad\xff.png", "wb") as fh:
        fh.write(b"not an image")
    first = _extract(data, tmp_path / "cache")
    with open_store(first.path) as store:
        ids = list(store.column("ids"))
        assert "cat/caf\\xe9 \\xff.png" in ids and "dog/sub\\xfe/x.png" in ids
        assert len(ids) == 6 and [f for f, _ in store.failures()] == ["dog/bad\\xff.png"]
        X, _ = store.load()
        np.testing.assert_allclose(X[ids.index("cat/caf\\xe9 \\xff.png")],
                                   X[ids.index("cat/cat_0.png")], atol=1e-6)
    assert _extract(data, tmp_path / "cache").cache_hit  # the store is complete and reusable
