"""Temperature scaling stays inside sane bounds and is skipped when nothing can fit it."""

import numpy as np
import pytest


def test_all_correct_rows_cannot_fit_a_temperature():
    from pipeline.evaluation.calibration import fit_temperature_or_reason

    labels = np.arange(30) % 2
    probs = np.where(np.eye(2)[labels] == 1, 0.9, 0.1)  # 30 rows, all correct
    temperature, reason = fit_temperature_or_reason(probs, labels)
    assert temperature is None and "no misclassified" in reason


def test_too_few_rows_cannot_fit_a_temperature():
    from pipeline.evaluation.calibration import MIN_CALIBRATION_ROWS, fit_temperature_or_reason

    labels = np.arange(MIN_CALIBRATION_ROWS - 1) % 2
    probs = np.full((len(labels), 2), 0.5)
    probs[0] = [0.2, 0.8]  # one mistake
    temperature, reason = fit_temperature_or_reason(probs, labels)
    assert temperature is None and f"{len(labels)} rows" in reason


def test_the_temperature_is_bounded_so_unseen_rows_keep_their_doubt():
    from pipeline.evaluation.calibration import (TEMPERATURE_BOUNDS, apply_temperature,
                                                 fit_temperature)

    labels = np.arange(40) % 2
    probs = np.where(np.eye(2)[labels] == 1, 0.6, 0.4)
    probs[0] = [0.45, 0.55]  # one near-miss: NLL alone would sharpen almost without limit
    t = fit_temperature(probs, labels)
    assert t == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-3)
    unseen = apply_temperature(np.array([[0.75, 0.25]]), t)
    assert 0.9 < unseen[0, 0] < 0.9999  # sharper, but not 1.000000
    assert TEMPERATURE_BOUNDS[0] >= 0.2 and TEMPERATURE_BOUNDS[1] <= 20
