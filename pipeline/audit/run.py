"""`audit`: leaks across splits, suspected wrong labels and outliers, read from cached vectors.

The audit folder (default `<store>.audit/` beside the store, where fit-head and grid-search look
for it) holds duplicates.csv, suggested_groups.csv, label_issues.csv (the credible ones),
label_candidates.csv (all cleanlab flagged), outliers.csv, summary.json and report.html. It is
written into a scratch folder beside it and renamed into place, so a reader never sees half of
it; an existing `--out` is replaced only when an audit wrote it (its `.featcache-output` marker),
and a second audit of the same folder at the same time is refused (an OS lock, as extract's).

Usage:
    from pipeline.audit.run import run_audit
    folder = run_audit("cache/flowers5-mobilenet-pooled-1a2b3c4d5e.h5")
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.evaluation.exclusions import SUGGESTED_GROUPS, audit_dir_for
from pipeline.audit.options import AuditConfig
from pipeline.audit.pairs import cut_warnings, find_pairs, identical_warning
from pipeline.audit.report import source_path
from pipeline.errors import ConfigError, DataError
from pipeline.outputs import (FolderLock, Scratch, check_replaceable, make_folder,
                              replace_own_folder, write_json, write_marker)
from pipeline.tables import write_rows
from pipeline.evaluation.splits import make_split
from pipeline.audit import cluster, groups as audit_groups, labels as label_audit, report
from pipeline.audit.engines import neighbour_engine
from pipeline.audit.passes import PassTimes
from pipeline.audit.store_graph import AuditRows, graph_findings, store_graph
from pipeline.audit.threshold import threshold_from_profile

# What an audit folder held before folders carried a marker: such a folder is still ours.
AUDIT_FILES = frozenset({"duplicates.csv", "label_issues.csv", "outliers.csv", "summary.json",
                         "report.html"})
DUPLICATE_COLUMNS = ("id_a", "id_b", "split_a", "split_b", "group_a", "group_b", "distance", "kind")
SPLIT_ORDER = {"train": 0, "": 0, "val": 1, "test": 2}


def row_splits(store, seed: int) -> tuple[np.ndarray, str]:
    """Each row's split: the store's own, else the one fit-head makes by default."""
    own = store.column("split")
    if store.splits:
        return np.where(own == "", "train", own).astype(object), "the store's own splits"
    try:
        split = make_split(store, 0.2, seed)
    except DataError:
        return own.astype(object), "none (too few rows for fit-head's default split)"
    names = np.full(len(store), "train", dtype=object)
    names[split.val] = "val"
    return names, f"fit-head's default split ({split.how}), since the store has none"


def _file_digest(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def duplicate_table(pairs: np.ndarray, ids, splits, groups, digests, data_root) -> list[dict]:
    """One dict per pair, leaks (across splits, then across groups) first, then by distance."""
    file_digests: dict[str, str | None] = {}

    def digest(row_id):
        if row_id not in file_digests:
            file_digests[row_id] = _file_digest(source_path(data_root, row_id))
        return file_digests[row_id]

    rows = []
    for i, j, distance in pairs.tolist():
        i, j = int(i), int(j)
        if SPLIT_ORDER.get(splits[i], 0) > SPLIT_ORDER.get(splits[j], 0):
            i, j = j, i  # the training side first
        same_file = digest(ids[i]) is not None and digest(ids[i]) == digest(ids[j])
        rows.append({"id_a": ids[i], "id_b": ids[j], "split_a": splits[i], "split_b": splits[j],
                     "group_a": groups[i], "group_b": groups[j], "distance": round(distance, 6),
                     "kind": "exact" if digests[i] == digests[j] or same_file else "near",
                     "_rows": (i, j), "_identical": digests[i] == digests[j]})
    for row in rows:
        row["cross_split"] = row["split_a"] != row["split_b"]
        row["cross_group"] = bool(row["group_a"] and row["group_b"]
                                  and row["group_a"] != row["group_b"])
    rows.sort(key=lambda r: (not r["cross_split"], not r["cross_group"], r["distance"]))
    return rows


def outlier_rows(knn_distance: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Rows whose mean distance to their k neighbours is above Tukey's far fence (Q3 + 3 IQR)."""
    score = knn_distance.mean(axis=1) if knn_distance.size else np.zeros(len(knn_distance))
    if not len(score):
        return np.zeros(0, dtype=np.int64), score, float("nan")
    q1, q3 = np.percentile(score, [25, 75])
    fence = float(q3 + 3.0 * (q3 - q1))
    rows = np.flatnonzero(score > fence)
    return rows[np.argsort(-score[rows])], score, fence


