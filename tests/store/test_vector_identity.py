"""The vectors' identity: one key over what changes the vectors, never over where the data is."""

import json
import shutil

import pytest

from conftest import register_tiny_trunk, write_images

SIZE = 32


def _extract(data, root, **changes):
    from pipeline.extract.run import run_extraction

    weights = register_tiny_trunk(root / "tiny.weights.h5", SIZE)
    opts = {"data": str(data), "backbone": "tiny_trunk", "weights": str(weights),
            "layer": "pooled", "pooling": "avg", "input_size": SIZE, "resize": "squash",
            "dtype": "float32", "batch_size": 8, "cache_dir": str(root / "cache"), **changes}
    return run_extraction(opts, progress=False, echo=lambda *_: None)


def test_a_moved_dataset_is_a_cache_hit(tmp_path):
    from pipeline.store import open_store

    first = _extract(write_images(tmp_path / "a" / "pets", per_class=2), tmp_path)
    shutil.move(tmp_path / "a" / "pets", tmp_path / "b" / "pets")  # a rename keeps the stamps
    again = _extract(tmp_path / "b" / "pets", tmp_path)
    assert again.cache_hit and again.path == first.path
    with open_store(again.path) as store:
        identity = {k: v for k, v in store.provenance.items() if k != "data_root"}
        assert str(tmp_path) not in json.dumps({k: identity[k] for k in
                                                ("reader", "weights", "input_shape")})


def test_the_store_records_its_key_and_the_options_that_rebuild_it(tmp_path):
    from pipeline.store import open_store
    from pipeline.store.vector_identity import KEY_FIELD, REBUILD_OPTIONS, identity_of, vector_key

    squash = _extract(write_images(tmp_path / "pets", per_class=2), tmp_path)
    crop = _extract(tmp_path / "pets", tmp_path, resize="center_crop")
    with open_store(squash.path) as a, open_store(crop.path) as b:
        assert a.key == a.provenance[KEY_FIELD] == vector_key(identity_of(a.provenance))
        assert a.key != b.key and a.path.name[-13:-3] == a.key[:10]
        assert set(a.provenance["extract_options"]) <= set(REBUILD_OPTIONS)
        assert b.provenance["extract_options"]["resize"] == "center_crop"


def test_the_key_refuses_fields_it_does_not_know():
    from pipeline.store.vector_identity import vector_key

    identity = {"backbone": "b", "weights": "sha256:0", "layer": "pooled", "pooling": "avg",
                "input_shape": [32, 32, 3], "preprocess": "p", "reader": {"resize": "squash"},
                "dtype": "float32", "precision": "float32"}
    assert vector_key(identity) != vector_key({**identity, "reader": {"resize": "center_crop"}})
    assert vector_key(identity) != vector_key({**identity, "precision": "int8"})
    with pytest.raises(ValueError, match="data_root"):
        vector_key({**identity, "data_root": "/somewhere"})
    with pytest.raises(ValueError, match="precision"):
        vector_key({k: v for k, v in identity.items() if k != "precision"})


def test_differences_name_the_reader_entry_that_differs():
    from pipeline.store.vector_identity import describe_differences, vector_differences

    a = {"backbone": "b", "reader": {"resize": "squash", "jpeg_draft": "off"}, "vector_key": "1"}
    b = {"backbone": "b", "reader": {"resize": "center_crop", "jpeg_draft": "off"},
         "vector_key": "2"}
    assert vector_differences(a, dict(a)) == []
    text = describe_differences(vector_differences(a, b))
    assert text == "reader.resize: trained on 'squash' vs given 'center_crop'"
    older = {k: v for k, v in a.items() if k != "vector_key"}  # a store of an older version
    assert "older version" in describe_differences(vector_differences(a, older))


def _rows(path):
    import numpy as np

    from pipeline.store import open_store

    with open_store(path) as store:
        return list(store.column("ids")), store.read_rows(np.arange(len(store)))


def test_two_datasets_of_one_name_keep_both_stores(tmp_path):
    """Two `pets/` folders elsewhere, and a `pets.csv` manifest, have one name and one vector
    key: each keeps its own store, none replaces another's, and each is a cache hit again."""
    import numpy as np

    first = _extract(write_images(tmp_path / "a" / "pets", per_class=2, seed=1), tmp_path)
    ids_a, rows_a = _rows(first.path)
    stamp = first.path.stat().st_mtime_ns
    second = _extract(write_images(tmp_path / "b" / "pets", per_class=3, seed=2), tmp_path)
    manifest_dir = write_images(tmp_path / "c", classes=("owl", "emu"), per_class=2, seed=3)
    (manifest_dir / "pets.csv").write_text(
        "path,label\nowl/owl_0.png,owl\nowl/owl_1.png,owl\nemu/emu_0.png,emu\n")
    third = _extract(manifest_dir / "pets.csv", tmp_path)
    assert len({first.path, second.path, third.path}) == 3
    assert not second.cache_hit and not third.cache_hit
    assert first.path.stat().st_mtime_ns == stamp  # never rewritten
    ids, rows = _rows(first.path)
    assert ids == ids_a and np.array_equal(rows, rows_a)
    assert len(_rows(second.path)[0]) == 6 and len(_rows(third.path)[0]) == 3
    for data, made in ((tmp_path / "a" / "pets", first), (tmp_path / "b" / "pets", second),
                       (manifest_dir / "pets.csv", third)):
        again = _extract(data, tmp_path)
        assert again.cache_hit and again.path == made.path


def test_a_dataset_that_moved_and_grew_extends_its_own_store(tmp_path):
    """Another dataset of the same name in the cache does not stop a moved dataset from finding
    its store again, and the files it gained are the only ones extracted."""
    first = _extract(write_images(tmp_path / "a" / "pets", per_class=3, seed=1), tmp_path)
    other = _extract(write_images(tmp_path / "x" / "pets", per_class=2, seed=7), tmp_path)
    shutil.move(tmp_path / "a" / "pets", tmp_path / "b" / "pets")
    write_images(tmp_path / "new", classes=("cat",), per_class=1, seed=9)
    shutil.move(tmp_path / "new" / "cat" / "cat_0.png", tmp_path / "b" / "pets" / "cat" / "c9.png")
    grown = _extract(tmp_path / "b" / "pets", tmp_path)
    assert grown.path == first.path and grown.n_extracted == 1 and grown.n_rows == 7
    assert other.path != first.path and len(_rows(other.path)[0]) == 4
