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
    assert line.startswith("extracted 7 files, 11 clips in ") and " clips/s)" in line, line
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
        return cache_key(vector_settings(opts, spec, reader, "none", tmp_path))

    assert key("c3d") == key("c3d", pooling="max")  # C3D's pooled is fc6, a vector
    assert key("c3d", layer="fc6") == key("c3d", layer="fc6", pooling="max")
    assert key("resnet50") != key("resnet50", pooling="max")  # a pooled map
