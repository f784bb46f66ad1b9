"""Stage one's settings: a library call with a few keys gets the CLI's defaults and store;
rules across options are checked once, where the settings are built."""

import os

import numpy as np
import pytest

import run_pipeline
from pipeline.errors import ConfigError
from pipeline.extract.options import ExtractConfig
from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store
from tests.conftest import write_images


def test_a_library_call_with_three_keys_makes_the_cli_store(tmp_path, monkeypatch, capsys):
    data = write_images(tmp_path / "data", per_class=2, size=(32, 32))
    (tmp_path / "lib").mkdir()
    (tmp_path / "cli").mkdir()
    monkeypatch.chdir(tmp_path / "lib")
    store = run_extraction({"data": str(data), "backbone": "mobilenet", "weights": "none"},
                           echo=lambda *_: None)
    assert os.fspath(store) == str(store.path) == str(store)  # path-like: the store
    monkeypatch.chdir(tmp_path / "cli")
    assert run_pipeline.main(["extract", "--data", str(data), "--backbone", "mobilenet",
                              "--weights", "none", "--no-progress"]) == 0
    cli_path = capsys.readouterr().out.strip().splitlines()[-1]
    assert cli_path == str(store.path)  # cache/<name>: the same cache key
    with open_store(tmp_path / "lib" / store.path) as lib, \
            open_store(tmp_path / "cli" / cli_path) as cli:
        assert lib.key == cli.key and list(lib.column("ids")) == list(cli.column("ids"))
        np.testing.assert_allclose(lib.load()[0], cli.load()[0], atol=1e-5, rtol=0)


def test_rules_across_options_are_checked_when_the_settings_are_built():
    with pytest.raises(ConfigError, match="int8 runs on --engine openvino"):
        ExtractConfig.from_mapping({"precision": "int8", "engine": "tensorflow"})
    with pytest.raises(ConfigError, match="--l2-normalize.*per_clip"):
        ExtractConfig.from_mapping({"aggregate": "per_clip", "l2_normalize": True})
    with pytest.raises(ConfigError, match="aggregate"):
        ExtractConfig.from_mapping({"aggregate": "median"})
    with pytest.raises(ConfigError, match="unknown extract option"):
        run_extraction({"data": "x", "layr": "pooled"})


def test_settings_travel_as_a_dict_and_come_back_equal():
    config = ExtractConfig.from_mapping({"data": "d", "plugin": "a.b, c", "input_size": 32})
    assert config.plugin == ("a.b", "c")
    assert ExtractConfig.from_mapping(config.as_dict()) == config
