"""Peak memory of fit-head on a store far larger than the memory it uses (streamed training).

Writes a synthetic store (default 200,000 x 2048 float32, 1.6 GB) through
`feature_store.write_store(callable)`, so the writer never holds it either, then trains the
default head on it in a fresh process and reports that process's peak resident memory.

Usage:
    python benchmarks/head_memory.py [--rows 200000] [--dim 2048] [--epochs 2] [--dir /tmp/x]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_synthetic(path: Path, rows: int, dim: int, classes: int = 5) -> Path:
    """Class-dependent Gaussian vectors, made chunk by chunk from a seeded generator."""
    import numpy as np

    from pipeline.store.feature_store import write_store

    labels = np.arange(rows) % classes
    centres = np.random.default_rng(0).normal(0, 1, (classes, dim)).astype(np.float32)

    def features(start, stop):
        rng = np.random.default_rng(start)
        x = rng.normal(0, 3, (stop - start, dim)).astype(np.float32)
        return x + centres[labels[start:stop]]

    return write_store(path, features, labels, class_names=[f"c{i}" for i in range(classes)],
                       ids=[f"r{i}" for i in range(rows)], chunk_rows=4096)


def train_child(store: str, epochs: int) -> None:
    """Runs in a fresh process: trains and prints its memory figures as JSON."""
    import keras  # noqa: F401  (import cost belongs to the baseline, not to training)

    from pipeline.fit.run import fit_head

    baseline = _rss_mib()
    started = time.perf_counter()
    run = fit_head(store, {"epochs": epochs, "batch_size": 256, "progress": True},
                   out_dir=Path(store).parent / "runs", echo=lambda line: print(line, file=sys.stderr))
    metrics = json.loads((run / "metrics.json").read_text())
    print(json.dumps({"baseline_mib": baseline, "peak_mib": _peak_mib(),
                      "seconds": time.perf_counter() - started, "training": metrics["training"],
                      "val_accuracy": metrics["val_accuracy"], "epochs": metrics["epochs_run"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dir", default=None, help="where the store goes [default: a temp dir]")
    parser.add_argument("--train-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_child:
        return train_child(args.train_child, args.epochs)

    folder = Path(args.dir or tempfile.mkdtemp(prefix="head_memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / f"synthetic-{args.rows}x{args.dim}.h5"
    started = time.perf_counter()
    reused = store.exists()
    if not reused:
        write_synthetic(store, args.rows, args.dim)
    write_s = time.perf_counter() - started
    child = subprocess.run([sys.executable, __file__, "--train-child", str(store),
                            "--epochs", str(args.epochs)], capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if child.returncode:
        sys.exit(child.stderr[-3000:])
    result = json.loads(child.stdout.strip().splitlines()[-1])
    store_mib = store.stat().st_size / 2**20
    vectors_mib = args.rows * args.dim * 4 / 2**20
    rows = [
        ("store file on disk", f"{store_mib:,.0f} MiB"),
        ("vectors as float32 in memory would be", f"{vectors_mib:,.0f} MiB"),
        ("writer peak RSS (write_store(callable))", "store reused from --dir" if reused
         else f"{_peak_mib():,.0f} MiB ({write_s:.0f} s)"),
        ("trainer RSS after importing Keras", f"{result['baseline_mib']:,.0f} MiB"),
        ("trainer peak RSS during fit-head", f"{result['peak_mib']:,.0f} MiB"),
        ("peak growth over the import baseline", f"{result['peak_mib'] - result['baseline_mib']:,.0f} MiB"),
        ("peak RSS / vectors size", f"{result['peak_mib'] / vectors_mib:.2f}"),
        ("training mode", result["training"]),
        ("epochs, seconds (train + evaluate)", f"{result['epochs']}, {result['seconds']:.0f} s"),
        ("val_accuracy", f"{result['val_accuracy']:.4f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"fit-head memory, {args.rows:,} x {args.dim} store ({os.cpu_count()} CPU cores)")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


if __name__ == "__main__":
    main()
