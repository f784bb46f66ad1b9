"""The closing summary states the steady rate beside the whole-command rate."""

from pathlib import Path

from pipeline.extract.run import ExtractResult


def test_summary_states_steady_rate_after_the_first_batch():
    result = ExtractResult(Path("s.h5"), 64, 64, 64, 0, 8.0, False, steady_rate=12.345,
                           n_inputs=64)
    text = result.summary()
    assert "extracted 64 files in 8.0s (8.0 images/s, steady 12.3/s)" in text


def test_summary_omits_steady_rate_when_one_batch_held_everything():
    result = ExtractResult(Path("s.h5"), 4, 4, 4, 0, 2.0, False, steady_rate=0.0, n_inputs=4)
    assert "steady" not in result.summary() and "(2.0 images/s)" in result.summary()
