"""The whole `audit` command as a user runs it, at growing N: seconds per pass, peak RSS, recall.

Each size gets a synthetic store written to disk (2048-d, non-negative like pooled CNN vectors):
100 classes (a row is its class's centre plus its own noise), train/val/test splits (80/10/10),
1% of labels flipped to another class, and planted near-copies across the split: the row after
every 50th is a copy of it with small added noise (distance about 0.05), the source in train and
the copy in val or test. `run_pipeline.py audit --store S` then runs with its defaults in a
process of its own; peak RSS is read from outside (the process tree polled with psutil), the
seconds of each pass from the audit's own summary.json. Reported: the share of planted pairs in
duplicates.csv, and of the flipped rows among the first 2x their number in label_candidates.csv.

    python benchmarks/audit_scale.py --sizes 100000,200000
    python benchmarks/audit_scale.py --sizes 1000000 --work /big/disk   # 8.2 GB store there

The stores are deleted when their run ends (`--keep` keeps them for a second run).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

CLASSES = 100
CHUNK = 8000            # rows written at a time (a multiple of PLANT_EVERY: a pair never splits)
PLANT_EVERY = 50        # row i + 1 copies row i when i % PLANT_EVERY == 0
COPY_NOISE = 0.45       # std of the copy's added noise: cosine distance about 0.05
FLIPPED = 0.01


def plan(n: int, seed: int = 0) -> dict:
    """Every row's true and given label and split, the planted pairs and the flipped rows."""
    rng = np.random.default_rng([seed, 1])
    true = rng.integers(0, CLASSES, n)
    sources = np.arange(0, n - 1, PLANT_EVERY)
    true[sources + 1] = true[sources]
    split = rng.choice(np.array(["train", "val", "test"]), n, p=[0.8, 0.1, 0.1])
    split[sources] = "train"
    split[sources + 1] = np.where(np.arange(len(sources)) % 2, "test", "val")
    free = np.setdiff1d(np.arange(n), np.concatenate([sources, sources + 1]))
    flipped = np.sort(rng.choice(free, int(FLIPPED * n), replace=False))
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, CLASSES, len(flipped))) % CLASSES
    return {"true": true, "given": given, "split": split, "flipped": flipped,
            "pairs": np.column_stack([sources, sources + 1])}


def vectors(true: np.ndarray, dim: int, seed: int = 0):
    """rows(a, b) -> the float32 vectors of rows a..b (a a multiple of CHUNK)."""
    centres = np.random.default_rng([seed, 2]).gamma(1.0, 1.0, (CLASSES, dim)).astype(np.float32)

    def rows(a, b):
        rng = np.random.default_rng([seed, 3, a])
        x = centres[true[a:b]] + rng.gamma(1.0, 1.0, (b - a, dim)).astype(np.float32)
        copies = np.flatnonzero((np.arange(a, b) % PLANT_EVERY == 1) & (np.arange(a, b) > a))
        x[copies] = x[copies - 1] + rng.normal(0, COPY_NOISE, (len(copies), dim))
        return np.maximum(x, 0).astype(np.float32)
    return rows


def write_synthetic(path: Path, n: int, dim: int, seed: int = 0) -> dict:
    from pipeline.store.feature_store import write_store

    truth = plan(n, seed)
    write_store(path, vectors(truth["true"], dim, seed), truth["given"],
                class_names=[f"class{c:03d}" for c in range(CLASSES)],
                ids=[f"row{i}" for i in range(n)], split=truth["split"].tolist(),
                chunk_rows=CHUNK, provenance={"weights": "synthetic"})
    return truth


class PeakRss:
    """The largest summed RSS of a process and its children, polled every 0.2 s."""

    def __init__(self, pid: int):
        import psutil

        self.root, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self):
        import psutil

        while not self._stop.is_set():
            try:
                tree = [self.root, *self.root.children(recursive=True)]
                total = 0
                for proc in tree:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _ids_to_rows(ids) -> np.ndarray:
    return np.array([int(i.removeprefix("row")) for i in ids], dtype=np.int64)


