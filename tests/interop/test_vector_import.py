"""`import`: vectors made elsewhere (.npy/.npz with a CSV table, Parquet, HDF5) become a store
that fit-head, grid-search and audit take as they are; bad input is one error line naming the
row or column, and leaves no store behind."""

import csv

import h5py
import numpy as np
import pytest

from pipeline.store.feature_store import open_store
from run_pipeline import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def vectors_and_table(tmp_path, n=24, dim=6, seed=0, rows=None):
    """Random vectors two classes apart, saved as .npy, and their CSV table in row order."""
    rng = np.random.default_rng(seed)
    labels = np.array(["cat", "dog"])[np.arange(n) % 2]
    X = (rng.normal(size=(n, dim)) + 3 * (labels == "dog")[:, None]).astype(np.float32)
    split = np.array(["train", "train", "val"])[np.arange(n) % 3]
    rows = rows if rows is not None else [
        {"id": f"img{i:03d}.jpg", "label": labels[i], "split": split[i], "group": f"g{i // 2}"}
        for i in range(n)]
    np.save(tmp_path / "vectors.npy", X)
    table = tmp_path / "table.csv"
    with table.open("w", newline="", encoding="utf-8") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    return X, rows, tmp_path / "vectors.npy", table


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def stores_in(folder):
    return sorted(p.name for p in folder.glob("*.h5*"))


