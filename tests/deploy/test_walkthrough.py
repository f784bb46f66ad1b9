"""The README's quick start, re-run as written as far as it runs offline, and `--help` as a
user reads it.

The commands are read from README.md itself (the block that starts with `extract --data
photos/`), so the README cannot drift from what works. Offline and fast substitutions only:
`--weights imagenet` becomes `--weights none --input-size 32` (no download), ResNet50 becomes
MobileNet (same code path, a tenth of the weights to build and save), grid-search compares two
families with 3 folds, and the placeholders become the paths the commands printed.
"""

import re
from pathlib import Path

import pytest

from conftest import write_images

README = Path(__file__).resolve().parents[2] / "README.md"


def _walkthrough() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("python run_pipeline.py extract --data photos/")
    block = text[start:text.index("```", start)]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_readme_walkthrough_runs_end_to_end(tmp_path, monkeypatch, capsys):
    from run_pipeline import main

    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "photos", classes=("cat", "dog", "fox"), per_class=8, size=(24, 24))
    write_images(tmp_path / "new_photos", classes=("cat", "dog"), per_class=2, size=(24, 24),
                 seed=1)
    commands = _walkthrough()
    assert [c.split()[2] for c in commands] == ["extract", "fit-head", "grid-search", "predict",
                                                "export"]
    printed = {}
    for command in commands:
        line = command.replace("--weights imagenet", "--weights none --input-size 32")
        line = line.replace("resnet50", "mobilenet")
        line = re.sub(r"cache/photos-mobilenet-pooled-\w+\.h5", printed.get("store", ""), line)
        line = line.replace("cache/runs/<run>", printed.get("run", ""))
        argv = line.split()[2:]
        if argv[0] == "grid-search":
            argv += ["--models", "logistic_regression,knn", "--cv", "3"]
        if argv[0] != "export":
            argv.append("--no-progress")
        code = main(argv)
        out = capsys.readouterr().out.strip().splitlines()
        assert code == 0, line
        last = Path(out[-1])
        assert last.exists(), (line, out[-3:])
        printed.update({"extract": {"store": str(last)}, "fit-head": {"run": str(last)}}.get(
            argv[0], {}))
    assert last.name == "model.keras" and last.with_name("model.keras.json").is_file()
    assert (Path(printed["run"]) / "predictions-new_photos-accuracy.json").is_file()


@pytest.mark.parametrize("command, shown", [
    ("fit-head", "[default: chosen by cross-validation, see docs/fit-head.md; 256 when"),
    ("extract", "[default: 32]"),
    ("demo", "[default: 90.0]"),
    ("fit-head", "[default: chosen; on when other head options are given]"),
    ("fit-head", "[default: --no-batch-norm]")])
def test_help_shows_defaults_as_a_user_types_them(command, shown, capsys):
    from run_pipeline import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert done.value.code == 0 and shown in out
    assert not re.search(r"\[default: \(", out)  # never a Python tuple


def test_the_readme_gives_the_demo_duration_from_its_benchmark_row():
    """The README's demo time is the last row of benchmarks/results/demo_duration.csv, with the
    load it was measured under."""
    import csv

    rows = list(csv.DictReader((README.parent / "benchmarks" / "results" /
                                "demo_duration.csv").open(encoding="utf-8")))
    last = rows[-1]
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert (f"{last['wall_s']} s wall and {last['cpu_s']} CPU-seconds on {last['cores']} cores, "
            f"load {last['load_before']} before and {last['load_after']} after") in text
