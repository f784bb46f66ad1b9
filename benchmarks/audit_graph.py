"""Seconds, peak memory and planted-pair recall of the audit's neighbour graph alone, per engine.

Synthetic, cluster-structured 2048-d vectors (100 centres, non-negative like pooled CNN
features) with planted near-duplicates: row i copies row i - 1 with 2% multiplicative noise
when i % 100 == 1, and exactly when i % 100 == 51. Each size is written to a real feature
store and runs in its own process (so peak RSS is that run's alone) through the audit's own
steps: the read pass (digests, mean, the rows kept in a scratch file), the centring, then the
engine's search, with the same settings the audit uses (k = 10). It reports each step's seconds, the peak RSS and the share of
planted pairs the graph lists under the threshold 0.15; where the exact engine also ran at that
size, the share of its pairs and of its neighbour lists that the other engine found too.

    python benchmarks/audit_graph.py --sizes 10000 --engines exact,hnsw
    python benchmarks/audit_graph.py --sizes 200000 --engines hnsw --pca-width 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

K = 10
THRESHOLD = 0.15


def synthetic(n: int, dim: int, seed: int = 0):
    centres = np.random.default_rng(seed).gamma(1.0, 1.0, size=(100, dim)).astype(np.float32)

    def rows(a, b):
        rng = np.random.default_rng([seed, a])
        x = centres[rng.integers(0, 100, b - a)] + rng.gamma(1.0, 1.0, (b - a, dim)).astype(
            np.float32)
        index = np.arange(a, b)
        noisy = np.flatnonzero((index % 100 == 1) & (index > a))
        x[noisy] = x[noisy - 1] * (1 + rng.normal(0, 0.02, (len(noisy), dim)))
        exact = np.flatnonzero((index % 100 == 51) & (index > a))
        x[exact] = x[exact - 1]
        return x.astype(np.float32)
    return rows


def planted(n: int, chunk: int) -> set:
    """The planted (i - 1, i) pairs (none across a chunk boundary: each chunk is made alone)."""
    return {(i - 1, i) for i in range(1, n) if i % 100 in (1, 51) and i % chunk}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_run(n: int, dim: int, engine_name: str, pca_width: int, keep: str | None) -> dict:
    import h5py

    from pipeline.audit.engines import neighbour_engine
    from pipeline.audit.graph import NeighbourGraph
    from pipeline.audit.neighbours import centred, read_pass
    from pipeline.store.feature_store import write_store

    chunk = 4096
    with tempfile.TemporaryDirectory(dir=os.environ.get("AUDIT_SCALE_TMP")) as tmp:
        started = time.perf_counter()
        path = write_store(Path(tmp) / "synthetic.h5", synthetic(n, dim), np.zeros(n, int),
                           class_names=["a"], chunk_rows=chunk)
        write_s = time.perf_counter() - started
        rss_before = _peak_mb()
        with h5py.File(path, "r") as fh:
            features = fh["features"]
            started = time.perf_counter()
            digests, mean, kept = read_pass(features, memory_limit_mb=512, scratch=tmp)
            digest_s = time.perf_counter() - started
            started = time.perf_counter()
            prepared = centred(kept, mean)
            prepare_s = time.perf_counter() - started
        del digests
        started = time.perf_counter()
        indices, distances = neighbour_engine(engine_name).search(prepared, K, pca_width,
                                                                  progress=False)
        search_s = time.perf_counter() - started
        graph = NeighbourGraph(indices, distances)
        pairs = {(int(i), int(j)) for i, j, _ in graph.pairs(THRESHOLD)}
        truth = planted(n, chunk)
        result = {"n": n, "dim": dim, "engine": engine_name, "pca_width": pca_width,
                  "write_store_s": round(write_s, 1), "digest_s": round(digest_s, 1),
                  "prepare_s": round(prepare_s, 1), "search_s": round(search_s, 1),
                  "graph_total_s": round(digest_s + prepare_s + search_s, 1),
                  "peak_rss_mb": round(_peak_mb()), "rss_before_graph_mb": round(rss_before),
                  "planted_pairs": len(truth),
                  "planted_recall": round(len(truth & pairs) / max(len(truth), 1), 4),
                  "pairs_under_threshold": len(pairs), "pair_recall_vs_exact": "",
                  "knn_recall_vs_exact": ""}
        if keep:
            np.savez(keep, indices=indices, distances=distances,
                     pairs=np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2))
        return result


def compare(row: dict, mine: str, reference: str) -> None:
    """Adds the share of the exact engine's pairs and neighbour lists this run found too."""
    a, b = np.load(mine), np.load(reference)
    ref_pairs = {tuple(p) for p in b["pairs"].tolist()}
    got = {tuple(p) for p in a["pairs"].tolist()}
    row["pair_recall_vs_exact"] = round(len(ref_pairs & got) / max(len(ref_pairs), 1), 4)
    hits = [len(set(x) & set(y)) for x, y in zip(a["indices"].tolist(), b["indices"].tolist())]
    row["knn_recall_vs_exact"] = round(sum(hits) / b["indices"].size, 4)


