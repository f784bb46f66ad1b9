"""The neighbour graph of one store under one audit's settings: reused from beside the store,
or built by the chosen engine from the prepared (centred, unit) vectors and saved there.

    rows = AuditRows(store, cfg, scratch, times)    # one pass: digests and mean
    graph, how = store_graph(store, cfg, rows, echo, times)
    xy, method, rows = map_points(store, cfg, mean)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.audit import cluster
from pipeline.audit.approximate import IndexRows
from pipeline.audit.engines import AUTO_EXACT_ROWS, neighbour_engine
from pipeline.audit.graph import NeighbourGraph, cached_graph, content_digest
from pipeline.audit.neighbours import _unit_rows, centred, read_pass
from pipeline.audit.coverage import (UNIQUENESS_NEIGHBOURS, map_coordinates, map_rows,
                                     split_coverage, uniqueness)
from pipeline.audit.cleanlab_graph import graph_checks
from pipeline.audit.map_view import map_section
from pipeline.audit.passes import PassTimes


class AuditRows:
    """The store's vectors as the audit reads them, in one pass over the store: each row's
    digest, the mean, and the rows themselves (in memory, or above --memory-limit-mb in a
    scratch file), prepared (centred, unit length) the first time something asks for them."""

    def __init__(self, store, cfg, scratch: Path, times: PassTimes | None = None):
        self.cfg, self.times = cfg, times if times is not None else PassTimes()
        with self.times("read and digest"):
            self.digests, self.mean, self._kept = read_pass(
                store.vectors, cfg.l2_normalize, memory_limit_mb=cfg.memory_limit_mb,
                scratch=scratch, progress=cfg.progress)
        self._prepared, self._index_rows = None, {}

    def index_rows(self, width: int):
        """The prepared rows reduced by PCA to `width` (0: as they are), made once per width
        and shared by the index and the label probe until `release_index_rows`."""
        if width not in self._index_rows:
            prepared = self.prepared()
            with self.times("PCA"):
                self._index_rows[width] = IndexRows(prepared, width, self.cfg.progress)
        return self._index_rows[width]

    def release_index_rows(self) -> None:
        self._index_rows.clear()

    def prepared(self):
        if self._prepared is None:
            with self.times("centre and scale"):
                self._prepared = centred(self._kept, self.mean)
        return self._prepared


def graph_settings(store, cfg, digests, engine) -> dict:
    """Everything that changes the graph: the cache key is made from it."""
    n = len(store)
    return {"vector_key": store.key, "rows": n, "row_digest": content_digest(digests),
            "feature_shape": list(store.feature_shape), "k": min(cfg.graph_k, max(n - 1, 0)),
            "engine": engine.name, "engine_parameters": engine.parameters(),
            "pca_width": engine.width(cfg.pca_width, int(np.prod(store.feature_shape))),
            "l2_normalize": cfg.l2_normalize, "centring": "mean of all rows",
            "distance": "cosine"}


def store_graph(store, cfg, rows: AuditRows, echo=print, times: PassTimes | None = None):
    """(graph, how) for `store` under the audit settings `cfg`.

    The digests (part of the key) come from `rows`; only when no sound cached graph exists are
    the rows prepared and searched (with --cluster ray, the search runs in shards there).
    """
    engine = neighbour_engine(cfg.neighbours_engine).resolve(len(store))
    settings = graph_settings(store, cfg, rows.digests, engine)
    times = times if times is not None else PassTimes()
    where = ""

    def build() -> NeighbourGraph:
        nonlocal where
        prepared = rows.prepared()
        with cluster.shards_for(cfg) as shards:
            where = f", searched in {shards.parts} shards on Ray" if shards.remote else ""
            reduced = rows.index_rows(settings["pca_width"]) if engine.uses_pca else None
            indices, distances, profile = engine.build_graph(
                prepared, settings["k"], settings["pca_width"], cfg.progress, shards, times,
                reduced)
        return NeighbourGraph(indices, distances, profile=profile)

    graph, how = cached_graph(store.path, settings, len(store), settings["k"], build, echo)
    width = f", PCA {settings['pca_width']}" if settings["pca_width"] else ""
    return graph, f"{engine.name} engine{width}{_why(cfg, engine, len(store))}{where}; {how}"


def _why(cfg, engine, n: int) -> str:
    """Why auto picked the engine it did."""
    if cfg.neighbours_engine != "auto":
        return ""
    side = "up to" if n <= AUTO_EXACT_ROWS else "above"
    return f" (auto: {n:,} rows, {side} {AUTO_EXACT_ROWS:,})"


def map_points(store, cfg, mean: np.ndarray, rows: np.ndarray):
    """((M, 2) map coordinates, "UMAP" | "PCA") of the given rows, prepared as the graph's."""
    x = store.read_rows(rows).reshape(len(rows), -1)
    if cfg.l2_normalize:
        x = _unit_rows(x)
    return map_coordinates(_unit_rows(x - mean), cfg.map, cfg.seed)


