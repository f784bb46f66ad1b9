"""`vectors`: a store's vectors and rows out as Parquet (read by pandas and DuckDB) or as .npy
with its CSV table; importing that file gives back the same store; fit-head and audit on the
imported store give what they give on the store the vectors came from."""

import json

import numpy as np
import pytest

from pipeline.store.feature_store import StoreWriter, open_store, write_store
from run_pipeline import main

pytest.importorskip("pyarrow")

QUIET = lambda *_: None  # noqa: E731


def source_store(path, n=36, dim=5, seed=0):
    """Three classes (one named like a spreadsheet formula), splits and groups."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    X = (rng.normal(size=(n, dim)) + 2.5 * labels[:, None]).astype(np.float32)
    split = np.array(["train", "train", "val", "test"])[np.arange(n) % 4]
    return write_store(path, X, labels, class_names=["zebra", "=sum(A1)", "apple"],
                       ids=[f"photos/{i:02d}.png" for i in range(n)], split=split.tolist(),
                       group=[f"g{i // 3}" for i in range(n)])


def cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip().splitlines()[-1]


def export_and_import(store, fmt, tmp_path, capsys):
    out = cli(["vectors", "--store", str(store), "--format", fmt], capsys)
    args = ["import", "--vectors", out, "--name", "again", "--cache-dir", str(tmp_path / "c")]
    if fmt == "npy":
        args += ["--table", out[:-len(".npy")] + ".csv"]
    return out, cli(args, capsys)


def assert_same_store(a, b):
    with open_store(a) as one, open_store(b) as two:
        assert one.class_names == two.class_names
        rows = np.arange(one.file["features"].shape[0])
        np.testing.assert_array_equal(one.read_rows(rows), two.read_rows(rows))
        for column in ("ids", "labels", "split", "group", "view"):
            assert one.full_column(column).tolist() == two.full_column(column).tolist(), column


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_the_round_trip_gives_identical_vectors_and_rows(tmp_path, capsys, fmt):
    store = source_store(tmp_path / "s.h5")
    out, imported = export_and_import(store, fmt, tmp_path, capsys)
    assert out.endswith(f"s.vectors.{fmt}")
    assert_same_store(store, imported)


def test_npy_table_follows_the_csv_formula_rule(tmp_path, capsys):
    store = source_store(tmp_path / "s.h5")
    out = cli(["vectors", "--store", str(store), "--format", "npy", "--out",
               str(tmp_path / "v.npy")], capsys)
    text = (tmp_path / "v.csv").read_text(encoding="utf-8")
    assert "'=sum(A1)" in text and "\n=sum" not in text and ",=sum" not in text
    assert np.load(out).shape == (36, 5)


def test_parquet_reads_in_pandas_and_duckdb(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    store = source_store(tmp_path / "s.h5")
    out = cli(["vectors", "--store", str(store)], capsys)
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["id", "label", "class", "split", "group", "vector"]
    with open_store(store) as s:
        X, y = s.load()
        assert frame["id"].tolist() == s.column("ids").tolist()
        assert frame["label"].tolist() == [s.class_names[i] for i in y]
        assert frame["class"].tolist() == y.tolist()
        np.testing.assert_array_equal(np.stack(frame["vector"].to_numpy()), X)
        counts = duckdb.sql(f"SELECT split, count(*) AS n FROM '{out}' GROUP BY split "
                            "ORDER BY split").fetchall()
        assert counts == [(name, len(s.indices(name))) for name in sorted(s.splits)]
        first = duckdb.sql(f"SELECT vector FROM '{out}' WHERE id = 'photos/07.png'").fetchall()[0]
        np.testing.assert_allclose(first[0], X[7])


def test_a_views_store_keeps_its_view_column(tmp_path, capsys):
    writer = StoreWriter(tmp_path / "v.h5", (3,), view_rows=True)
    cols = dict(ids=np.array(["a.png", "b.png"], dtype=object),
                split=np.array(["train", "val"], dtype=object),
                group=np.array(["", ""], dtype=object), stamps=np.array(["", ""], dtype=object))
    for view in (0, 1, 2):
        writer.append(np.full((2, 3), view, np.float32) + [[0], [10]], labels=[0, 1],
                      view=np.full(2, view, np.int32), **cols)
    store = writer.commit("k" * 64, ["a", "b"], {"backbone": "external", "layer": "given"})
    out, imported = export_and_import(store, "parquet", tmp_path, capsys)
    assert_same_store(store, imported)
    with open_store(imported) as again:
        assert len(again) == 2 and again.n_views == 2


def test_an_existing_file_is_not_replaced(tmp_path, capsys):
    store = source_store(tmp_path / "s.h5")
    (tmp_path / "mine.parquet").write_bytes(b"not ours")
    code = main(["vectors", "--store", str(store), "--out", str(tmp_path / "mine.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "mine.parquet" in err
    assert (tmp_path / "mine.parquet").read_bytes() == b"not ours"


def test_fit_head_and_audit_match_on_the_imported_store(tmp_path, capsys):
    from pipeline.audit.run import run_audit
    from pipeline.fit.run import fit_head

    store = source_store(tmp_path / "s.h5", n=60)
    _, imported = export_and_import(store, "parquet", tmp_path, capsys)
    results = []
    for name, path in (("source", store), ("imported", imported)):
        run = fit_head(path, {"epochs": 3, "progress": False}, out_dir=tmp_path / name,
                       echo=QUIET)
        metrics = json.loads((run / "metrics.json").read_text())
        audit = run_audit(path, {}, out_dir=tmp_path / name / "audit", echo=QUIET)
        tables = {csv.name: csv.read_text() for csv in sorted(audit.glob("*.csv"))}
        scores = {k: v for k, v in metrics.items() if not k.endswith("_seconds")}  # wall time
        results.append((scores, tables))
    assert results[0][1] and results[0][1] == results[1][1]
    assert results[0][0] and results[0][0] == results[1][0]
