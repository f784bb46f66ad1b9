"""An interrupted `extract --views` keeps every finished view: views are journaled in part files
as plain extraction's files are, so Ctrl-C (SIGINT) or a SIGKILL mid-pass loses at most the
views not yet published, and the same command then extracts only the views still missing and
writes the views store an uninterrupted run writes, bit for bit.

The CLI runs in subprocesses (a real signal each time), ResNet50 with random weights at 64 px
on the TensorFlow engine, so every run computes like the others.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from conftest import write_images

ROOT = Path(__file__).resolve().parents[2]
FILES, VIEWS = 40, 4


def _args(data: Path, cache: Path) -> list:
    return [sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data", str(data),
            "--backbone", "resnet50", "--weights", "none", "--input-size", "64",
            "--batch-size", "2", "--views", str(VIEWS), "--augment", "flip,crop=0.6-1.0",
            "--cache-dir", str(cache), "--no-progress", "--engine", "tensorflow", "--decode",
            "threads"]


def _env(**more) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **more}


def _view_parts(cache: Path) -> list:
    return sorted(cache.glob(f".*-views{VIEWS}-*.h5.parts/part-*.h5"))


def _views_done(cache: Path) -> set:
    done = set()
    for part in _view_parts(cache):
        with h5py.File(part, "r") as fh:
            done |= {(s.decode(), int(v)) for s, v in zip(fh["sample_ids"][:],
                                                          fh["clip_index"][:])}
    return done


def _interrupt(args, cache: Path, sig, parts: int):
    """Runs the command and sends `sig` once the views pass has published `parts` parts."""
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(PIPELINE_JOURNAL_ROWS="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(_view_parts(cache)) < parts:
            assert proc.poll() is None, ("ended before it could be interrupted",
                                         proc.stderr.read()[-3000:])
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(cache.glob(f"*-views{VIEWS}-*.h5")), "the views store was written already"
    return proc.returncode, out, err


def _contents(path: str):
    with h5py.File(path, "r") as fh:
        return fh["features"][:], fh["ids"][:].tolist(), fh["view"][:].tolist()


def test_sigint_then_sigkill_then_rerun_reuses_the_finished_views_bit_for_bit(tmp_path):
    data = write_images(tmp_path / "data", per_class=FILES // 2, size=(64, 64))
    cache = tmp_path / "cache"
    args = _args(data, cache)

    code, _, err = _interrupt(args, cache, signal.SIGINT, parts=2)
    assert code == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: finished work is kept"), err
    after_sigint = _views_done(cache)
    assert 0 < len(after_sigint) < FILES * VIEWS

    code, _, _ = _interrupt(args, cache, signal.SIGKILL, parts=len(_view_parts(cache)) + 2)
    assert code == -signal.SIGKILL
    kept = _views_done(cache)
    assert after_sigint < kept and len(kept) < FILES * VIEWS

    rerun = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{FILES * VIEWS - len(kept)} view(s) of " in rerun.stdout, rerun.stdout
    assert f"; {len(kept)} reused)" in rerun.stdout, rerun.stdout
    assert not list(cache.glob(".*.parts")), "the journal stays after the store was written"
    resumed = _contents(rerun.stdout.strip().splitlines()[-1])

    whole = subprocess.run(_args(data, tmp_path / "whole"), cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = _contents(whole.stdout.strip().splitlines()[-1])
    assert resumed[1:] == expected[1:]  # ids and view numbers, row by row
    assert len(resumed[0]) == FILES * (VIEWS + 1) and np.abs(expected[0]).max() > 0.1
    np.testing.assert_array_equal(resumed[0], expected[0])
