"""How long `extract --weights imagenet` takes to fail without a network, side by side per checkout.

    python benchmarks/imagenet_offline.py [--checkout LABEL=PATH ...] [--rounds 1]

Each round runs, for every checkout in turn, `run_pipeline.py extract --weights imagenet` on 6
tiny photos in a fresh cache folder with an empty KERAS_HOME (so no weights are cached), in a
fresh process, and times it to its exit (wall and CPU seconds of the process). Checkouts default
to this one; pass an older one (e.g. an unpacked `git archive`) to compare. One CSV row per
checkout and round goes to benchmarks/results/imagenet_offline.csv.
"""

from __future__ import annotations

import argparse
import os
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


def _photos(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                folder / label / f"{i}.png")
    return folder


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_refusal(checkout: Path, work: Path) -> dict:
    cache, keras_home = work / "cache", work / "keras_home"
    shutil.rmtree(cache, ignore_errors=True)
    keras_home.mkdir(exist_ok=True)
    env = dict(os.environ, KERAS_HOME=str(keras_home), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "run_pipeline.py", "extract", "--data", str(work / "photos"),
               "--backbone", "resnet50", "--weights", "imagenet", "--cache-dir", str(cache),
               "--no-progress"]
    cpu_before, start = _child_cpu(), time.perf_counter()
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _child_cpu() - cpu_before
    error = next((l for l in done.stderr.splitlines() if l.startswith("error:")), "")
    return {"exit": done.returncode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "names_weights_page": "docs/weights.md" in error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", action="append", default=[], metavar="LABEL=PATH[@COMMIT]",
                        help="a checkout to time; @COMMIT names its code when PATH has no .git")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    checkouts = [tuple(c.split("=", 1)) for c in args.checkout] or [("this", str(ROOT))]
    work = Path(tempfile.mkdtemp(prefix="imagenet-offline-"))
    _photos(work / "photos")
    print(f"{'checkout':>10} {'exit':>5} {'wall s':>7} {'cpu s':>6} {'load':>11} page")
    for _ in range(args.rounds):
        for label, path in checkouts:
            path, _, commit = path.partition("@")
            load_before = load_average()
            figures = {"checkout": label, **time_refusal(Path(path), work)}
            shown = ("python run_pipeline.py extract --data 6_PHOTOS --backbone resnet50 "
                     "--weights imagenet (offline, empty KERAS_HOME)")
            append_result("imagenet_offline.csv", figures, command=shown, load_before=load_before,
                          commit=commit or None)
            print(f"{label:>10} {figures['exit']:>5} {figures['wall_s']:>7} {figures['cpu_s']:>6} "
                  f"{load_before:>5}-{load_average():<5} {figures['names_weights_page']}")
    shutil.rmtree(work, ignore_errors=True)  # the folder this script made
    print(ROOT / "benchmarks" / "results" / "imagenet_offline.csv")


if __name__ == "__main__":
    main()
