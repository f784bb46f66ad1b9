"""The store's one row index: plain row, file, group and views of every row, read from real
stores (extracted by a real tiny CNN from images and GIFs written here, or written row by row
with the store's own writer), and the splits that read it: a store without groups splits
exactly as scikit-learn's stratified splitters split its rows."""

import pickle

import numpy as np
import pytest
from PIL import Image

from conftest import register_tiny_trunk, write_images
from pipeline.errors import StoreError
from pipeline.evaluation.splits import cv_folds, make_split
from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import StoreWriter, open_store, write_store

VIEWS = 2


def _extract(data, weights, cache, **more):
    return run_extraction({"data": str(data), "backbone": "tiny_trunk", "weights": str(weights),
                           "input_size": 32, "batch_size": 4, "workers": 1,
                           "cache_dir": str(cache), "progress": False, **more},
                          echo=lambda *_: None).path


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A views store of 6 photos (no group column), a views store from a manifest that groups
    some photos, and a frames store of 4 GIFs (`--temporal-pool none`)."""
    root = tmp_path_factory.mktemp("rows")
    weights = register_tiny_trunk(root / "tiny.weights.h5")
    data = write_images(root / "photos", per_class=3, size=(40, 48))
    recipe = {"views": VIEWS, "augment": "flip,crop=0.6-0.9"}
    manifest = data / "list.csv"
    manifest.write_text("path,label,group\n" + "".join(
        f"{c}/{c}_{i}.png,{c},{'shoot' if i < 2 else ''}\n"
        for c in ("cat", "dog") for i in range(3)))
    clips = root / "clips"
    rng = np.random.default_rng(0)
    for c in ("neg", "pos"):
        (clips / c).mkdir(parents=True)
        for i in range(2):
            frames = [Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8))
                      for _ in range(3)]
            frames[0].save(clips / c / f"g{i}.gif", save_all=True, append_images=frames[1:],
                           duration=60, loop=0)
    return {"views": _extract(data, weights, root / "cache", **recipe),
            "grouped": _extract(manifest, weights, root / "cache", **recipe),
            "frames": _extract(clips, weights, root / "cache", frames=3, temporal_pool="none")}


def test_a_views_store_gives_every_row_its_plain_row_file_group_and_views(extracted):
    with open_store(extracted["views"]) as store:
        index = store.row_index
        ids = store.full_column("ids")
    assert (index.n_plain, index.n_rows) == (6, 6 * (VIEWS + 1))
    assert index.plain[:6].tolist() == list(range(6))  # a plain row is its own
    assert (ids[index.plain] == ids).all() and (index.file == ids).all()
    assert sorted(index.view[6:].tolist()) == sorted([1, 2] * 6)
    # no group column: every file is its own group, and its views share it
    assert (index.group == index.file).all() and (index.group != "").all()
    assert not index.has_groups and index.n_without_group == 0
    for row in range(6):
        views = index.views_of([row])
        assert sorted(index.view[views].tolist()) == [1, 2] and (index.plain[views] == row).all()
        assert index.views_of([row], max_view=1).tolist() == views[index.view[views] == 1].tolist()
    assert index.with_views([4, 1]).tolist()[:2] == [4, 1]
    assert sorted(index.with_views([4, 1])[2:].tolist()) == sorted(
        index.views_of([1]).tolist() + index.views_of([4]).tolist())
    assert index.with_views([3], max_view=0).tolist() == [3]
    assert index.views_of([]).size == 0


def test_views_share_the_group_their_file_has_and_blank_groups_are_their_files(extracted):
    with open_store(extracted["grouped"]) as store:
        index = store.row_index
        column = store.full_column("group")
    shoot = column[:6] == "shoot"
    assert shoot.sum() == 4  # two photos of each class were taken in one shoot
    assert (index.group[:6][shoot] == "shoot").all()
    assert (index.group[:6][~shoot] == index.file[:6][~shoot]).all()
    assert (index.group == index.group[index.plain]).all()  # a view is in its file's group
    assert (index.group != "").all()
    assert index.has_groups and index.n_without_group == 2


def test_a_frames_store_keeps_each_clip_as_the_group_of_its_frames(extracted):
    with open_store(extracted["frames"]) as store:
        index = store.row_index
        ids = store.column("ids")
    assert index.n_rows == index.n_plain == 4 * 3  # one row per frame, no views
    assert (index.file == ids).all() and index.views_of(np.arange(12)).size == 0
    assert [g for g in index.group] == [i.split("#clip")[0] for i in ids]
    assert index.has_groups and len(set(index.group.tolist())) == 4


def test_the_index_pickles_for_search_workers(extracted):
    with open_store(extracted["grouped"]) as store:
        index = store.row_index
    copy = pickle.loads(pickle.dumps(index))
    for name in ("plain", "file", "group", "view"):
        assert (getattr(copy, name) == getattr(index, name)).all(), name
    assert (copy.n_plain, copy.has_groups) == (index.n_plain, index.has_groups)
    assert copy.with_views([0, 5]).tolist() == index.with_views([0, 5]).tolist()


def test_the_audits_groups_are_reflected(tmp_path):
    path = write_store(tmp_path / "s.h5", np.ones((6, 2), np.float32), [0, 1] * 3,
                       class_names=["a", "b"])
    with open_store(path) as store:
        assert not store.row_index.has_groups
        store.use_groups(["dup1", "dup1", "", "", "", ""], "suggested_groups.csv")
        index = store.row_index
    assert index.has_groups and index.group.tolist() == ["dup1", "dup1", "row2", "row3",
                                                         "row4", "row5"]


def test_a_view_without_its_file_is_a_damaged_store(tmp_path):
    writer = StoreWriter(tmp_path / "s.h5", (2,), view_rows=True)
    cols = {"split": ["", ""], "group": ["", ""], "stamps": ["1:1", "1:1"], "labels": [0, 1]}
    writer.append(np.ones((2, 2), np.float32), ids=["a.png", "b.png"], view=[0, 0], **cols)
    writer.append(np.ones((2, 2), np.float32), ids=["a.png", "c.png"], view=[1, 1], **cols)
    writer.commit("k" * 64, ["x", "y"], {"backbone": "external", "layer": "given"})
    with open_store(tmp_path / "s.h5") as store:
        with pytest.raises(StoreError, match=r"damaged: 1 view row.*c\.png.*--views"):
            store.row_index


def _stratified(rows, labels, fraction, seed):
    from sklearn.model_selection import StratifiedShuffleSplit

    n_held = int(round(fraction * len(rows)))
    kept, held = next(StratifiedShuffleSplit(n_splits=1, test_size=n_held, random_state=seed)
                      .split(np.zeros(len(rows)), labels[rows]))
    return np.sort(rows[kept]), np.sort(rows[held])


@pytest.mark.parametrize("group", [None, "unique"])
def test_a_store_without_groups_splits_as_sklearns_stratified_splitters(tmp_path, group):
    """Row by row, whether the group column is blank or names each row alone: a group of
    one row changes nothing, so the rows are those of StratifiedShuffleSplit and
    StratifiedKFold, never a group splitter's over singleton groups."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.arange(90) % 3
    path = write_store(tmp_path / "s.h5", np.random.default_rng(0).normal(
        size=(90, 4)).astype(np.float32), labels, class_names=["a", "b", "c"],
        group=None if group is None else [f"photo{i}" for i in range(90)])
    with open_store(path) as store:
        index = store.row_index
        assert not index.has_groups
        for seed in range(3):
            split = make_split(store, 0.2, seed, 0.2)
            rest, test = _stratified(np.arange(90), labels, 0.2, seed)
            train, val = _stratified(rest, labels, 0.2, seed)
            assert split.test.tolist() == test.tolist()
            assert (split.train.tolist(), split.val.tolist()) == (train.tolist(), val.tolist())
            assert split.how.startswith("stratified")
            folds = cv_folds(train, labels, index.group, 4, seed)
            expected = StratifiedKFold(4, shuffle=True, random_state=seed).split(
                np.zeros(len(train)), labels[train])
            assert [(a.tolist(), b.tolist()) for a, b in folds] == \
                [(train[a].tolist(), train[b].tolist()) for a, b in expected]


def test_views_do_not_change_the_split_of_a_store_without_groups(extracted, tmp_path):
    with open_store(extracted["views"]) as store:
        labels = store.column("labels")
        with_views = make_split(store, 0.34, 1)
        x = store.read_rows(np.arange(len(store)))
    plain = write_store(tmp_path / "plain.h5", x, labels, class_names=["cat", "dog"])
    with open_store(plain) as store:
        without = make_split(store, 0.34, 1)
    assert (with_views.train.tolist(), with_views.val.tolist()) == \
        (without.train.tolist(), without.val.tolist())
