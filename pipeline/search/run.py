"""Stage two, comparison: every model family cross-validated on one store, one leaderboard.

The search reads the store once, keeps the store's test split (or a held-out one made once
with a fixed seed) away from every fit, cross-validates each candidate with the folds shared
with fit-head (`splits.cv_folds`: stratified, group-aware when the store has groups), refits
the top entries on all search rows and scores them once on the test split. What it fits on
(rows, folds, groups, views) is read once from the store by `job.py`.

Usage:
    run_dir = run_grid_search("cache/flowers5-mobilenet-pooled-d23409c842.h5", {"cv": 5})
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, DataError, StoreError
from pipeline.outputs import Scratch, check_writable_folder, publish_new_folder, write_marker
from pipeline.search.job import SearchJob, read_job
from pipeline.search.options import SearchConfig
from pipeline.store.feature_store import open_store
from pipeline.search.models import check_candidates, load_grid
from pipeline.plugins import load_plugins
from pipeline.config import write_toml
from pipeline.search import io as search_io, report as search_report
from pipeline.search.backends import joblib_backend, streams_results
from pipeline.search.budget import CURVE_FITS, CostModel, Schedule
from pipeline.search.checks import fold_score_warnings
from pipeline.search.warm_start import remember, warm_key, warm_start
from pipeline.evaluation.curves import learning_curve, write_learning_curve


@dataclass
class Candidate:
    """One parameter combination of one grid entry, with its fold results."""

    index: int  # place in the grid's own order: breaks leaderboard ties (report.rank)
    entry: object  # search_models.GridEntry
    params: dict
    scores: list = field(default_factory=list)
    fit_times: list = field(default_factory=list)
    score_times: list = field(default_factory=list)
    notes: set = field(default_factory=set)
    status: str = "pending"  # done | skipped (time budget) | failed: ...
    test_score: float | None = None

    @property
    def cv_mean(self) -> float:
        return float(np.mean(self.scores)) if self.status == "done" else float("nan")

    @property
    def cv_std(self) -> float:
        return float(np.std(self.scores)) if self.status == "done" else float("nan")

    @property
    def fit_seconds(self) -> float:
        return float(np.mean(self.fit_times)) if self.fit_times else float("nan")


def _fit_and_score(pipeline, params, X, y, train, val, scoring, groups, warm=None):
    """One fit on a training fold and one score on its validation fold (runs in a worker).
    `warm` (a `warm_start.warm_key`) lets a logistic regression start from the nearest C
    this worker solved on the same rows."""
    from sklearn.base import clone
    from sklearn.metrics import get_scorer

    from pipeline.search.keras_estimator import fit_routing_groups  # lazy: scikit-learn

    est = clone(pipeline).set_params(**params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        try:
            if warm is not None:
                warm_start(est, warm)
            fit_routing_groups(est, X[train], y[train], groups[train])
            if warm is not None:
                remember(est, warm)
            fit_s = time.perf_counter() - started
            started = time.perf_counter()
            score = float(get_scorer(scoring)(est, X[val], y[val]))
            score_s = time.perf_counter() - started
        except Exception as exc:  # a candidate that cannot fit or score is reported, not fatal
            # (e.g. k-NN asking for more neighbours than a small fold has)
            return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    notes = sorted({w.category.__name__ for w in caught
                    if w.category.__name__ in ("ConvergenceWarning", "FitFailedWarning")})
    return {"score": score, "fit_s": fit_s, "score_s": score_s, "notes": notes}


def _refit(pipeline, params, X, y, train, test, scoring, groups):
    """Fits on all search rows and scores once on the test rows; returns the fitted model."""
    from sklearn.base import clone
    from sklearn.metrics import get_scorer

    from pipeline.search.keras_estimator import fit_routing_groups  # lazy: scikit-learn

    est = clone(pipeline).set_params(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_routing_groups(est, X[train], y[train], groups[train])
    score = float(get_scorer(scoring)(est, X[test], y[test])) if len(test) else None
    return est, score


def _run_dir_name(store_path: Path) -> str:
    return f"{store_path.stem}-search-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_grid_search(store_path, options=None, out_dir=None, echo=print) -> Path:
    """Runs the comparison and writes a run folder.

    Args:
        store_path: a feature store made by extract (or `feature_store.write_store`).
        options: a `SearchConfig`, or a mapping of any of its options (the rest take the
            CLI's defaults; a `config` key names a TOML file whose [grid_search] is read).
        out_dir: folder of run folders (default: the `out` option, i.e. cache/runs).
        echo: where the leaderboard and the summary lines go.

    Returns:
        The run folder: leaderboard.csv/.png, cv_results.csv, folds.json, run.json, the best
        model (best_model.skops [+ .keras]) and its sidecar best_model.json.

    Raises:
        ConfigError: bad options or grid. DataError: too few rows, classes or groups.
        StoreError: the store cannot be read. OutputError: `--out` cannot be a writable
            folder (checked before any work).
    """
    cfg = SearchConfig.from_mapping(options)
    store_path = Path(store_path).resolve()
    out_dir = check_writable_folder(out_dir or cfg.out, "--out")  # before any work
    load_plugins(cfg.plugin)  # before the grid is read: a family may be a plugin's
    entries = load_grid(cfg.grid_file)
    if cfg.model_names:
        wanted = cfg.model_names
        missing = [m for m in wanted if m not in {e.name for e in entries}]
        if missing:
            raise ConfigError(f"models {', '.join(missing)} are not in the grid; the grid has: "
                              f"{', '.join(e.name for e in entries)}")
        entries = [e for e in entries if e.name in wanted]

    with open_store(store_path) as store:
        job, features = read_job(store, cfg, store_path, entries, echo)
    check_candidates(entries, min(len(t) for t, _ in job.folds), features.shape[1], cfg.seed)

    # The run folder and the scratch copy of the vectors are written under --out (the scratch
    # of a killed run is removed by the next one) and the run folder is published at the end.
    with Scratch(out_dir, "grid-search") as scratch:
        run_dir = scratch / "run"
        run_dir.mkdir()
        # Features are read once; workers get them as a memory map of one file, not copies.
        job.features = scratch / "features.npy"
        np.save(job.features, features)
        del features
        try:
            _search(job, run_dir, echo)
        except DataError as exc:
            if (run_dir / "leaderboard.csv").exists():  # kept: the error points to it
                published = publish_new_folder(run_dir, out_dir, _run_dir_name(store_path))
                raise DataError(str(exc).replace(str(run_dir), str(published))) from None
            raise
        write_marker(run_dir, "grid-search", store=str(store_path))
        return publish_new_folder(run_dir, out_dir, _run_dir_name(store_path))


def _search(job: SearchJob, run_dir: Path, echo):
    """The search proper, written into `run_dir` (a scratch folder until published)."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    cfg, folds, groups = job.cfg, job.folds, job.groups
    search_io.write_run_json(run_dir, job.meta)
    write_toml(run_dir / "config.toml", "grid_search",
               {**cfg.as_dict(), "grid": cfg.grid_file, "store": str(job.store_path)})
    search_report.write_folds(run_dir, folds, job.test_rows, job.test_how, job.table)

    X = np.load(job.features, mmap_mode="r")
    y = job.labels
    n_train = min(len(train) for train, _ in folds)
    # Candidate.index is the grid's own order (entries as listed, then their parameter
    # combinations): the leaderboard's tie rule. They run cheapest first (budget.py).
    candidates = [Candidate(i, entry, params) for i, (entry, params) in enumerate(
        (entry, params) for entry in job.entries
        for params in entry.candidates(n_train, X.shape[1]))]
    pipes = {e.name: e.build(n_train, X.shape[1], cfg.seed) for e in job.entries}
    budget = float(cfg.time_budget or 0)
    started = time.monotonic()
    n_workers = _n_jobs(cfg)
    # After the search: the top_k refits on all search rows, n_workers at a time, in fits.
    final_factor = (-(-min(cfg.top_k, len(candidates)) // n_workers)
                    * len(job.search_rows) / n_train)
    schedule = Schedule(candidates, CostModel(n_train, X.shape[1], pipes), budget,
                        n_workers, len(folds), final_factor, started=started)

    def tasks():
        for cand in schedule:  # the candidates it leaves stay "pending" -> skipped
            cand.status = "running"
            for fold, (train, val) in enumerate(folds):
                rows = job.training(train)
                yield delayed(_fit_and_score)(pipes[cand.entry.name], cand.params, X, y,
                                              rows, val, cfg.scoring, groups,
                                              warm_key(cand.entry.name, cand.params, rows)
                                              ), cand, fold

    n_fits = len(candidates) * len(folds)
    grouped = "group-aware " if job.index.has_groups else ""
    echo(f"grid-search: {len(candidates)} candidates x {len(folds)} folds = {n_fits} fits "
         f"on {len(job.search_rows)} rows ({X.shape[1]} features, "
         f"{len(job.meta['class_names'])} classes); test: {job.test_how}; folds: {grouped}"
         f"stratified, {len(folds)}-fold")
    with joblib_backend(cfg.backend, X, y):  # this machine, or a Ray/Dask cluster
        results = _run_tasks(tasks(), cfg, n_fits, tqdm, schedule.finished)
    for cand, fold, res in results:
        if "error" in res:
            cand.status = f"failed: {res['error']}"
            continue
        cand.scores.append(res["score"])
        cand.fit_times.append(res["fit_s"])
        cand.score_times.append(res["score_s"])
        cand.notes.update(res["notes"])
    for cand in candidates:
        if cand.status == "running":
            cand.status = "done" if len(cand.scores) == len(folds) else "failed: a fold failed"
        elif cand.status == "pending":
            cand.status = "skipped (time budget)"
    ranked = search_report.rank(candidates)
    if ranked[0].status != "done":
        search_report.write_tables(run_dir, ranked, len(folds), cfg.scoring)
        raise DataError(f"no candidate finished: every fit failed (first: "
                        f"{ranked[0].status}); see {run_dir / 'leaderboard.csv'}")
    top = [c for c in ranked if c.status == "done"][:cfg.top_k]
    refits = Parallel(n_jobs=min(_n_jobs(cfg), len(top)))(
        delayed(_refit)(pipes[c.entry.name], c.params, X, y, job.training(job.search_rows),
                        job.test_rows, cfg.scoring, groups) for c in top)
    for cand, (_, score) in zip(top, refits):
        cand.test_score = score
    best_model = refits[0][0]

    # The curve is an extra: drawn only when its fits are predicted to end within the budget.
    best_fit_s = ranked[0].fit_seconds + float(np.mean(ranked[0].score_times))
    draw_curve = cfg.learning_curve and best_fit_s * CURVE_FITS <= schedule.time_left()
    if cfg.learning_curve and not draw_curve:
        echo(f"learning curve skipped: its fits would end past the time budget of "
             f"{budget:g}s")
    curve = learning_curve(  # the best candidate on shares of the first fold's training rows
        lambda rows: _fit_and_score(pipes[ranked[0].entry.name], ranked[0].params, X, y,
                                    job.training(rows), folds[0][1], cfg.scoring,
                                    groups).get("score", float("nan")),
        folds[0][0], y, seed=cfg.seed, metric=cfg.scoring) if draw_curve else None

    search_report.write_tables(run_dir, ranked, len(folds), cfg.scoring)
    search_report.plot_leaderboard(run_dir / "leaderboard.png", ranked, cfg.scoring)
    if curve:
        write_learning_curve(run_dir, curve, f"best: {ranked[0].entry.name} (fold 1)",
                             metric=cfg.scoring)
    best = ranked[0]
    echo(search_report.format_table(ranked, cfg.scoring))
    for line in fold_score_warnings(best):
        echo(line)
    try:
        search_io.save_best_model(run_dir, best_model, job.meta, model=best.entry.name,
                                  family=best.entry.family, params=best.params,
                                  cv_mean=best.cv_mean, test_score=best.test_score)
    except StoreError as exc:  # the leaderboard stays; only the model file is missing
        echo(f"warning: best model not saved: {exc}")
    skipped = [c for c in ranked if c.status.startswith("skipped")]
    if skipped:
        echo(f"time budget of {budget:g}s: {len(skipped)} candidate(s) not launched (predicted "
             "to end past it; the cheapest run first): "
             + "; ".join(f"{c.entry.name} {json.dumps(c.params, default=str)}"
                         for c in skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    echo(f"best: {best.entry.name} {json.dumps(best.params, default=str)}  "
         f"cv {best.cv_mean:.4f} +/- {best.cv_std:.4f}  test "
         f"{'n/a' if best.test_score is None else f'{best.test_score:.4f}'}  "
         f"({time.monotonic() - started:.1f}s)")


def _n_jobs(cfg: SearchConfig) -> int:
    from joblib import cpu_count

    n = int(cfg.n_jobs)
    return max(1, cpu_count() + 1 + n) if n < 0 else max(1, n)


def _run_tasks(tasks, cfg: SearchConfig, n_fits: int, tqdm, finished=None):
    """Runs (delayed call, candidate, fold) triples; returns (candidate, fold, result) triples.

    `finished(candidate, fold, seconds or None)` hears of each fit as it comes back, so the
    time budget's predictions learn from measured fits while the search runs.
    """
    from joblib import Parallel

    tagged = []  # joblib sees only the calls; keep the tags in launch order

    def calls():
        for call, cand, fold in tasks:
            tagged.append((cand, fold))
            yield call

    # On a cluster backend, -1 means every core of the cluster (the backend counts them).
    n_jobs = _n_jobs(cfg) if cfg.backend == "loky" else int(cfg.n_jobs)
    # return_as="generator" keeps launch order, so results line up with `tagged`; launching
    # is lazy (pre_dispatch), which is what lets the time budget stop new candidates.
    parallel = Parallel(n_jobs=n_jobs, pre_dispatch="n_jobs",
                        return_as="generator" if streams_results(cfg.backend) else "list")
    bar = tqdm(total=n_fits, desc="fits", unit="fit", disable=not cfg.progress,
               dynamic_ncols=True)
    out = []
    try:
        for i, res in enumerate(parallel(calls())):
            cand, fold = tagged[i]
            out.append((cand, fold, res))
            if finished is not None:
                finished(cand, fold, res["fit_s"] + res["score_s"] if "score" in res else None)
            bar.update(1)
            if "score" in res:
                bar.set_postfix_str(f"{cand.entry.name} {res['score']:.3f}", refresh=False)
    finally:
        bar.close()
    return out
