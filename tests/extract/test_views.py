"""Cached augmented views (`extract --views K --augment RECIPE`) on real images and a real CNN:
the views store holds the plain rows as they are plus K seeded views per file, a re-run is a
cache hit, raising K runs the backbone for the new views only, and old stores read as plain."""

import numpy as np
import pytest

import run_pipeline
from pipeline.errors import ConfigError
from pipeline.extract.augment import augment_chunks, parse_recipe, view_rng
from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store, write_store
from tests.conftest import register_tiny_trunk, write_images


@pytest.fixture
def setup(tmp_path):
    weights = register_tiny_trunk(tmp_path / "tiny.weights.h5")
    data = write_images(tmp_path / "data", per_class=3, size=(40, 48))
    return data, weights, tmp_path / "cache"


def _extract(data, weights, cache, lines=None, **kw):
    opts = {"data": str(data), "backbone": "tiny_trunk", "weights": str(weights),
            "input_size": 32, "batch_size": 4, "workers": 2, "cache_dir": str(cache),
            "progress": False, **kw}
    return run_extraction(opts, echo=(lines.append if lines is not None else lambda *_: None))


def _views_run(lines) -> str:
    return next(line for line in lines if "view(s)" in line and "extract" in line)


def test_views_store_holds_the_plain_rows_and_k_views_of_each_file(setup):
    data, weights, cache = setup
    plain = _extract(data, weights, cache)
    views = _extract(data, weights, cache, views=2, augment="flip,crop=0.5-0.9,jitter=0.3")
    assert views.path != plain.path and views.path.name.startswith(plain.path.stem + "-views2-")
    with open_store(plain.path) as p, open_store(views.path) as v:
        assert len(v) == len(p) == 6 and v.n_views == 2 and v.key == p.key
        np.testing.assert_array_equal(v.read_rows(np.arange(6)), p.read_rows(np.arange(6)))
        view = v.full_column("view")
        assert view.tolist() == [0] * 6 + [1] * 6 + [2] * 6
        for column in ("ids", "labels", "split", "group", "stamps"):
            full = v.full_column(column)
            assert full[6:12].tolist() == full[12:].tolist() == p.column(column).tolist()
        # each view is its own augmentation: no view equals its plain row
        x = v.read_rows(np.arange(18))
        assert not np.isclose(x[6:12], x[:6], atol=1e-6).all(axis=1).any()
        assert not np.isclose(x[12:], x[6:12], atol=1e-6).all(axis=1).any()
        assert v.provenance["views"]["recipe"] == "crop=0.5-0.9,flip,jitter=0.3"


def test_a_rerun_is_a_cache_hit_and_the_plain_store_stays_shared(setup):
    data, weights, cache = setup
    first = _extract(data, weights, cache, views=2)
    lines = []
    again = _extract(data, weights, cache, lines, views=2)
    assert again.cache_hit and again.path == first.path
    assert not any("to extract" in line for line in lines)
    lines = []
    plain = _extract(data, weights, cache, lines)  # without views: the same plain store
    assert plain.cache_hit and first.path.name.startswith(plain.path.stem)


def test_raising_k_extracts_only_the_new_views_and_equals_a_fresh_extraction(setup, tmp_path):
    data, weights, cache = setup
    two = _extract(data, weights, cache, views=2)
    lines = []
    three = _extract(data, weights, cache, lines, views=3)
    assert _views_run(lines).startswith("6 view(s) of 6 file(s) to extract")
    assert "12 reused" in _views_run(lines)
    fresh_lines = []
    fresh = _extract(data, weights, tmp_path / "fresh", fresh_lines, views=3)
    assert _views_run(fresh_lines).startswith("18 view(s)")
    with open_store(two.path) as a, open_store(three.path) as b, open_store(fresh.path) as c:
        assert b.n_views == 3
        np.testing.assert_array_equal(b.read_rows(np.arange(18)), a.read_rows(np.arange(18)))
        # views are seeded per file: reused and freshly drawn views are the same vectors
        np.testing.assert_allclose(b.read_rows(np.arange(24)), c.read_rows(np.arange(24)),
                                   atol=1e-6)
    lines = []
    assert _extract(data, weights, cache, lines, views=2).cache_hit  # K=2 is still there


def test_another_recipe_or_seed_keys_other_view_rows(setup):
    data, weights, cache = setup
    a = _extract(data, weights, cache, views=1)
    b = _extract(data, weights, cache, views=1, augment="rotate=20")
    c = _extract(data, weights, cache, views=1, view_seed=1)
    assert len({a.path, b.path, c.path}) == 3
    with open_store(a.path) as sa, open_store(b.path) as sb, open_store(c.path) as sc:
        assert sa.key == sb.key == sc.key  # the plain rows' key, shared
        assert not np.allclose(sa.read_rows(np.arange(6, 12)), sb.read_rows(np.arange(6, 12)))
        assert not np.allclose(sa.read_rows(np.arange(6, 12)), sc.read_rows(np.arange(6, 12)))


def test_a_store_without_views_reads_as_all_plain(tmp_path):
    path = write_store(tmp_path / "old.h5", np.ones((4, 3), np.float32), [0, 1, 0, 1],
                       class_names=["a", "b"])
    with open_store(path) as store:
        assert len(store) == 4 and store.n_views == 0
        assert store.full_column("view").tolist() == [0, 0, 0, 0]
        assert store.row_index.views_of(np.arange(4)).size == 0


