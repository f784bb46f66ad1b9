"""Peak memory and time of `import` on vectors far larger than the memory it uses (streamed).

Writes synthetic vectors (default 1,000,000 x 2048 float32, 8 GB) block by block as an .npy
with its CSV table, and optionally as Parquet, then runs `run_pipeline.py import` on each in a
fresh process and records that process's peak resident memory and wall time.

Usage:
    python benchmarks/import_memory.py [--rows 1000000] [--dim 2048] [--formats npy,parquet]
                                       [--dir /tmp/x]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import append_rows, machine_fields  # noqa: E402

BLOCK = 16384


def _block(start: int, stop: int, dim: int):
    import numpy as np

    return np.random.default_rng(start).normal(size=(stop - start, dim)).astype(np.float32)


def write_npy(folder: Path, rows: int, dim: int) -> list[str]:
    import numpy as np

    with open(folder / "v.npy", "wb") as fh:  # header, then the rows block by block
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (rows, dim)})
        for start in range(0, rows, BLOCK):
            _block(start, min(rows, start + BLOCK), dim).tofile(fh)
    with open(folder / "v.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "label", "split"])
        out.writerows((f"r{i}", f"c{i % 5}", "") for i in range(rows))
    return ["--vectors", str(folder / "v.npy"), "--table", str(folder / "v.csv")]


def write_parquet(folder: Path, rows: int, dim: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("label", pa.string()),
                        ("vector", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(folder / "v.parquet", schema) as writer:
        for start in range(0, rows, BLOCK):
            stop = min(rows, start + BLOCK)
            flat = pa.array(_block(start, stop, dim).reshape(-1))
            writer.write_batch(pa.record_batch(
                [pa.array([f"r{i}" for i in range(start, stop)]),
                 pa.array([f"c{i % 5}" for i in range(start, stop)]),
                 pa.FixedSizeListArray.from_arrays(flat, dim)], schema=schema))
    return ["--vectors", str(folder / "v.parquet")]


# Runs one import and reports its own peak resident memory: VmHWM, which starts afresh with
# the process (ru_maxrss would carry over the parent's peak across fork and exec).
CHILD = """import sys
sys.path.insert(0, sys.argv[1])
from run_pipeline import main
code = main(sys.argv[2:])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("peak_kib", line.split()[1], file=sys.stderr)
sys.exit(code)
"""


def measure(args: list[str], cache: Path) -> dict:
    """Wall time and peak RSS of one `import` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), "import", *args,
                           "--name", "bench", "--cache-dir", str(cache)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr)
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines()
                if line.startswith("peak_kib"))
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(peak / 1024)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--formats", default="npy")
    parser.add_argument("--dir", default=None)
    opts = parser.parse_args(argv)
    before = machine_fields()
    results = []
    with tempfile.TemporaryDirectory(dir=opts.dir) as tmp:
        for fmt in opts.formats.split(","):
            folder = Path(tmp) / fmt
            folder.mkdir()
            args = (write_npy if fmt == "npy" else write_parquet)(folder, opts.rows, opts.dim)
            size = sum(f.stat().st_size for f in folder.iterdir()) / 2**30
            figures = measure(args, Path(tmp) / f"cache-{fmt}")
            results.append({"format": fmt, "rows": opts.rows, "dim": opts.dim,
                            "input_gib": round(size, 2), **figures})
            print(results[-1], flush=True)
            for made in list(folder.iterdir()) + list((Path(tmp) / f"cache-{fmt}").iterdir()):
                made.unlink()  # one format's files at a time on the disk
    append_rows(ROOT / "benchmarks" / "results" / "import_memory.csv", results, before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
