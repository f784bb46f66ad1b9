"""A damaged store made by extract: every reader names the rows and the command that repairs it,
and that command (the same extract) extracts the damaged rows again instead of reporting a cache
hit, giving the store an undamaged run gives. Real images, a real tiny Keras trunk, real HDF5
files damaged on disk."""

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import register_tiny_trunk, write_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from rows_store import flip_exponent_bytes  # noqa: E402

SIZE = 32


def _extract(data, cache, weights, echo=None):
    from pipeline.extract.run import run_extraction

    opts = {"data": str(data), "backbone": "tiny_trunk", "weights": str(weights),
            "layer": "pooled", "input_size": SIZE, "batch_size": 4, "cache_dir": str(cache),
            "decode": "threads", "workers": 2}
    return run_extraction(opts, progress=False, echo=echo or (lambda *_: None))


def _vectors(path):
    with h5py.File(path, "r") as fh:
        return fh["features"][:], [i.decode() for i in fh["ids"][:]]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    weights = register_tiny_trunk(root / "tiny.weights.h5", SIZE)
    data = write_images(root / "data", per_class=3, size=(SIZE, SIZE))
    result = _extract(data, root / "cache", weights)
    return root, data, weights, result.path, _vectors(result.path)


@pytest.mark.parametrize("damage", ["flipped bits", "nan rows"])
def test_the_same_extract_repairs_a_damaged_store(extracted, tmp_path, damage):
    import shutil

    from pipeline.errors import StoreError
    from pipeline.store import open_store

    root, data, weights, path, (clean, ids) = extracted
    cache = tmp_path / "cache"
    shutil.copytree(path.parent, cache)
    damaged = cache / path.name
    if damage == "flipped bits":
        flip_exponent_bytes(damaged, [1, 4])
    else:
        with h5py.File(damaged, "a") as fh:
            fh["features"][2] = np.nan
    with open_store(damaged) as store, pytest.raises(StoreError) as refused:
        store.load()
    config = damaged.with_name(damaged.name[:-3] + ".config.toml")
    assert f"--config {config}" in str(refused.value)

    said = []
    again = _extract(data, cache, weights, echo=said.append)
    assert not again.cache_hit and again.n_extracted >= 1, said
    assert any("damaged row" in line for line in said), said
    vectors, again_ids = _vectors(again.path)
    assert again_ids == ids
    np.testing.assert_allclose(vectors, clean, rtol=1e-6, atol=1e-6)
    assert _extract(data, cache, weights).cache_hit  # repaired: the next run reuses it
