"""Weights pickles built to hang or exhaust the machine (hostile_pickles.py), read as a user
would pass them: each ends in one `error:` line naming the file, without walking every
reference or allocating what the file declares. Each runs in a process of its own with a
bounded timeout, so a regression fails the test instead of hanging the suite."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hostile_pickles  # noqa: E402
from conftest import write_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# What reading a refused file may allocate (the unpickler's own stack and the file's bytes
# included): far below the 2.4 GB or 400 MB the hostile files declare.
ALLOCATION_BOUND_MB = 64


def _run(argv, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def test_shared_references_are_refused_without_following_them(tmp_path):
    """A 1,266-byte pickle whose 60 levels of dicts share references: 2**60 paths to walk."""
    weights = hostile_pickles.shared_levels(tmp_path / "laughs.ckpt")
    data = write_images(tmp_path / "pets", per_class=1, size=(24, 24))
    proc = _run([sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data", str(data),
                 "--backbone", "mobilenet", "--input-size", "32", "--weights", str(weights),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: ") and "laughs.ckpt" in lines[0]
    assert "two places" in lines[0]
    assert not list((tmp_path / "cache").glob("*.h5"))


@pytest.mark.parametrize("make, words", [
    (hostile_pickles.declared_arrays, "declares an array"),
    (hostile_pickles.shared_data, "more than the file holds"),
])
def test_declared_arrays_are_refused_before_they_are_allocated(tmp_path, make, words):
    """tracemalloc sees numpy's allocations, touched or not: the refusal must come first."""
    weights = make(tmp_path / "bomb.ckpt")
    script = f"""
import tracemalloc
from pipeline.errors import WeightsError
from pipeline.extract.backbones.pickled_weights import read_flax_variables
tracemalloc.start()
try:
    read_flax_variables({str(weights)!r})
    print("read")
except WeightsError as exc:
    print("refused:", exc)
print("peak_mb", tracemalloc.get_traced_memory()[1] / 2**20)
"""
    proc = _run([sys.executable, "-c", script])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip().splitlines()
    assert out[0].startswith("refused:") and "bomb.ckpt" in out[0] and words in out[0], out
    assert float(out[-1].split()[1]) < ALLOCATION_BOUND_MB, out
