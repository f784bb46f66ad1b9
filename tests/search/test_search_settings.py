"""grid-search's and the audit's typed settings: the CLI, a TOML file and a library call build the
same frozen `SearchConfig` / `AuditConfig`, with the same defaults and the same rules."""

import json

import numpy as np
import pytest

import run_pipeline
from pipeline.audit.options import AuditConfig
from pipeline.audit.run import run_audit
from pipeline.errors import ConfigError
from pipeline.search.options import SearchConfig
from pipeline.search.run import run_grid_search
from pipeline.store.feature_store import write_store

LOGREG_GRID = '[models.logistic_regression]\npreprocess = ["standardize"]\nparams = { C = [1.0] }\n'


def small_store(path, n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, 6)) + y[:, None]
    return write_store(path, X.astype(np.float32), y, class_names=["a", "b"])


def test_search_config_from_a_toml_file_with_its_own_grid(tmp_path):
    config = tmp_path / "search.toml"
    config.write_text("[grid_search]\ncv = 3\ntop_k = 1\n" + LOGREG_GRID, encoding="utf-8")
    cfg = SearchConfig.from_mapping({"config": str(config), "n_jobs": 1})
    assert (cfg.cv, cfg.top_k, cfg.n_jobs, cfg.scoring) == (3, 1, 1, "accuracy")
    assert cfg.config_file == str(config) and cfg.grid_file == str(config)
    assert SearchConfig.from_mapping(cfg) is cfg  # a config object passes through unchanged
    assert SearchConfig.from_mapping({}).grid_file is None  # the default grid
    run_dir = run_grid_search(small_store(tmp_path / "s.h5"),
                              cfg.replace(progress=False, learning_curve=False),
                              out_dir=tmp_path / "runs", echo=lambda *_: None)
    folds = json.loads((run_dir / "folds.json").read_text())
    assert len(folds["folds"]) == 3
    saved = (run_dir / "config.toml").read_text()
    assert "cv = 3" in saved and str(config) in saved  # the grid that ran is recorded


@pytest.mark.parametrize("given, message", [
    ({"cv": 1}, "cv must be at least 2"),
    ({"top_k": 0}, "top_k must be at least 1"),
    ({"time_budget": -1}, "time_budget must be at least 0"),
    ({"scoring": "roc"}, "scoring"),
    ({"folds_k": 3}, "unknown grid-search option"),
])
def test_search_rules_hold_for_library_calls(given, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig.from_mapping(given)


def test_search_rules_hold_on_the_command_line(tmp_path, capsys):
    code = run_pipeline.main(["grid-search", "--store", str(small_store(tmp_path / "c.h5")),
                              "--cv", "1", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cv must be at least 2") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_audit_takes_its_config_object_or_any_subset(tmp_path):
    store = small_store(tmp_path / "a.h5")
    cfg = AuditConfig.from_mapping({"folds": 3, "neighbours": 2})
    folder = run_audit(store, cfg, out_dir=tmp_path / "audit", echo=lambda *_: None)
    summary = json.loads((folder / "summary.json").read_text())
    assert "3-fold" in summary["label_issues_from"]
    assert summary["thresholds"]["outlier_score"].startswith("mean cosine distance to the 2 ")
    for bad, message in (({"threshold": 3.0}, r"threshold must be in \(0, 2\]"),
                         ({"folds": 1}, "folds must be at least 2")):
        with pytest.raises(ConfigError, match=message):
            run_audit(store, bad, out_dir=tmp_path / "bad", echo=lambda *_: None)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="AuditConfig expected"):
        run_audit(store, SearchConfig.from_mapping({}), out_dir=tmp_path / "bad")