def recall(audit: Path, truth: dict) -> dict:
    """Planted pairs in duplicates.csv; flipped rows among label_candidates.csv's first 2F."""
    with (audit / "duplicates.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    a, b = _ids_to_rows([r["id_a"] for r in rows]), _ids_to_rows([r["id_b"] for r in rows])
    found = {(int(x), int(y)) for x, y in zip(np.minimum(a, b), np.maximum(a, b))}
    planted = {(int(x), int(y)) for x, y in truth["pairs"]}
    with (audit / "label_candidates.csv").open(newline="") as fh:
        ranked = _ids_to_rows([r["id"] for r in csv.DictReader(fh)])
    flipped = truth["flipped"]
    top = ranked[:2 * len(flipped)]
    return {"planted_pairs": len(planted), "planted_found": len(planted & found),
            "planted_recall": round(len(planted & found) / max(len(planted), 1), 4),
            "flipped": len(flipped), "flipped_in_top_2x": int(np.isin(flipped, top).sum()),
            "flip_recall_top_2x": round(float(np.isin(flipped, top).mean()), 4)}


OUTPUTS = ("duplicates.csv", "suggested_groups.csv", "label_issues.csv", "label_candidates.csv",
           "outliers.csv", "uniqueness.csv", "summary.json", "report.html")


def run_audit(store: Path, audit: Path, extra: list[str]) -> dict:
    """Runs the audit command; its wall seconds, peak RSS and exit status."""
    command = [sys.executable, str(ROOT / "run_pipeline.py"), "audit", "--store", str(store),
               "--out", str(audit), *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    watch = PeakRss(proc.pid)
    out, err = proc.communicate()
    peak = watch.stop()
    if proc.returncode:
        sys.stderr.write(err[-4000:])
    return {"exit": proc.returncode, "wall_s": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(peak / 2**20), "stdout_tail": out.strip().splitlines()[-1:]}


def one_size(n: int, dim: int, work: Path, keep: bool, extra: list[str]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    store = work / f"audit-scale-{n}x{dim}.h5"
    truth_file = store.with_suffix(".truth.npz")
    started = time.perf_counter()
    if store.exists() and truth_file.exists():
        truth = dict(np.load(truth_file))
        write_s = 0.0
    else:
        truth = write_synthetic(store, n, dim)
        np.savez(truth_file, **{k: v for k, v in truth.items() if k != "split"})
        write_s = time.perf_counter() - started
    audit = work / f"audit-scale-{n}.audit"
    try:
        result = {"n": n, "dim": dim, "store_gb": round(store.stat().st_size / 1e9, 2),
                  "write_store_s": round(write_s, 1), **run_audit(store, audit, extra)}
        if result["exit"] == 0:
            summary = json.loads((audit / "summary.json").read_text())
            result.update(recall(audit, truth))
            result["outputs_present"] = all((audit / f).is_file() for f in OUTPUTS)
            result["report_mb"] = round((audit / "report.html").stat().st_size / 1e6, 2)
            result["engine"] = summary["neighbour_graph"]["engine"]
            result["threshold"] = summary["thresholds"]["duplicate_distance"]
            result["passes_s"] = json.dumps(summary.get("seconds_per_pass", {}))
            result["label_probe"] = summary.get("label_probe", {}).get("method", "")
        return result
    finally:
        shutil.rmtree(audit, ignore_errors=True)
        for graph in work.glob(f"{store.stem}.neighbours-*.h5"):
            graph.unlink()
        if not keep:
            store.unlink(missing_ok=True)
            truth_file.unlink(missing_ok=True)


def main() -> None:
    from machine import RESULTS, append_rows, machine_fields

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,200000,1000000")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")),
                        help="folder of the stores (1M x 2048 needs 8.2 GB, plus its scratch)")
    parser.add_argument("--keep", action="store_true", help="keep the stores for another run")
    parser.add_argument("--audit-args", default="", help="extra audit flags, e.g. '--no-progress'")
    parser.add_argument("--no-record", action="store_true", help="print only, append no CSV")
    args = parser.parse_args()
    machine = machine_fields()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        row = one_size(n, args.dim, args.work, args.keep, args.audit_args.split())
        row["load_now"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        print(f"# {json.dumps(row)}", flush=True)
    print(f"\n{os.cpu_count()} CPU(s); load average {machine['load_before']} before, "
          f"{os.getloadavg()[0]:.2f} at the end\n")
    print("| rows x 2048 | exit | wall s | peak RSS MB | planted pairs found | flips in top 2x |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['n']:,} | {r['exit']} | {r['wall_s']} | {r['peak_rss_mb']:,} | "
              f"{r.get('planted_found', '-')}/{r.get('planted_pairs', '-')} | "
              f"{r.get('flipped_in_top_2x', '-')}/{r.get('flipped', '-')} |")
    if not args.no_record:
        append_rows(RESULTS / "audit_scale.csv", rows, machine)


if __name__ == "__main__":
    main()