def _views_of_labelled(store, labelled: np.ndarray):
    """(vectors, labels, index into `labelled`) of the store's augmented views, or None."""
    index = store.row_index
    rows = index.views_of(labelled)
    if not len(rows):
        return None
    x = store.read_rows(rows)
    return (x.reshape(len(x), -1), store.full_column("labels")[rows],
            np.searchsorted(labelled, index.plain[rows]))


PROBE_WIDTH = 128  # PCA width of the large-store probe's vectors (the ivf engine's default)


def _probe_probabilities(store, labelled, train, groups, cfg, probe, rows, times):
    """(out-of-sample probabilities of the labelled rows, facts on the probe for summary.json).

    Up to FULL_PROBE_ROWS labelled rows: the logistic regression (or --run's model) on the
    stored vectors, all in memory. Above: a linear discriminant on the prepared vectors reduced
    by PCA, whose folds cost one pass (labels.streamed_lda_probabilities)."""
    labels = store.column("labels")
    fits = cfg.folds + (len(train) < len(labelled))
    started = time.perf_counter()
    if len(labelled) <= label_audit.FULL_PROBE_ROWS:
        x = store.read_rows(labelled).reshape(len(labelled), -1)
        probs = label_audit.out_of_sample_probabilities(
            x, labels[labelled], train, groups[labelled], cfg.folds, cfg.seed, probe,
            _views_of_labelled(store, labelled))
        facts = {"method": str(cfg.run_dir or "logistic regression (C = 0.1, standardised)"),
                 "vectors": f"the stored vectors ({x.shape[1]} values each)",
                 "vectors_mb": round(x.nbytes / 2**20, 1)}
    else:
        reduced = rows.index_rows(cfg.pca_width or PROBE_WIDTH)  # the index's, when it was
        x = reduced[labelled] if len(labelled) < len(reduced) else reduced[:]
        rows.release_index_rows()
        probs = label_audit.streamed_lda_probabilities(
            x, labels[labelled], train, groups[labelled], cfg.folds, cfg.seed, cfg.progress)
        facts = {"method": "linear discriminant analysis (pooled covariance, shrinkage "
                           f"{label_audit.LDA_SHRINKAGE:g}), each fold's model from summed "
                           f"statistics: one pass over the rows, {fits} small solves",
                 "vectors": f"the prepared vectors reduced by PCA to {x.shape[1]} components "
                            f"(above {label_audit.FULL_PROBE_ROWS:,} labelled rows)",
                 "vectors_mb": round(x.nbytes / 2**20, 1)}
    facts.update(rows=int(len(labelled)), fits=int(fits),
                 seconds=round(time.perf_counter() - started, 2))
    return probs, facts


