"""`--decisions decisions.csv`: a review's drop / relabel / group / keep decisions, applied by
fit-head and grid-search on top of a store that stays as it was; and the one-line refusals of a
file that does not fit the store (unknown id, unknown action, a class the store lacks, another
store's audit, a missing audit line)."""

import contextlib
import hashlib
import io
import json

import h5py
import numpy as np
import pytest

from conftest import read_csv

NAMES = ["red", "green", "blue"]
FAST = {"epochs": 2, "hidden_units": (), "progress": False, "learning_curve": False,
        "calibration_fraction": 0.0}


def _store(path, n=60, fingerprint="files-one"):
    """A store of `n` rows with stored splits: rows 0..35 train, 36..47 val, 48..59 test."""
    from pipeline.store.feature_store import write_store

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    x = rng.normal(size=(n, 8)).astype(np.float32) + 3 * np.eye(8, dtype=np.float32)[labels]
    split = ["train"] * 36 + ["val"] * 12 + ["test"] * (n - 48)
    return write_store(path, x, labels, class_names=NAMES, split=split,
                       ids=[f"img/{i:04d}.jpg" for i in range(n)],
                       provenance={"source_fingerprint": fingerprint})


def _identity(store):
    from pipeline.evaluation.decisions import audit_identity
    from pipeline.store.feature_store import open_store

    with open_store(store) as opened:
        return audit_identity(opened)