def main() -> None:
    from machine import RESULTS, append_rows, machine_fields

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,200000")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--engines", default="exact,hnsw",
                        help="engines run at each size (exact first: the others compare to it)")
    parser.add_argument("--exact-up-to", type=int, default=100_000,
                        help="the exact engine runs only up to this size")
    parser.add_argument("--pca-width", type=int, default=0, help="hnsw's PCA width (0: none)")
    parser.add_argument("--threads", type=int, default=0,
                        help="BLAS/OpenMP threads of each run (0: the libraries' default); on a "
                             "machine shared with other jobs, 1 avoids threads spinning on "
                             "busy cores")
    parser.add_argument("--no-record", action="store_true", help="print only, append no CSV")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        n, engine, pca, keep = args.one
        print(json.dumps(one_run(int(n), args.dim, engine, int(pca), keep or None)))
        return
    machine = machine_fields()
    env = dict(os.environ)
    if args.threads:
        env.update({name: str(args.threads) for name in ("OMP_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    rows = []
    with tempfile.TemporaryDirectory() as keep_dir:
        for n in (int(s) for s in args.sizes.split(",")):
            reference = None
            for engine in args.engines.split(","):
                if engine == "exact" and n > args.exact_up_to:
                    continue
                pca = 0 if engine == "exact" else args.pca_width
                keep = str(Path(keep_dir) / f"{n}-{engine}.npz")
                out = subprocess.run([sys.executable, __file__, "--dim", str(args.dim), "--one",
                                      str(n), engine, str(pca), keep], check=True,
                                     capture_output=True, text=True, env=env).stdout
                row = json.loads(out.strip().splitlines()[-1])
                if engine == "exact":
                    reference = keep
                elif reference:
                    compare(row, keep, reference)
                row["threads"] = args.threads or "default"
                row["load_now"] = round(os.getloadavg()[0], 2)
                rows.append(row)
                print(f"# {json.dumps(row)}", flush=True)
    print(f"\n{os.cpu_count()} CPU(s); load average {machine['load_before']} before, "
          f"{os.getloadavg()[0]:.2f} at the end\n")
    print("| N x D | engine | PCA | graph s (digest + prepare + search) | peak RSS MB | "
          "planted recall | pairs vs exact |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['n']:,} x {r['dim']} | {r['engine']} | {r['pca_width'] or '-'} | "
              f"{r['graph_total_s']} ({r['digest_s']} + {r['prepare_s']} + {r['search_s']}) | "
              f"{r['peak_rss_mb']} | {r['planted_recall']} | "
              f"{r['pair_recall_vs_exact'] or '-'} |")
    if not args.no_record:
        append_rows(RESULTS / "audit_graph.csv", rows, machine)


if __name__ == "__main__":
    main()