def _label_issues(store, splits, cfg: AuditConfig, probe, rows, times) -> tuple[dict | None, str]:
    """cleanlab's ranked label issues (row indices into the store) and how they were found."""
    labels, groups = store.column("labels"), store.row_index.group
    labelled = np.flatnonzero(labels >= 0)
    if not len(labelled) or len(np.unique(labels[labelled])) < 2:
        return None, "skipped: fewer than 2 labelled classes"
    train = np.flatnonzero(splits[labelled] == "train")
    train = train if len(train) else np.arange(len(labelled))
    try:
        probs, facts = _probe_probabilities(store, labelled, train, groups, cfg, probe, rows,
                                            times)
    except DataError as exc:  # e.g. a class with fewer rows than folds
        return None, f"skipped: {exc}"
    flagged = label_audit.rank_label_issues(labels[labelled], probs)
    issues, credibility = label_audit.credible_issues(flagged, labels[labelled], probs)
    issues["rows"] = labelled[issues["rows"]]
    issues["credibility"] = credibility
    issues["probe"] = facts
    issues["candidates"] = {**flagged, "rows": labelled[flagged["rows"]]}  # cleanlab's all
    floor = credibility["confidence_floor"]
    shown = (f"{credibility['shown']} of cleanlab's {credibility['flagged_by_cleanlab']} shown: "
             f"those the probe suggests with confidence >= {floor:.3f}, where its held-out "
             f"predictions agree with the given labels {credibility['agreement_needed']:.0%} "
             "of the time" if floor is not None else
             f"none of cleanlab's {credibility['flagged_by_cleanlab']} shown: the probe's "
             f"held-out predictions (accuracy {credibility['held_out_accuracy']:.2f}) agree "
             f"with the given labels {credibility['agreement_needed']:.0%} of the time at no "
             "confidence, so its doubts are not evidence against a label")
    return issues, (f"{facts['method']} on {facts['vectors']}, {cfg.folds}-fold "
                    "cross-validated on the train rows (val/test rows: fit on all train rows); "
                    f"cleanlab find_label_issues, ranked by self-confidence; {shown}")


def _write_csv(path: Path, header, rows) -> None:
    write_rows(path, header, rows)  # the one CSV writer: formula-like cells neutralised


def run_audit(store_path, options=None, out_dir=None, echo=print,
              probe=None) -> Path:
    """Audits a store and writes the audit folder.

    Args:
        store_path: a feature store made by extract (or `write_store`).
        options: an `AuditConfig`, or a mapping of any of its options (the rest take the
            CLI's defaults; a `config` key names a TOML file whose [audit] is read).
        out_dir: the audit folder to write; overrides the `out` option.
        echo: where progress lines go.
        probe: an unfitted scikit-learn classifier whose cross-validated probabilities rank the
            label issues (default: logistic regression on standardised vectors).

    Returns:
        The audit folder's path.

    Raises:
        ConfigError: a bad option. StoreError: the store cannot be read. OutputError: the
            audit folder is a file, a folder holding files no audit wrote, read-only, or being
            written by another audit now.
    """
    from pipeline.store.feature_store import open_store  # lazy: h5py; the CLI starts without it

    cfg = AuditConfig.from_mapping(options)
    started = time.perf_counter()
    with open_store(store_path) as store:
        _check_scale(store, cfg, probe)
        default = audit_dir_for(store.path)
        given = out_dir or cfg.out
        # Suggested: a folder inside the one given, or beside what was given when it is a file.
        base = Path(given) if given else None
        if base is not None and base.exists() and not base.is_dir():
            base = base.parent
        example = str(base / default.name) if base else f"DIR/{default.name}"
        final = check_replaceable(Path(given or default), "audit", "--out", example,
                                  legacy_names=AUDIT_FILES)
        make_folder(final.parent, "--out")
        with FolderLock(final, "audit"), Scratch(final.parent, "audit") as scratch:
            summary = _audit_into(store, cfg, probe, final, scratch, started, echo)
        ids = store.column("ids")
    counts = summary["counts"]
    echo(f"audit of {len(ids)} rows: {counts['duplicate_pairs']} duplicate pair(s) "
         f"({counts['cross_split_pairs']} across splits, {counts['cross_group_pairs']} across "
         f"groups), {counts['label_issues']} suspected label issue(s), {counts['outliers']} "
         f"outlier(s); {summary['seconds']}s")
    grouped = summary["suggested_groups"]
    echo(f"duplicate threshold {summary['thresholds']['duplicate_distance']:g}: "
         f"{summary['thresholds']['duplicate_how']}")
    if grouped["groups"]:
        echo(f"suggested groups: {grouped['groups']} chain(s) of near-duplicates hold "
             f"{grouped['rows_in_groups']} rows ({grouped['groups_across_splits']} across "
             f"splits) in {final / 'suggested_groups.csv'}; fit-head and grid-search take them "
             "with --groups-from-audit, or copy its group column into your manifest")
    if summary["provenance"].get("weights") == "none":
        # The threshold is calibrated on pretrained vectors; random ones put most pairs close.
        echo("note: this store holds RANDOM-weight vectors (--weights none), so distances say "
             "little about the images; audit a store extracted with pretrained weights")
    return final