def test_npy_and_table_import_into_a_store_with_every_row_and_column(tmp_path, capsys):
    X, rows, npy, table = vectors_and_table(tmp_path)
    code, out, err = run_cli(["import", "--vectors", str(npy), "--table", str(table),
                              "--name", "pets", "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 0, err
    with open_store(out[-1]) as store:
        assert store.class_names == ["cat", "dog"]
        np.testing.assert_array_equal(store.load()[0], X)
        assert store.column("ids").tolist() == [r["id"] for r in rows]
        assert [store.class_names[i] for i in store.column("labels")] == [r["label"] for r in rows]
        assert store.column("split").tolist() == [r["split"] for r in rows]
        assert store.column("group").tolist() == [r["group"] for r in rows]
        assert "extract_options" not in store.provenance  # no backbone behind these vectors
        assert store.provenance["imported"]["name"] == "pets"


def test_the_identity_is_the_content_and_the_name(tmp_path, capsys):
    _, _, npy, table = vectors_and_table(tmp_path)
    cache = str(tmp_path / "cache")
    args = ["import", "--vectors", str(npy), "--table", str(table), "--cache-dir", cache]
    first = run_cli(args + ["--name", "pets"], capsys)[1][-1]
    again = run_cli(args + ["--name", "pets"], capsys)[1][-1]
    other_name = run_cli(args + ["--name", "other"], capsys)[1][-1]
    X = np.load(npy)
    X[0, 0] += 1.0
    np.save(npy, X)
    other_content = run_cli(args + ["--name", "pets"], capsys)[1][-1]
    assert first == again
    keys = {open_store(p).key for p in (first, other_name, other_content)}
    assert len(keys) == 3


def parquet_file(path, X, ids, labels, vector_type=None, **columns):
    dim = X.shape[1]
    vector_type = vector_type or pa.list_(pa.float32(), dim)
    table = pa.table({"id": ids, "vector": pa.array(list(X), type=vector_type),
                      "label": labels, **columns})
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("vector_type", [None, pa.list_(pa.float32())], ids=["fixed", "list"])
def test_parquet_imports_fixed_size_and_plain_lists(tmp_path, capsys, vector_type):
    X = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    ids = [f"r{i}" for i in range(10)]
    labels = ["a", "b"] * 5
    path = parquet_file(tmp_path / "v.parquet", X, ids, labels, vector_type,
                        split=["train"] * 6 + ["test"] * 4)
    code, out, err = run_cli(["import", "--vectors", str(path), "--name", "p",
                              "--cache-dir", str(tmp_path)], capsys)
    assert code == 0, err
    with open_store(out[-1]) as store:
        np.testing.assert_array_equal(store.load()[0], X)
        assert store.column("ids").tolist() == ids
        assert store.splits == ["train", "test"]


def test_parquet_columns_named_by_flags(tmp_path, capsys):
    X = np.ones((4, 3), dtype=np.float32) * np.arange(4)[:, None]
    table = pa.table({"key": ["a", "b", "c", "d"], "emb": pa.array(list(X)),
                      "cls": ["x", "y", "x", "y"]})
    pq.write_table(table, tmp_path / "v.parquet")
    code, out, err = run_cli(["import", "--vectors", str(tmp_path / "v.parquet"), "--name", "p",
                              "--id-column", "key", "--vector-column", "emb",
                              "--label-column", "cls", "--cache-dir", str(tmp_path)], capsys)
    assert code == 0, err
    with open_store(out[-1]) as store:
        assert store.class_names == ["x", "y"]
        np.testing.assert_array_equal(store.load()[0], X)


def test_hdf5_dataset_imports(tmp_path, capsys):
    X, rows, _, table = vectors_and_table(tmp_path, n=6)
    with h5py.File(tmp_path / "emb.h5", "w") as fh:
        fh.create_dataset("model/embeddings", data=X)
    code, out, err = run_cli(["import", "--vectors", str(tmp_path / "emb.h5"), "--dataset",
                              "model/embeddings", "--table", str(table), "--name", "h",
                              "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 0, err
    with open_store(out[-1]) as store:
        np.testing.assert_array_equal(store.load()[0], X)


def test_npz_with_one_array_imports(tmp_path, capsys):
    X, _, _, table = vectors_and_table(tmp_path, n=6)
    np.savez(tmp_path / "v.npz", embeddings=X)
    code, out, err = run_cli(["import", "--vectors", str(tmp_path / "v.npz"), "--table",
                              str(table), "--name", "z", "--cache-dir", str(tmp_path / "c")],
                             capsys)
    assert code == 0, err
    with open_store(out[-1]) as store:
        np.testing.assert_array_equal(store.load()[0], X)


def bad_npy(tmp_path, problem):
    X, rows, npy, table = vectors_and_table(tmp_path, n=8)
    if problem == "nan":
        X[5, 2] = np.nan
        np.save(npy, X)
    elif problem == "count":
        np.save(npy, X[:7])
    elif problem == "duplicate":
        rows[6]["id"] = rows[1]["id"]
        vectors_and_table(tmp_path, n=8, rows=rows)
    elif problem == "blank_labels":
        vectors_and_table(tmp_path, n=8, rows=[{**r, "label": " "} for r in rows])
    elif problem == "bad_split":
        rows[3]["split"] = "training"
        vectors_and_table(tmp_path, n=8, rows=rows)
    return ["--vectors", str(npy), "--table", str(table)]


@pytest.mark.parametrize("problem, words", [
    ("nan", ["row 5", "NaN"]),
    ("count", ["7 vector", "8 row"]),
    ("duplicate", ["img001.jpg", "rows 1 and 6"]),
    ("blank_labels", ["label", "blank"]),
    ("bad_split", ["row 3", "training"]),
])
def test_bad_npy_input_is_one_error_line_and_no_store(tmp_path, capsys, problem, words):
    args = bad_npy(tmp_path, problem)
    cache = tmp_path / "cache"
    code, out, err = run_cli(["import", *args, "--name", "n", "--cache-dir", str(cache)], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    assert not cache.exists() or stores_in(cache) == []


def test_ragged_parquet_vectors_name_the_row(tmp_path, capsys):
    vectors = pa.array([[0.0, 1.0], [1.0, 0.0], [1.0, 2.0, 3.0]], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": ["a", "b", "c"], "vector": vectors,
                             "label": ["x", "y", "x"]}), tmp_path / "v.parquet")
    code, out, err = run_cli(["import", "--vectors", str(tmp_path / "v.parquet"), "--name", "r",
                              "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "row 2" in err and "3 values" in err and "2" in err, err
    assert not (tmp_path / "cache").exists() or stores_in(tmp_path / "cache") == []


def test_missing_table_and_unknown_kind_are_refused(tmp_path, capsys):
    _, _, npy, _ = vectors_and_table(tmp_path, n=4)
    code, _, err = run_cli(["import", "--vectors", str(npy), "--name", "n"], capsys)
    assert code == 2 and "--table" in err and err.count("\n") == 1
    (tmp_path / "v.txt").write_text("1 2 3")
    code, _, err = run_cli(["import", "--vectors", str(tmp_path / "v.txt"), "--name", "n"], capsys)
    assert code == 2 and ".parquet" in err and err.count("\n") == 1


def test_fit_head_grid_search_and_audit_take_an_imported_store(tmp_path, capsys):
    from pipeline.audit.run import run_audit
    from pipeline.fit.run import fit_head
    from pipeline.search.run import run_grid_search

    _, _, npy, table = vectors_and_table(tmp_path, n=30)
    code, out, err = run_cli(["import", "--vectors", str(npy), "--table", str(table),
                              "--name", "pets", "--cache-dir", str(tmp_path / "c")], capsys)
    store = out[-1]
    quiet = lambda *_: None  # noqa: E731
    run = fit_head(store, {"epochs": 2, "progress": False}, out_dir=tmp_path / "runs", echo=quiet)
    assert (run / "metrics.json").is_file()
    grid = tmp_path / "grid.toml"
    grid.write_text('[models.logistic_regression]\npreprocess = ["standardize"]\n'
                    'params = { C = [1.0] }\n', encoding="utf-8")
    search = run_grid_search(store, {"cv": 2, "n_jobs": 1, "progress": False, "grid": str(grid)},
                             out_dir=tmp_path / "runs", echo=quiet)
    assert (search / "leaderboard.csv").is_file()
    audit = run_audit(store, {}, out_dir=tmp_path / "audit", echo=quiet)
    assert (audit / "summary.json").is_file()
    # predict has no backbone to run on new files: one line saying how to score vectors instead
    code, _, err = run_cli(["predict", "--run", str(run), "--data", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "imported" in err and "vectors" in err, err


def test_npy_read_in_blocks_equals_numpy_and_a_cut_file_is_refused(tmp_path, capsys):
    from pipeline.interop.vector_files import NpyRows

    X = np.arange(3 * 5 * 2, dtype=np.float64).reshape(3, 5, 2)
    np.save(tmp_path / "a.npy", X)
    rows = NpyRows(tmp_path / "a.npy")
    assert rows.shape == (3, 5, 2) and rows.ndim == 3
    np.testing.assert_array_equal(rows[1:3], X[1:3])
    _, _, npy, table = vectors_and_table(tmp_path, n=8)
    data = npy.read_bytes()
    npy.write_bytes(data[:-10])
    code, _, err = run_cli(["import", "--vectors", str(npy), "--table", str(table), "--name",
                            "n", "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 2 and "cut short" in err and err.count("\n") == 1, err
    assert stores_in(tmp_path / "cache") == []


def test_info_says_where_imported_vectors_came_from(tmp_path, capsys):
    _, _, npy, table = vectors_and_table(tmp_path, n=6)
    code, out, err = run_cli(["import", "--vectors", str(npy), "--table", str(table), "--name",
                              "pets", "--cache-dir", str(tmp_path / "c")], capsys)
    code, lines, err = run_cli(["info", out[-1]], capsys)
    text = "\n".join(lines)
    assert code == 0 and "imported     pets from vectors.npy" in text, text
    assert "reader" not in text and "weights" not in text  # no backbone, reader or weights


def test_a_table_beside_parquet_is_refused(tmp_path, capsys):
    X = np.zeros((2, 2), dtype=np.float32)
    path = parquet_file(tmp_path / "v.parquet", X, ["a", "b"], ["x", "y"])
    _, _, _, table = vectors_and_table(tmp_path, n=2)
    code, _, err = run_cli(["import", "--vectors", str(path), "--table", str(table), "--name",
                            "p", "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 2 and "--table" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("broken", ["latin1_table", "not_hdf5", "not_npz", "bom_table"])
def test_unreadable_inputs_are_one_error_line(tmp_path, capsys, broken):
    X, rows, npy, table = vectors_and_table(tmp_path, n=4)
    args = ["--vectors", str(npy), "--table", str(table)]
    if broken == "latin1_table":
        table.write_bytes(table.read_bytes().replace(b"img000", "imgé".encode("latin-1")))
    elif broken == "bom_table":  # what a spreadsheet saves as "CSV UTF-8": it imports
        table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    else:
        fake = tmp_path / ("v.h5" if broken == "not_hdf5" else "v.npz")
        fake.write_bytes(b"these are not vectors")
        args = ["--vectors", str(fake), "--dataset", "x", "--table", str(table)]
    code, out, err = run_cli(["import", *args, "--name", "n", "--cache-dir",
                              str(tmp_path / "c")], capsys)
    if broken == "bom_table":
        assert code == 0, err
        with open_store(out[-1]) as store:
            assert store.column("ids")[0] == "img000.jpg"
        return
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert ("UTF-8" in err) if broken == "latin1_table" else ("v." in err), err


def test_a_damaged_imported_store_says_how_to_make_it_again(tmp_path, capsys):
    _, _, npy, table = vectors_and_table(tmp_path, n=6)
    args = ["import", "--vectors", str(npy), "--table", str(table), "--name", "pets",
            "--cache-dir", str(tmp_path / "c")]
    store = run_cli(args, capsys)[1][-1]
    with h5py.File(store, "r+") as fh:
        del fh["group"]
    code, _, err = run_cli(["info", store], capsys)
    assert code == 2 and "remove" in err and "import the vectors again" in err, err
