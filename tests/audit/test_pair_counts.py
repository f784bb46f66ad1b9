"""Honest pair counts: every pair at or under the threshold is counted, even where a row has
more near-duplicates than the neighbour graph keeps (k per row); rows with equal vectors are
duplicates whatever their centred distance says; a listing too long for duplicates.csv is cut
with the true count and a flag. Real stores written with `write_store`, audited through the
CLI; the truth is worked out here by brute force."""

import contextlib
import html
import io
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import read_csv


def _audit(tmp_path, x, labels, split, *args, group=None):
    import run_pipeline
    from pipeline.store.feature_store import write_store

    store = write_store(tmp_path / "s.h5", x, labels, class_names=["a", "b", "c"],
                        ids=[f"img/{i:05d}.jpg" for i in range(len(x))], split=split,
                        group=group)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_pipeline.main(["audit", "--store", str(store), "--map", "none", *args])
    lines = out.getvalue().strip().splitlines()
    assert code == 0, err.getvalue()
    folder = Path(lines[-1])
    return (lines, json.loads((folder / "summary.json").read_text()),
            read_csv(folder / "duplicates.csv"), folder)


def _copies_among_distinct(n_distinct=300, n_copies=30, noise=0.0, dim=64, seed=0):
    """`n_distinct` unrelated rows, then `n_copies` copies of row 0 (bit-identical, or with a
    little noise each); each row in train or test at random. Returns (x, labels, split,
    members: row 0 and its copies)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_distinct, dim))
    copies = x[0] + noise * rng.normal(size=(n_copies, dim))
    x = np.vstack([x, copies]).astype(np.float32)
    split = rng.choice(["train", "test"], len(x), p=[0.7, 0.3])
    return x, rng.integers(0, 3, len(x)), split.tolist(), [0, *range(n_distinct, len(x))]


def _truth(members, split):
    """{(i, j): whether the pair crosses the split} of every pair among `members`."""
    return {(i, j): split[i] != split[j] for a, i in enumerate(members) for j in members[a + 1:]}


@pytest.mark.parametrize("listed_one_by_one", [64, 4])  # a set of 21 rows: pairs, or sizes
def test_exact_and_near_copies_together_count_every_leak_across_splits_and_groups(
        tmp_path, monkeypatch, listed_one_by_one):
    import pipeline.audit.pairs as pairs

    monkeypatch.setattr(pairs, "SMALL_SET", listed_one_by_one)
    x, labels, split, members = _copies_among_distinct(n_copies=35, noise=0.0)
    x[-15:] += 0.02 * np.random.default_rng(1).normal(size=(15, x.shape[1]))  # 20 exact, 15 near
    group = np.random.default_rng(2).choice(["", "g0", "g1", "g2"], len(x)).tolist()
    truth = _truth(members, split)
    across_groups = sum(bool(group[i] and group[j] and group[i] != group[j]) for i, j in truth)
    lines, summary, rows, _ = _audit(tmp_path, x, labels, split, group=group)
    assert _listed(rows) == set(truth) and len(truth) == 36 * 35 // 2
    assert sum(r["kind"] == "exact" for r in rows) == summary["counts"]["exact_pairs"] == 21 * 20 // 2
    assert summary["cross_split_pairs"] == sum(truth.values())
    assert summary["cross_group_pairs"] == across_groups > 0
    assert summary["pairs_truncated"] is False


def _listed(rows):
    return {tuple(sorted(int(r[c].split("/")[1][:5]) for c in ("id_a", "id_b"))) for r in rows}


def test_thirty_exact_copies_count_every_pair_and_every_leak(tmp_path):
    x, labels, split, members = _copies_among_distinct()
    truth = _truth(members, split)
    lines, summary, rows, _ = _audit(tmp_path, x, labels, split)
    assert len(truth) == 465
    assert _listed(rows) == set(truth) and {r["kind"] for r in rows} == {"exact"}
    assert summary["counts"]["duplicate_pairs"] == summary["counts"]["exact_pairs"] == 465
    assert summary["cross_split_pairs"] == sum(truth.values()) > 50
    assert summary["pairs_truncated"] is False


@pytest.mark.parametrize("engine", ["exact", "hnsw"])
def test_near_copies_beyond_the_graphs_k_are_found_by_a_wider_search(tmp_path, engine):
    x, labels, split, members = _copies_among_distinct(noise=0.02)
    truth = _truth(members, split)
    lines, summary, rows, _ = _audit(tmp_path, x, labels, split, "--neighbours-engine", engine)
    assert _listed(rows) == set(truth) and {r["kind"] for r in rows} == {"near"}
    assert summary["counts"]["duplicate_pairs"] == 465
    assert summary["cross_split_pairs"] == sum(truth.values())
    assert summary["pairs_truncated"] is False
    assert summary["identical_vectors"]["rows"] == 0
    assert not any(line.startswith("warning:") for line in lines)


def test_ten_thousand_copies_cap_the_listing_with_a_true_count(tmp_path):
    from pipeline.audit.neighbours import prepare_vectors

    x, labels, split, members = _copies_among_distinct(n_distinct=200, n_copies=9_999)
    lines, summary, rows, folder = _audit(tmp_path, x, labels * 0, split)  # one class: no probe
    unique = prepare_vectors(x)[0][:200]  # the 200 distinct rows, row 0 standing for its copies
    d = 1.0 - unique @ unique.T
    assert (d[np.triu_indices(200, 1)] > summary["thresholds"]["duplicate_distance"]).all()
    in_train = sum(split[m] == "train" for m in members)
    total, crossing = 10_000 * 9_999 // 2, in_train * (10_000 - in_train)  # a clique's pairs
    assert summary["counts"]["duplicate_pairs"] == total
    assert summary["cross_split_pairs"] == crossing
    assert summary["pairs_truncated"] is True
    from pipeline.audit.pairs import LISTED_PAIRS

    listed = _listed(rows)
    assert len(rows) == len(listed) == LISTED_PAIRS < crossing
    assert {i for pair in listed for i in pair} <= set(members)
    assert summary["pairs_listed"] == LISTED_PAIRS
    crossing = [r["split_a"] != r["split_b"] for r in rows]
    assert all(crossing)  # leaks are listed first, and there are more than the listing holds
    said = [line for line in lines if "duplicates.csv lists" in line]
    assert len(said) == 1 and f"{total:,}" in said[0]
    assert summary["suggested_groups"]["largest"] == 10_000


def test_rows_beyond_the_wider_searchs_budget_are_counted_as_cut(tmp_path, monkeypatch):
    import pipeline.audit.pairs as pairs

    monkeypatch.setattr(pairs, "WIDER_SEARCH_ROW_PAIRS", 0)
    x, labels, split, members = _copies_among_distinct(noise=0.02)
    lines, summary, rows, _ = _audit(tmp_path, x, labels, split)
    assert _listed(rows) < set(_truth(members, split))  # the graph's k per row only
    assert summary["pairs_truncated"] is True
    assert summary["pairs_cut"]["rows_cut_at_k"] == 31
    assert summary["counts"]["duplicate_pairs"] == len(rows)
    said = [line for line in lines if line.startswith("warning:") and "at least" in line]
    assert len(said) == 1 and "31 row(s)" in said[0]


def test_a_store_of_identical_vectors_is_all_duplicates_and_warned_about(tmp_path):
    x = np.ones((40, 16), dtype=np.float32)
    labels, split = np.arange(40) % 3, ["train"] * 30 + ["test"] * 10
    lines, summary, rows, folder = _audit(tmp_path, x, labels, split)
    assert len(rows) == summary["counts"]["exact_pairs"] == 40 * 39 // 2
    assert summary["cross_split_pairs"] == 30 * 10
    assert summary["suggested_groups"]["groups"] == 1
    assert summary["suggested_groups"]["largest"] == 40
    warned = [line for line in lines if line.startswith("warning:")]
    assert len(warned) == 1 and "40 of 40 rows" in warned[0] and "decoder" in warned[0]
    assert summary["identical_vectors"]["largest"] == 40
    assert summary["identical_vectors"]["warning"] == warned[0]
    assert html.escape(warned[0].removeprefix("warning: ")) in (folder / "report.html").read_text()
    assert lines[-1] == str(folder)
