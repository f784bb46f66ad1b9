"""The shared splits: every class keeps training rows, and a group holdout samples groups fairly."""

import numpy as np
import pytest

from pipeline.errors import DataError


def _store(path, labels, groups=None, split=None):
    from pipeline.store.feature_store import write_store

    labels = np.asarray(labels)
    x = np.random.default_rng(0).normal(size=(len(labels), 4)).astype(np.float32)
    return write_store(path, x, labels, class_names=["c0", "c1"],
                       ids=[f"r{i}" for i in range(len(labels))], group=groups, split=split)


def _one_subject_holds_class_c0():
    # c0: 2 rows, both in subject s0 beside 8 rows of c1; 40 other subjects have c1 only.
    labels = [0, 0] + [1] * 8 + [1] * 200
    groups = ["s0"] * 10 + [f"s{1 + i // 5}" for i in range(200)]
    return np.array(labels), np.array(groups, dtype=object)


@pytest.mark.parametrize("seed", range(6))
def test_a_group_holdout_never_takes_every_training_row_of_a_class(tmp_path, seed):
    from pipeline.evaluation.splits import make_split
    from pipeline.store.feature_store import open_store

    labels, groups = _one_subject_holds_class_c0()
    with open_store(_store(tmp_path / "s.h5", labels, groups)) as store:
        split = make_split(store, 0.2, seed, 0.2)
    assert (labels[split.train] == 0).sum() == 2  # s0 cannot be split, so it trains
    assert any("c0" in w and "validation" in w for w in split.warnings)
    assert any("c0" in w and "test" in w for w in split.warnings)


def test_a_class_missing_from_training_is_an_error_naming_it_and_the_fix(tmp_path):
    from pipeline.evaluation.splits import make_split
    from pipeline.store.feature_store import open_store

    labels = [0, 1] * 20
    split = ["val" if i < 6 else "train" for i in range(40)]
    split = [("val" if lab == 0 and i >= 6 else s) for i, (lab, s) in enumerate(zip(labels, split))]
    with open_store(_store(tmp_path / "own.h5", labels, split=split)) as store:
        with pytest.raises(DataError, match=r"class c0 has no training rows.*split"):
            make_split(store, 0.2, 0)


def test_holdout_refuses_to_leave_a_class_out_of_the_kept_rows():
    from pipeline.evaluation.splits import check_classes

    with pytest.raises(DataError, match="class c1 has no training rows.*--val-fraction"):
        check_classes(np.array([0, 0, 1]), np.array([0, 1]), np.array([2]), ["c0", "c1"],
                      held_name="validation", knob="val_fraction")
    assert check_classes(np.array([0, 0, 1, 1]), np.array([0, 2, 3]), np.array([1]),
                         ["c0", "c1"], held_name="validation") == [
        "warning: class c1 has no validation rows (its 2 rows all train); its scores "
        "there are missing"]


def test_group_holdout_samples_groups_instead_of_taking_the_largest_first():
    from pipeline.evaluation.splits import holdout

    # 80 rows each a group of its own and 4 videos of 5 frames.
    groups = np.array([f"row{i}" for i in range(80)] + [f"video{i // 5}" for i in range(20)],
                      dtype=object)
    labels = np.arange(100) % 2
    grouped = set(range(80, 100))
    vals = [set(holdout(np.arange(100), labels, groups, 0.2, seed)[1].tolist())
            for seed in range(10)]
    assert all(18 <= len(v) <= 22 for v in vals)
    assert all(v - grouped for v in vals)  # ungrouped rows are validated too
    assert any(not grouped <= v for v in vals)  # not always every video
    assert len({frozenset(v) for v in vals}) > 5  # seeded, and the seed matters
    assert vals[3] == set(holdout(np.arange(100), labels, groups, 0.2, 3)[1].tolist())
