"""How long `run_pipeline.py demo` takes on this machine, as a new user runs it.

    python benchmarks/demo_duration.py [--keep]

Runs the demo once in a fresh cache folder (so nothing is reused), prints a table of wall time
and CPU time, and appends the row to benchmarks/results/demo_duration.csv with the machine, the
load before and after, the date and the command. The README's and `demo --help`'s duration
come from this file.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import append_result, load_average  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the demo's cache folder")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="demo-duration-"))
    command = [sys.executable, "run_pipeline.py", "demo", "--no-progress",
               "--cache-dir", str(cache)]
    load_before = load_average()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"demo failed ({done.returncode}):\n{done.stderr[-2000:]}")
    figures = {"wall_s": round(wall, 1), "cpu_s": round(cpu.ru_utime + cpu.ru_stime, 1)}
    shown = "python run_pipeline.py demo --no-progress --cache-dir FRESH_DIR"
    path = append_result("demo_duration.csv", figures, command=shown, load_before=load_before)
    print(f"{'wall s':>8} {'cpu s':>8} {'load before':>12} {'load after':>11}")
    print(f"{figures['wall_s']:>8} {figures['cpu_s']:>8} {load_before:>12} {load_average():>11}")
    if not args.keep:
        shutil.rmtree(cache, ignore_errors=True)  # the fresh folder this script made
    print(path)


if __name__ == "__main__":
    main()
