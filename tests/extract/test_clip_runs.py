"""Clip extraction runs: what the summary counts, which settings are keyed or refused, and the
journal over multi-clip videos (parts published mid-file, a SIGKILL then a re-run)."""

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.extract.run import run_extraction
from test_clips import clip_data, tiny_clip_backbone  # noqa: F401  (fixtures)


def _run(data, backbone, cache, **options):
    opts = {"data": str(data), **backbone, "layer": "pooled", "pooling": "avg",
            "batch_size": 3, "workers": 2, "dtype": "float32", "cache_dir": str(cache)}
    opts.update(options)
    return run_extraction(opts, progress=False, echo=lambda *a: None)


def test_summary_counts_files_and_clips(clip_data, tiny_clip_backbone, tmp_path):
    result = _run(clip_data, tiny_clip_backbone, tmp_path)
    # sixteen.gif 1 clip, video.mp4 (40 frames, stride 8) 4, five.gif 1, forty.gif 4, frames 1
    assert result.n_inputs == 11 and result.kind == "clip"
    line = result.summary()
    assert line.startswith("extracted 7 files, 11 clips in ") and " clips/s" in line, line
    assert "store holds 5 rows from 7 files, 2 failures recorded" in line


def test_l2_normalize_with_per_clip_rows_is_refused(clip_data, tiny_clip_backbone, tmp_path):
    with pytest.raises(ConfigError, match="--l2-normalize.*--aggregate per_clip"):
        _run(clip_data, tiny_clip_backbone, tmp_path, aggregate="per_clip", l2_normalize=True)
    assert not list(tmp_path.glob("*.h5"))


def test_pooling_is_keyed_only_where_it_changes_vectors(tmp_path):
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.run import vector_settings
    from pipeline.extract.sources import create_reader
    from pipeline.store.feature_store import cache_key

    def key(backbone, **kw):
        spec = get_backbone(backbone)
        opts = {"layer": "pooled", "pooling": "avg", "dtype": "float32", **kw}
        reader = create_reader(spec, spec.input_shape, opts)
        return cache_key(vector_settings(opts, spec, reader, "none"))

    assert key("c3d") == key("c3d", pooling="max")  # C3D's pooled is fc6, a vector
    assert key("c3d", layer="fc6") == key("c3d", layer="fc6", pooling="max")
    assert key("resnet50") != key("resnet50", pooling="max")  # a pooled map


def test_sigkill_over_multi_clip_videos_then_rerun_equals_an_uninterrupted_run(tmp_path):
    """Three clips a file and batches of 16: a batch ends on a file boundary only every 16 files,
    so with 8 files parts must be published while videos are spread over batches."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import h5py

    from pipeline.store.feature_store import open_store
    from test_clips import write_gif

    root = Path(__file__).resolve().parents[2]
    for i in range(8):
        write_gif(tmp_path / "data" / ("a" if i % 2 else "b") / f"{i:02d}.gif", 32, size=(40, 30))
    data, cache = tmp_path / "data", tmp_path / "cache"
    args = ["extract", "--data", str(data), "--backbone", "c3d", "--weights", "none",
            "--input-size", "32", "--batch-size", "16", "--aggregate", "per_clip",
            "--cache-dir", str(cache), "--no-progress", "--engine", "tensorflow",
            "--decode", "threads"]
    cmd = [sys.executable, str(root / "run_pipeline.py"), *args]
    env = {**os.environ, "PIPELINE_JOURNAL_ROWS": "2"}
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not list(cache.glob(".*.parts/part-*.h5")):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.02)
        assert list(cache.glob(".*.parts/part-*.h5")), "no part was published mid-run"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(cache.glob("*.h5")), "finished before the kill: test could not interrupt it"
    parts = list(cache.glob(".*.parts/part-*.h5"))
    done_before = {s for p in parts for s in h5py.File(p, "r")["sample_ids"][:]}
    assert 0 < len(done_before) < 8

    rerun = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"extracted {8 - len(done_before)} files, {3 * (8 - len(done_before))} clips" \
        in rerun.stdout
    whole = _run(data, {"backbone": "c3d", "weights": "none"}, tmp_path / "whole",
                 input_size=32, batch_size=16, aggregate="per_clip", layer="pooled")
    with open_store(rerun.stdout.strip().splitlines()[-1]) as a, open_store(whole.path) as b:
        assert list(a.column("ids")) == list(b.column("ids")) and len(a) == 24
        assert np.abs(b.load()[0]).max() > 0.01
        np.testing.assert_allclose(a.load()[0], b.load()[0], atol=1e-6)
