"""Seconds and memory of the audit's exact neighbour scan as N grows (2048-d vectors).

Synthetic, cluster-structured vectors (100 centres, non-negative like pooled CNN features, 1%
planted near-copies) are written to a feature store chunk by chunk, then the audit's two steps
run on it: `prepare_vectors` (mean, centring, normalising; a memory-mapped scratch file above
the memory limit) and `scan_neighbours` (exact 5-NN and all pairs under 0.15). Each size runs in
its own process so peak RSS is that size's alone. The scan's cost is the same for every block
pair (2048 x 2048 x D multiply-adds plus the top-k merge), so with `--sample-pairs P` a size whose
full scan would take hours on a small machine is timed over its first P block pairs and the total
is extrapolated (marked "est." in the table); prepare and memory are always measured whole. At the
smallest size scikit-learn's brute-force
`NearestNeighbors` and faiss-cpu's exact `IndexFlatIP` run on the same prepared vectors, side by
side, as the candidates the audit could have used instead.

    python benchmarks/audit_scale.py --sample-above 10000 --sample-pairs 30   # 10k, 50k, 200k
    python benchmarks/audit_scale.py --sizes 10000 --dim 256
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
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def synthetic(n: int, dim: int, seed: int = 0):
    centres = np.random.default_rng(seed).gamma(1.0, 1.0, size=(100, dim)).astype(np.float32)

    def rows(a, b):
        rng = np.random.default_rng([seed, a])
        x = centres[rng.integers(0, 100, b - a)] + rng.gamma(1.0, 1.0, (b - a, dim))
        copies = np.flatnonzero(np.arange(a, b) % 100 == 1)  # row i copies row i - 1, noised
        x[copies] = x[copies - 1] * (1 + rng.normal(0, 0.02, (len(copies), dim)))
        return x.astype(np.float32)
    return rows


class _Enough(Exception):
    pass


def one_size(n: int, dim: int, compare: bool, sample_pairs: int = 0) -> dict:
    import h5py

    from pipeline.audit.neighbours import prepare_vectors, scan_neighbours
    from pipeline.store.feature_store import write_store

    with tempfile.TemporaryDirectory() as tmp:
        path = write_store(Path(tmp) / "synthetic.h5", synthetic(n, dim), np.zeros(n, int),
                           class_names=["a"], chunk_rows=4096)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tracemalloc.start()
        started = time.perf_counter()
        with h5py.File(path, "r") as fh:
            prepared, _, _ = prepare_vectors(fh["features"], memory_limit_mb=512, scratch=tmp)
        prep_s = time.perf_counter() - started
        seen = {}

        def progress(done, total):
            seen.update(done=done, total=total)
            if sample_pairs and done >= sample_pairs:
                raise _Enough

        started = time.perf_counter()
        try:
            scan = scan_neighbours(prepared, k=5, threshold=0.15, progress=progress)
            pairs = len(scan.pairs)
        except _Enough:
            pairs = None
        scan_s = (time.perf_counter() - started) * seen["total"] / seen["done"]
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        result = {"n": n, "dim": dim, "prepare_s": prep_s, "scan_s": scan_s,
                  "pairs": pairs, "block_pairs": f"{seen['done']} of {seen['total']}",
                  "traced_peak_mb": traced,
                  "in_memory": isinstance(prepared, np.memmap) is False,
                  "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_mb": rss0}
        if compare:  # three rounds, interleaved, best of each: the machine's load varies
            x = np.asarray(prepared)
            from sklearn.neighbors import NearestNeighbors

            def ours():
                scan_neighbours(x, k=5, threshold=0.15)

            def sklearn_brute():
                NearestNeighbors(n_neighbors=6, algorithm="brute",
                                 metric="cosine").fit(x).kneighbors(x)

            candidates = {"audit_scan_best_s": ours, "sklearn_brute_s": sklearn_brute}
            try:
                import faiss

                def faiss_flat():
                    index = faiss.IndexFlatIP(dim)
                    index.add(x)
                    index.search(x, 6)
                candidates["faiss_flat_s"] = faiss_flat
            except ImportError:
                result["faiss_flat_s"] = None
            for _ in range(3):
                for name, run in candidates.items():
                    started = time.perf_counter()
                    run()
                    took = time.perf_counter() - started
                    result[name] = min(result.get(name, took), took)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--sample-above", type=int, default=0,
                        help="sizes above this are timed over --sample-pairs block pairs")
    parser.add_argument("--sample-pairs", type=int, default=60)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.dim, args.compare, args.sample)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for i, n in enumerate(sizes):
        sample = args.sample_pairs if args.sample_above and n > args.sample_above else 0
        cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim),
               "--sample", str(sample)]
        out = subprocess.run(cmd + (["--compare"] if i == 0 else []), check=True,
                             capture_output=True, text=True, env=os.environ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"# {json.dumps(r)}", flush=True)  # each size as it ends
    print(f"\n{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| N x D | prepare s | scan s | block pairs timed | pairs <= 0.15 | vectors held | "
          "numpy peak MB | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        done, total = r["block_pairs"].split(" of ")
        est = "" if done == total else "est. "
        pairs = "n/a" if r["pairs"] is None else f"{r['pairs']:,}"
        print(f"| {r['n']:,} x {r['dim']} | {r['prepare_s']:.1f} | {est}{r['scan_s']:.1f} | "
              f"{r['block_pairs']} | {pairs} | "
              f"{'in memory' if r['in_memory'] else 'memory-mapped file'} | "
              f"{r['traced_peak_mb']:.0f} | {r['rss_peak_mb']:.0f} |")
    first = rows[0]
    if "sklearn_brute_s" in first:
        faiss_s = first.get("faiss_flat_s")
        print(f"\nAt {first['n']:,}, best of 3 interleaved rounds: audit scan "
              f"{first['audit_scan_best_s']:.1f}s, scikit-learn brute NearestNeighbors "
              f"{first['sklearn_brute_s']:.1f}s, faiss IndexFlatIP "
              f"{'n/a' if faiss_s is None else f'{faiss_s:.1f}s'}")


if __name__ == "__main__":
    main()
