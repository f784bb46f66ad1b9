"""Real ImageNet weights on real photos (slow; needs ../shared): the vectors carry the signal."""

from pathlib import Path

import pytest

from tests.conftest import FLOWERS, MOBILENET_WEIGHTS, needs_shared

CACHE = Path(__file__).resolve().parents[1] / "cache"  # re-runs are cache hits


def _linear_probe_accuracy(weights: str) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from pipeline.extract.run import run_extraction
    from pipeline.store.feature_store import open_store

    result = run_extraction({"data": str(FLOWERS), "backbone": "mobilenet", "weights": weights,
                             "layer": "pooled", "pooling": "avg", "resize": "squash",
                             "batch_size": 32, "dtype": "float32", "cache_dir": str(CACHE)},
                            progress=False)
    with open_store(result.path) as store:
        X, y = store.load()
    assert len(y) == 4317
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    return LogisticRegression(max_iter=3000).fit(X_tr, y_tr).score(X_te, y_te)


@pytest.mark.slow
@needs_shared(FLOWERS, MOBILENET_WEIGHTS)
def test_pretrained_vectors_beat_random_ones_on_flowers5():
    pretrained = _linear_probe_accuracy(str(MOBILENET_WEIGHTS))
    random = _linear_probe_accuracy("none")
    print(f"flowers5 linear probe: pretrained {pretrained:.3f}, random weights {random:.3f}")
    assert pretrained >= 0.62
    assert pretrained - random >= 0.2