def _decisions(path, identity, rows):
    lines = [f"# audit {identity}", "id,action,value"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _main(args):
    import run_pipeline

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_pipeline.main(args)
    return code, out.getvalue().strip().splitlines(), err.getvalue()


REVIEW = [("img/0049.jpg", "relabel", "red"),      # test row of green
          ("img/0050.jpg", "relabel", "green"),    # test row of blue
          ("img/0037.jpg", "relabel", "blue"),     # val row of green
          ("img/0051.jpg", "drop", ""),            # test
          ("img/0038.jpg", "drop", ""),            # val
          ("img/0052.jpg", "group", "same-photo"),  # two test rows of one source
          ("img/0053.jpg", "group", "same-photo"),
          ("img/0054.jpg", "keep", "")]


def test_fit_head_applies_drop_relabel_group_and_records_them(tmp_path):
    from pipeline.fit.run import fit_head

    store = _store(tmp_path / "s.h5")
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    decisions = _decisions(tmp_path / "decisions.csv", _identity(store), REVIEW)
    run = fit_head(store, {**FAST, "decisions": str(decisions)}, out_dir=tmp_path / "runs",
                   echo=lambda *_: None)
    test = {r["id"]: r for r in read_csv(run / "predictions_test.csv")}
    val = {r["id"]: r for r in read_csv(run / "predictions_val.csv")}
    assert "img/0051.jpg" not in test and "img/0038.jpg" not in val  # dropped
    assert len(test) == 11 and len(val) == 11
    assert test["img/0049.jpg"]["true_class"] == "red"
    assert test["img/0050.jpg"]["true_class"] == "green"
    assert val["img/0037.jpg"]["true_class"] == "blue"
    assert test["img/0048.jpg"]["true_class"] == "red"  # untouched rows keep their class
    assert test["img/0052.jpg"]["group"] == test["img/0053.jpg"]["group"]
    assert test["img/0054.jpg"]["group"] != test["img/0052.jpg"]["group"]
    metrics = json.loads((run / "metrics.json").read_text())
    digest = hashlib.sha256(decisions.read_bytes()).hexdigest()
    assert metrics["decisions"]["sha256"] == digest
    assert metrics["decisions"]["applied"] == {"drop": 2, "relabel": 3, "group": 2, "keep": 1}
    assert "2 row(s) dropped by the review's decisions" in metrics["split"]["how"]
    assert json.loads((run / "run.json").read_text())["decisions"]["sha256"] == digest
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before  # the store is untouched


def test_grid_search_applies_the_same_decisions(tmp_path):
    from pipeline.search.run import run_grid_search

    store = _store(tmp_path / "s.h5")
    decisions = _decisions(tmp_path / "decisions.csv", _identity(store), REVIEW)
    run = run_grid_search(store, {"models": "logistic_regression", "cv": 2, "n_jobs": 1,
                                  "progress": False, "learning_curve": False,
                                  "decisions": str(decisions)},
                          out_dir=tmp_path / "runs", echo=lambda *_: None)
    rows = {r["id"]: r for r in read_csv(run / "folds.csv")}
    assert "img/0051.jpg" not in rows and "img/0038.jpg" not in rows
    assert rows["img/0049.jpg"]["true_class"] == "red"
    assert rows["img/0037.jpg"]["true_class"] == "blue"
    assert rows["img/0052.jpg"]["group"] == rows["img/0053.jpg"]["group"]
    recorded = json.loads((run / "run.json").read_text())["decisions"]
    assert recorded["applied"]["drop"] == 2 and recorded["applied"]["relabel"] == 3


def test_a_group_decision_joins_what_the_store_already_groups(tmp_path):
    from pipeline.evaluation.decisions import apply_decisions
    from pipeline.store.feature_store import open_store, write_store

    store = write_store(tmp_path / "g.h5", np.eye(6, dtype=np.float32), [0, 1, 0, 1, 0, 1],
                        class_names=["a", "b"], ids=[f"f{i}" for i in range(6)],
                        group=["v1", "v1", "v2", "", "", ""])
    decisions = _decisions(tmp_path / "d.csv", _identity(store),
                           [("f1", "group", "x"), ("f2", "group", "x"), ("f4", "group", "y")])
    with open_store(store) as opened:
        apply_decisions(opened, str(decisions), lambda *_: None)
        group = opened.row_index.group
    assert group[0] == group[1] == group[2]  # v1 and v2 joined through f1 and f2
    assert len({group[3], group[4], group[5], group[0]}) == 4


@pytest.mark.parametrize("row, named", [
    (("img/9999.jpg", "drop", ""), "id img/9999.jpg is not a row of s.h5"),
    (("img/0001.jpg", "delete", ""), "action 'delete'"),
    (("img/0001.jpg", "relabel", "purple"), "class 'purple'"),
    (("=HYPERLINK(\"http://x\")", "drop", ""), "is not a row of s.h5"),
    (("img/0001.jpg", "group", ""), "a group decision needs a group name"),
    (("img/0001.jpg", "drop"), "has 2 cell(s) where its header has 3"),
])
def test_a_decision_that_does_not_fit_the_store_is_one_error_line(tmp_path, row, named):
    store = _store(tmp_path / "s.h5")
    decisions = _decisions(tmp_path / "decisions.csv", _identity(store),
                           [("img/0002.jpg", "keep", ""), row])
    for command in ("fit-head", "grid-search"):
        code, out, err = _main([command, "--store", str(store), "--decisions", str(decisions),
                                "--out", str(tmp_path / "runs")])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (command, err)
        assert "line 4" in lines[0] and named in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_conflicting_decisions_for_one_row_are_refused(tmp_path):
    store = _store(tmp_path / "s.h5")
    decisions = _decisions(tmp_path / "decisions.csv", _identity(store),
                           [("img/0001.jpg", "drop", ""), ("img/0001.jpg", "relabel", "red")])
    code, _, err = _main(["fit-head", "--store", str(store), "--decisions", str(decisions)])
    assert code == 2 and "line 4" in err and "line 3" in err and len(err.splitlines()) == 1


def test_decisions_from_another_stores_audit_or_without_one_are_refused(tmp_path):
    store = _store(tmp_path / "s.h5")
    other = _store(tmp_path / "o.h5", fingerprint="other-files")
    assert _identity(store) != _identity(other)
    cases = {"another": _decisions(tmp_path / "a.csv", _identity(other),
                                   [("img/0001.jpg", "drop", "")]),
             "missing": tmp_path / "m.csv"}
    cases["missing"].write_text("id,action,value\nimg/0001.jpg,drop,\n", encoding="utf-8")
    for name, path in cases.items():
        code, _, err = _main(["fit-head", "--store", str(store), "--decisions", str(path)])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: ") and _identity(store) in err, err
        assert ("another" in err) if name == "another" else ("no `# audit" in err), err
    code, _, err = _main(["fit-head", "--store", str(store), "--decisions",
                          str(tmp_path / "absent.csv")])
    assert code == 2 and "decisions file not found" in err


def test_the_store_file_is_read_only_to_decisions(tmp_path):
    """Relabels live in memory: reopening the store gives its own labels back."""
    from pipeline.evaluation.decisions import apply_decisions
    from pipeline.store.feature_store import open_store

    store = _store(tmp_path / "s.h5")
    decisions = _decisions(tmp_path / "d.csv", _identity(store), REVIEW)
    with open_store(store) as opened:
        apply_decisions(opened, str(decisions), lambda *_: None)
        assert opened.column("labels")[49] == 0 and opened.full_column("labels")[49] == 0
    with h5py.File(store, "r") as fh:
        assert fh["labels"][49] == 1


def test_blank_lines_and_windows_line_ends_are_read_as_written(tmp_path):
    from pipeline.evaluation.decisions import apply_decisions
    from pipeline.store.feature_store import open_store

    store = _store(tmp_path / "s.h5")
    path = tmp_path / "d.csv"
    path.write_bytes((f"# audit {_identity(store)} s.h5\r\nid,action,value\r\n\r\n"
                      "img/0049.jpg,relabel,red\r\n\r\n").encode("utf-8"))
    with open_store(store) as opened:
        decisions = apply_decisions(opened, str(path), lambda *_: None)
        assert decisions.applied["relabel"] == 1 and opened.column("labels")[49] == 0


def test_a_relabelled_or_grouped_file_takes_its_augmented_views_along(tmp_path):
    from pipeline.evaluation.decisions import apply_decisions
    from pipeline.store.feature_store import StoreWriter, open_store

    writer = StoreWriter(tmp_path / "v.h5", (2,), view_rows=True)
    cols = {"split": ["", ""], "group": ["", ""], "stamps": ["1:1", "1:1"], "labels": [0, 1]}
    writer.append(np.ones((2, 2), np.float32), ids=["a.png", "b.png"], view=[0, 0], **cols)
    writer.append(np.ones((2, 2), np.float32), ids=["b.png", "a.png"], view=[1, 1], **cols)
    store = writer.commit("k" * 64, ["x", "y"], {"backbone": "external", "layer": "given"})
    decisions = _decisions(tmp_path / "d.csv", _identity(store),
                           [("a.png", "relabel", "y"), ("a.png", "group", "g"),
                            ("b.png", "group", "g")])
    with open_store(store) as opened:
        apply_decisions(opened, str(decisions), lambda *_: None)
        labels, index = opened.full_column("labels"), opened.row_index
        assert labels.tolist() == [1, 1, 1, 1]  # a.png and its view (row 3) are now y
        assert len(set(index.group.tolist())) == 1  # both files and both views: one group


def test_a_row_kept_on_one_finding_and_dropped_on_another_counts_as_dropped(tmp_path):
    from pipeline.evaluation.decisions import apply_decisions
    from pipeline.store.feature_store import open_store

    store = _store(tmp_path / "s.h5")
    decisions = _decisions(tmp_path / "d.csv", _identity(store),
                           [("img/0001.jpg", "keep", ""), ("img/0001.jpg", "drop", ""),
                            ("img/0002.jpg", "keep", "")])
    with open_store(store) as opened:
        applied = apply_decisions(opened, str(decisions), lambda *_: None).applied
    assert applied == {"drop": 1, "relabel": 0, "group": 0, "keep": 1}