def test_views_are_seeded_per_file_and_view():
    recipe = parse_recipe("flip,crop=0.6-1.0,rotate=10,jitter=0.2")
    x = [np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)]
    (one,) = augment_chunks(recipe, x, view_rng(0, "a/1.png", 1))
    assert np.array_equal(one, augment_chunks(recipe, x, view_rng(0, "a/1.png", 1))[0])
    assert not np.array_equal(one, augment_chunks(recipe, x, view_rng(0, "a/1.png", 2))[0])
    assert not np.array_equal(one, augment_chunks(recipe, x, view_rng(0, "a/2.png", 1))[0])
    clip = np.random.default_rng(1).integers(0, 256, (2, 6, 16, 16, 3), dtype=np.uint8)
    out = augment_chunks(parse_recipe("tjitter=2,crop=0.8-1.0"), [clip, clip],
                         view_rng(0, "v.gif", 1))
    assert [o.shape for o in out] == [clip.shape] * 2 and out[0].dtype == np.uint8
    np.testing.assert_array_equal(out[0], out[1])  # one draw for both chunks of the file


@pytest.mark.parametrize("recipe, words", [("blur", "unknown step 'blur'"),
                                           ("crop=0.9-0.2", "crop=A-B"),
                                           ("rotate=x", "no valid value"), ("", "no step")])
def test_a_wrong_recipe_is_one_error_line(tmp_path, capsys, recipe, words):
    data = write_images(tmp_path / "data", per_class=1)
    code = run_pipeline.main(["extract", "--data", str(data), "--weights", "none",
                              "--views", "2", "--augment", recipe, "--cache-dir",
                              str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --augment") and words in err[-1]
    assert not (tmp_path / "cache").exists()  # refused before anything ran
    with pytest.raises(ConfigError, match="--cluster"):
        run_extraction({"data": str(data), "views": 1, "cluster": "ray"})


def _still_gifs(root, n=2):
    """GIFs whose frames are all one picture (a different one per GIF), so any frame count
    gives the same frames, and a mirrored frame gives another vector."""
    from PIL import Image

    for i in range(n):
        frame = Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3),
                                                                  dtype=np.uint8))
        folder = root / ("a" if i % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        frame.save(folder / f"g{i}.gif", save_all=True, append_images=[frame] * 3, duration=50)
    return root


def test_one_view_of_a_clip_is_one_draw_over_all_its_frames(tmp_path):
    """32 frames reach the backbone in two chunks of 16; a view's flip, crop and jitter are
    drawn once for the file and view, so with all frames alike the 32-frame view is the 16-frame
    view (two draws would mix two augmentations in one view)."""
    weights = register_tiny_trunk(tmp_path / "tiny.weights.h5")
    data = _still_gifs(tmp_path / "gifs")
    stores = {}
    for frames in (16, 32):
        stores[frames] = _extract(data, weights, tmp_path / "cache", frames=frames,
                                  temporal_pool="mean", views=8,
                                  augment="flip,crop=0.5-0.9,jitter=0.3")
    with open_store(stores[16].path) as a, open_store(stores[32].path) as b:
        assert a.n_views == b.n_views == 8
        rows = np.arange(len(a.full_column("view")))
        np.testing.assert_allclose(b.read_rows(rows), a.read_rows(rows), rtol=1e-5, atol=1e-6)


def test_views_of_the_old_per_chunk_draw_are_extracted_again_not_reused(setup):
    """A views store keyed as before one draw per view (no draw version in its identity) is
    never reused: its views may mix augmentations."""
    import shutil

    from pipeline.store import vector_identity
    from pipeline.extract.views import views_path

    data, weights, cache = setup
    made = _extract(data, weights, cache, views=2)
    with open_store(made.path) as store:
        prov = store.provenance
        plain = made.path.with_name(made.path.name.split("-views")[0] + ".h5")
    old_identity = {**vector_identity.identity_of(prov),
                    "views": {"recipe": prov["views"]["recipe"], "seed": prov["views"]["seed"]}}
    old = views_path(plain, 2, vector_identity.vector_key(old_identity))
    if old != made.path:
        shutil.move(made.path, old)
    lines = []
    again = _extract(data, weights, cache, lines, views=2)
    assert not again.cache_hit and _views_run(lines).startswith("12 view(s) of 6 file(s)")


def test_views_on_a_cached_plain_store_say_what_happened(setup, capsys):
    """The summary of `--views` on a cached plain store names the cache hit, the views
    extracted and their rate, never "extracted 0 files ... 0.0 images/s"."""
    data, weights, cache = setup
    common = ["extract", "--data", str(data), "--backbone", "tiny_trunk", "--weights",
              str(weights), "--input-size", "32", "--cache-dir", str(cache), "--no-progress"]
    assert run_pipeline.main(common) == 0
    capsys.readouterr()
    assert run_pipeline.main([*common, "--views", "2"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-2]
    assert "extracted 0 files" not in summary and "0.0 images/s" not in summary, summary
    assert summary.startswith("cache hit of the plain store; 12 views extracted in "), summary
    assert "views/s" in summary and "store holds 18 rows from 6 files" in summary, summary
    assert run_pipeline.main([*common, "--views", "2"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-2]
    assert summary.startswith("cache hit: nothing to extract; store holds 18 rows"), summary