def _audit_into(store, cfg: AuditConfig, probe, final: Path, scratch: Path,
                started: float, echo=print) -> dict:
    """Scans the store and writes the audit folder `final` (through `scratch`); its summary."""
    ids, labels = store.column("ids"), store.column("labels")
    groups = store.column("group")
    splits, split_how = row_splits(store, cfg.seed)
    data_root = store.provenance.get("data_root")
    times = PassTimes()
    rows = AuditRows(store, cfg, scratch, times)
    # One neighbour graph, reused from beside the store when these settings built it before:
    # every check below reads it (the adaptive threshold its profile).
    graph, graph_how = store_graph(store, cfg, rows, echo, times)
    threshold = threshold_from_profile(graph.profile, cfg.threshold, labels=labels)
    with times("pairs and groups"):
        found = find_pairs(graph, threshold.value, rows.digests, splits, groups, rows.prepared)
        dupes = duplicate_table(found.listed, ids, splits, groups, rows.digests, data_root)
        suggested, sizes = audit_groups.suggested_groups(len(ids), found.links,
                                                         store.row_index.group[:len(ids)])
    with times("label probe"):
        issues, label_note = _label_issues(store, splits, cfg, probe, rows, times)
    with times("outliers, uniqueness, coverage, map"):
        outliers, outlier_score, fence = outlier_rows(graph.distances[:, :cfg.neighbours])
        findings, unique_rows, map_html = graph_findings(store, cfg, graph, splits, rows.mean,
                                                         data_root, graph_how)
    summary = _summary(store, cfg, dupes, found, graph, issues, outliers, fence, splits,
                       split_how, label_note, threshold)
    summary.update(findings)
    for line in summary["warnings"]:
        echo(line)
    summary["suggested_groups"] = audit_groups.group_summary(suggested, sizes, splits)
    tmp = scratch / "audit"
    tmp.mkdir()
    _write_csv(tmp / "duplicates.csv", DUPLICATE_COLUMNS,
               [[r[c] for c in DUPLICATE_COLUMNS] for r in dupes])
    audit_groups.write_suggested_groups(tmp / SUGGESTED_GROUPS, ids, suggested, sizes)
    names = store.class_names

    def listed(found):
        return [] if found is None else [
            [ids[r], splits[r], names[labels[r]], names[s], round(float(q), 6)]
            for r, s, q in zip(found["rows"], found["suggested"], found["score"])]

    issue_rows = listed(issues)
    columns = ("id", "split", "given_label", "suggested_label", "score")
    _write_csv(tmp / "label_issues.csv", columns, issue_rows)  # the credible ones
    _write_csv(tmp / "label_candidates.csv", columns,  # every row cleanlab flagged, ranked
               listed(None if issues is None else issues["candidates"]))
    _write_csv(tmp / "outliers.csv", ("id", "split", "score"),
               [[ids[r], splits[r], round(float(outlier_score[r]), 6)] for r in outliers])
    _write_csv(tmp / "uniqueness.csv", ("id", "split", "uniqueness"), unique_rows)
    with times("report"):
        report.write_report(tmp / "report.html", summary, dupes, issue_rows,
                            [(ids[r], splits[r], float(outlier_score[r])) for r in outliers],
                            graph.nearest, data_root, cfg.shown,
                            group_of=_group_of(dupes, ids, suggested), extra_html=map_html)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["seconds_per_pass"] = times.as_dict()
    write_json(tmp / "summary.json", summary)
    write_marker(tmp, "audit", store=str(store.path.resolve()),
                 created_at=summary["created_at"])
    replace_own_folder(tmp, final, scratch)  # the scratch (and any failed tmp) goes on exit
    return summary


