"""The demo asks each stage for what a first run needs, and no more: no learning curves (they
retrain the head three or four more times), the stages in order, on the digits it wrote."""

from pathlib import Path

import pipeline.audit.run as audit_run
import pipeline.extract.run as extract_run
import pipeline.fit.run as fit_run
import pipeline.search.run as search_run
from pipeline.demo import run_demo
from pipeline.fit.options import HeadConfig
from pipeline.search.options import SearchConfig


def test_demo_draws_no_learning_curve_and_prints_the_audit_last(tmp_path, monkeypatch):
    asked = {}
    store = tmp_path / "digits-resnet50-pooled-0123456789.h5"

    class Extracted:
        path = store

        def summary(self):
            return "extracted"

    def extraction(config, echo=print):
        asked["extract"] = config
        return Extracted()

    def fit(path, options, out_dir=None, echo=print):
        asked["fit-head"] = HeadConfig.from_mapping(options)
        return tmp_path / "runs" / "head"

    def search(path, config, out_dir=None, echo=print):
        asked["grid-search"] = SearchConfig.from_mapping(config)
        return tmp_path / "runs" / "search"

    def audit(path, config, echo=print):
        asked["audit"] = path
        return tmp_path / "audit"

    # The stages are replaced by recorders: this test is about what the demo asks of them.
    monkeypatch.setattr(extract_run, "run_extraction", extraction)
    monkeypatch.setattr(fit_run, "fit_head", fit)
    monkeypatch.setattr(search_run, "run_grid_search", search)
    monkeypatch.setattr(audit_run, "run_audit", audit)
    lines = []
    last = run_demo({"cache_dir": str(tmp_path / "cache"), "progress": False},
                    echo=lambda *a: lines.append(" ".join(map(str, a))))

    assert list(asked) == ["extract", "fit-head", "grid-search", "audit"]
    assert asked["fit-head"].learning_curve is False
    assert asked["grid-search"].learning_curve is False
    assert Path(asked["extract"].data).is_dir() and asked["audit"] == store
    # The audit runs last, so its folder is what the demo prints last; the runs before it
    # are still named on their own lines.
    assert last == tmp_path / "audit"
    assert any(line.endswith(str(tmp_path / "runs" / "search")) for line in lines)
    assert any(line.endswith(str(tmp_path / "runs" / "head")) for line in lines)
