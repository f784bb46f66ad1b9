"""`extract` in one process vs on a local Ray cluster of 1 and 2 actors, on the same files.

Each configuration runs the real command (`python run_pipeline.py extract ...`, a fresh process,
a fresh local Ray cluster for the actor runs) on a small and a large set of the same files. A
run's whole time includes fixed costs (Python and TensorFlow start-up; for the cluster path,
starting Ray and an actor that imports TensorFlow and builds the backbone); the per-file cost is
the difference between the two sizes, so

    marginal rate = (large - small files) / (large - small seconds)

compares the steady throughput of the paths without their start-up. On a machine shared with
other work, wall time mostly measures the neighbours, so each run also sums the CPU seconds of
its whole process tree (Ray's daemons and actors included): the cluster path's marginal CPU
seconds per file over one process's is its overhead (goal for 1 actor: within 10%). Every
cluster store is also compared with the one-process store of the same files (ids, max |diff|).

Usage:
    python benchmarks/cluster_scaling.py [--backbone resnet50] [--small 64] [--large 200] [--rounds 2]
Uses ../shared/data/flowers5 when present, else random JPEGs. Random weights (the speed and the
equality do not depend on them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from extract_throughput import _image_folder  # noqa: E402


def _extract(data: Path, cache: Path, args, actors: int | None) -> tuple[float, float, Path]:
    """Runs one command; returns its wall seconds, the CPU seconds of its whole process tree
    (Ray's daemons and actors included; sampled every 0.1 s) and the store it made."""
    import psutil

    cmd = [sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data", str(data),
           "--backbone", args.backbone, "--weights", "none", "--input-size",
           str(args.input_size), "--batch-size", str(args.batch_size), "--cache-dir", str(cache),
           "--engine", "tensorflow", "--no-progress"]
    if actors:
        cmd += ["--cluster", "ray", "--actors", str(actors)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", RAY_ADDRESS="")
    cpu: dict[int, float] = {}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, text=True, env=env)
        tree = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                members = [tree] + tree.children(recursive=True)
            except psutil.Error:
                members = []
            for member in members:
                try:
                    times = member.cpu_times()
                    cpu[member.pid] = max(cpu.get(member.pid, 0.0), times.user + times.system)
                except psutil.Error:
                    continue
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed with exit {proc.returncode}")
        out.seek(0)
        store = Path(out.read().strip().splitlines()[-1])
    return seconds, sum(cpu.values()), store


def _compare(path: Path, reference: Path) -> str:
    from pipeline.store.feature_store import open_store

    with open_store(path) as got, open_store(reference) as want:
        if list(got.column("ids")) != list(want.column("ids")) or got.key != want.key:
            return "DIFFERENT ids or key"
        diff = np.abs(got.read_rows(np.arange(len(got))) - want.read_rows(np.arange(len(want))))
        return f"ids equal, max |diff| {diff.max():.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--small", type=int, default=64)
    parser.add_argument("--large", type=int, default=200)
    parser.add_argument("--actors", default="1,2", help="comma-separated actor counts")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cluster-scaling-"))
    try:
        _measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args, work: Path) -> None:
    folders = {n: _image_folder(n, work / f"n{n}") for n in (args.small, args.large)}
    configs = [("one process", None)] + [(f"ray, {a} actor(s)", int(a))
                                         for a in args.actors.split(",")]
    # Rounds interleave the paths, so a change in the machine's load hits all of them alike;
    # the table gives each path's median over the rounds.
    wall = {(name, n): [] for name, _ in configs for n in folders}
    cpu = {(name, n): [] for name, _ in configs for n in folders}
    reference = {}
    for round_number in range(args.rounds):
        for name, actors in configs:
            for n, data in folders.items():
                cache = work / f"cache-{round_number}-{actors or 0}-{n}"
                seconds, cpu_seconds, store = _extract(data, cache, args, actors)
                wall[(name, n)].append(seconds)
                cpu[(name, n)].append(cpu_seconds)
                check = "reference" if actors is None else _compare(store, reference[n])
                reference.setdefault(n, store)
                print(f"  round {round_number + 1}, {name}: {n} files in {seconds:.1f}s, "
                      f"{cpu_seconds:.1f} CPU s ({check})", flush=True)

    extra = args.large - args.small

    def per_file(table: dict, name: str) -> float:
        """Median over the rounds of (large - small) seconds / (large - small) files."""
        return float(np.median([(big - small) / extra for small, big in
                                zip(table[(name, args.small)], table[(name, args.large)])]))

    base_wall, base_cpu = per_file(wall, configs[0][0]), per_file(cpu, configs[0][0])
    print(f"\n{args.backbone} {args.input_size}px, batch {args.batch_size}, random weights, "
          f"TensorFlow, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the "
          f"end; whole command (fresh process) each run; median of {args.rounds} round(s)\n")
    print(f"| path | wall s, {args.small} / {args.large} files | CPU s, {args.small} / "
          f"{args.large} files | marginal files/s (wall) | marginal CPU s per file | "
          "vs one process (CPU per file) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, _ in configs:
        w, c = per_file(wall, name), per_file(cpu, name)
        print(f"| {name} | {np.median(wall[(name, args.small)]):.1f} / "
              f"{np.median(wall[(name, args.large)]):.1f} | {np.median(cpu[(name, args.small)]):.1f}"
              f" / {np.median(cpu[(name, args.large)]):.1f} | {1 / w:.1f} | {c:.3f} | "
              f"{c / base_cpu - 1:+.0%} |")


if __name__ == "__main__":
    main()