def _check_scale(store, cfg: AuditConfig, probe) -> None:
    """Refusals that depend on the store's size, before any pass over it."""
    n, dim = len(store), int(np.prod(store.feature_shape))
    cluster.check(cfg, n, dim, neighbour_engine(cfg.neighbours_engine).resolve(n).name == "exact")
    labelled = int((store.column("labels") >= 0).sum())
    if probe is not None and labelled > label_audit.FULL_PROBE_ROWS:
        raise ConfigError(f"--run's model is cross-validated on the stored vectors, all in "
                          f"memory; this store has {labelled:,} labelled rows (more than "
                          f"{label_audit.FULL_PROBE_ROWS:,}), whose label issues come from the "
                          "audit's own probe on reduced vectors: leave out --run")


def _group_of(dupes, ids, suggested) -> dict:
    """Each listed pair's rows' suggested group (what the report groups leaks by)."""
    rows = {r for d in dupes for r in d["_rows"]}
    return {ids[r]: suggested[r] for r in rows}


def _summary(store, cfg: AuditConfig, dupes, found, graph, issues, outliers, fence, splits,
             split_how, label_note, threshold) -> dict:
    nearest = graph.nearest
    counts, edges = np.histogram(nearest, bins=40, range=(0.0, max(1.0, float(
        nearest.max()) if len(nearest) else 1.0)))
    labels = store.column("labels")
    tally = found.counts
    # Identical vectors, plus listed pairs of byte-identical files whose vectors differ.
    exact = tally["identical"] + sum(r["kind"] == "exact" and not r["_identical"] for r in dupes)
    identical = identical_warning(found.identical, len(store))
    ids = store.column("ids")
    return {
        "store": str(store.path.resolve()), "store_key": store.key, "n_rows": len(store),
        # The vector key says which vectors; the fingerprint says which files they came from.
        "source_fingerprint": store.provenance.get("source_fingerprint"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": {
            "duplicate_pairs": tally["pairs"],
            "exact_pairs": exact,
            "near_pairs": tally["pairs"] - exact,
            "cross_split_pairs": tally["cross_split"],
            "cross_group_pairs": tally["cross_group"],
            "label_issues": 0 if issues is None else len(issues["rows"]),
            "outliers": len(outliers),
        },
        "cross_split_pairs": tally["cross_split"],
        "cross_group_pairs": tally["cross_group"],
        "pairs_truncated": bool(found.cut),
        "pairs_listed": len(dupes),
        "pairs_cut": found.cut,
        "identical_vectors": {**{k: v for k, v in found.identical.items() if k != "largest_rows"},
                              "largest_ids": [ids[r] for r in found.identical["largest_rows"]],
                              "warning": identical},
        "warnings": ([identical] if identical else []) + cut_warnings(found.cut, tally),
        "thresholds": {
            "duplicate_distance": threshold.value,
            "duplicate_how": threshold.how,
            "duplicate_adaptive": threshold.adaptive,
            "duplicate_rule": threshold.facts,
            "distance": "cosine distance (1 - cos) on mean-centred vectors"
                        + (", each L2-normalised first" if cfg.l2_normalize else ""),
            "outlier_score": f"mean cosine distance to the {min(cfg.neighbours, graph.k)} "
                             "nearest other rows",
            "outlier_cutoff": fence,
            "outlier_how": "Tukey's far fence over all rows' scores: Q3 + 3 x IQR",
        },
        "nearest_neighbour_distance": {
            "percentiles": {f"p{p}": float(np.percentile(nearest, p)) if len(nearest) else None
                            for p in (1, 5, 25, 50, 75, 95, 99)},
            "histogram": {"edges": edges.round(4).tolist(), "counts": counts.tolist()},
        },
        "splits": {"how": split_how, "counts": {s: int((splits == s).sum())
                                                for s in sorted(set(splits.tolist()))}},
        "class_balance": {name: int((labels == i).sum())
                          for i, name in enumerate(store.class_names)},
        "unlabelled_rows": int((labels < 0).sum()),
        "label_issues_from": label_note,
        "label_probe": None if issues is None else issues["probe"],
        "label_issue_credibility": None if issues is None else issues["credibility"],
        "provenance": store.provenance,
    }