# cleanlab's non-IID check permutes the whole graph; above this many rows it is skipped.
CLEANLAB_GRAPH_MAX_ROWS = 200_000


def _cleanlab_checks(store, graph) -> dict:
    """cleanlab's graph checks (non-IID, outliers) fed this graph, or why they were skipped."""
    labels = store.column("labels")
    if len(labels) > CLEANLAB_GRAPH_MAX_ROWS:
        return {"skipped": f"more than {CLEANLAB_GRAPH_MAX_ROWS:,} rows"}
    if graph.k < 2 or (graph.indices < 0).any():
        return {"skipped": "too few neighbours per row"}
    if (labels < 0).any():
        return {"skipped": "the store has unlabelled rows"}
    try:
        result = graph_checks(labels, graph)
    except ImportError as exc:  # Datalab's optional dependencies missing
        return {"skipped": str(exc).split(". ")[0]}
    except ValueError as exc:  # a graph or labels cleanlab will not take; the audit goes on
        return {"skipped": f"cleanlab refused the graph: {exc}"}
    result.pop("lab")
    return result


def graph_findings(store, cfg, graph, splits, mean, data_root, how: str):
    """What the graph says beyond pairs and outliers.

    Returns:
        (summary entries, uniqueness.csv rows (most unique first), the report's map section).
    """
    ids = store.column("ids")
    unique = uniqueness(graph)
    order = np.argsort(-unique, kind="stable")
    unique_rows = [[ids[r], splits[r], round(float(unique[r]), 6)] for r in order]
    coverage = split_coverage(graph, splits)
    findings = {
        "neighbour_graph": {"how": how, "k": graph.k, "engine": graph.settings.get("engine"),
                            "pca_width": graph.settings.get("pca_width")},
        "uniqueness": {"how": f"mean distance to the {UNIQUENESS_NEIGHBOURS} nearest other "
                              "rows over the store's largest such mean (1: the most isolated row, "
                              "0: a row with 3 exact copies)",
                       "percentiles": {f"p{p}": round(float(np.percentile(unique, p)), 4)
                                       for p in (5, 50, 95)} if len(unique) else {}},
        "split_coverage": coverage,
        "cleanlab_graph_checks": _cleanlab_checks(store, graph),
    }
    map_html = ""
    if cfg.map != "none" and len(store) >= 2:
        rows = map_rows(len(store), cfg.seed)
        xy, method = map_points(store, cfg, mean, rows)
        findings["map"] = {"method": method, "rows": int(len(rows))}
        map_html = map_section(xy, method, [ids[r] for r in rows], splits[rows], unique[rows],
                               coverage, data_root)
    else:
        map_html = map_section(None, "", [], np.zeros(0), np.zeros(0), coverage, data_root)
    return findings, unique_rows, map_html
