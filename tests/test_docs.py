"""The user's documentation and the package: a short README, generated reference pages that
cannot go stale, a docs site whose nav holds every page, and `featcache --version`.

Generated pages are compared with what their generator makes from the code now, so a new or
changed Option row (or a new benchmark row) fails here until the page is regenerated.
"""

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Words that tell how the project was made rather than how it behaves.
HISTORY = re.compile(r"\bseeds?\s+\d{3}\b|\bseed's\b|\bissue\s+\d+|\bengineers?\b|"
                     r"\bprevious wave\b", re.IGNORECASE)


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _user_pages():
    return [README, ROOT / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]


def test_readme_is_short_and_keeps_the_two_setup_commands_first():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 10 * 1024
    first_block = text[text.index("```bash"):text.index("```", text.index("```bash") + 3)]
    assert first_block.splitlines()[1:3] == [
        "pip install -r requirements.txt && python run_pipeline.py demo",
        "pip install -r requirements.txt -r requirements-dev.txt -r requirements-cluster.txt "
        "&& python -m pytest -q"]


def test_ci_runs_the_readme_test_command_and_the_strict_site_build():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m pip install -q -r requirements.txt -r requirements-dev.txt " \
           "-r requirements-cluster.txt" in ci
    assert "\npython3 -m pytest -q\n" in ci and "mkdocs build --strict" in ci


@pytest.mark.parametrize("page", _user_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_user_pages_describe_behaviour_not_history(page):
    hits = [line for line in page.read_text(encoding="utf-8").splitlines() if HISTORY.search(line)]
    assert not hits, hits[:3]


def test_cli_reference_is_current():
    cli_reference = _tool("cli_reference")
    assert cli_reference.main(["--check"]) == 0, "run: python tools/cli_reference.py"


def test_cli_reference_check_fails_on_a_stale_page(tmp_path, monkeypatch, capsys):
    from pipeline.config import Option
    from pipeline.demo import DemoConfig

    cli_reference = _tool("cli_reference")
    page = tmp_path / "cli.md"
    assert cli_reference.main(["--page", str(page)]) == 0
    assert cli_reference.main(["--check", "--page", str(page)]) == 0
    # A new Option row in a command's table: the page written before it is now stale.
    monkeypatch.setattr(DemoConfig, "OPTIONS", DemoConfig.OPTIONS + (
        Option("frames_per_digit", int, 3, "a new option's help", minimum=1),))
    assert "| `--frames-per-digit` | int | `3` | at least 1 | a new option's help |" in \
        cli_reference.render()
    assert cli_reference.main(["--check", "--page", str(page)]) == 1
    assert "python tools/cli_reference.py" in capsys.readouterr().err


def test_api_reference_is_current_and_fails_when_a_signature_changes(tmp_path, monkeypatch):
    api_reference = _tool("api_reference")
    assert api_reference.main(["--check"]) == 0, "run: python tools/api_reference.py"
    page = tmp_path / "api.md"
    assert api_reference.main(["--page", str(page)]) == 0
    import featcache

    def fit_head(store, config=None, /, *, new_setting=1, **options):
        """Trains a dense Keras head."""
    monkeypatch.setattr(featcache, "fit_head", fit_head)
    assert "new_setting=1" in api_reference.render()
    assert api_reference.main(["--check", "--page", str(page)]) == 1


def test_cli_reference_lists_every_flag_of_every_command():
    from run_pipeline import build_parser

    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert f"## `{name}`" in text
        for action in sub._actions:
            flags = [f for f in action.option_strings if f.startswith("--") and
                     f not in ("--help", "--config") and not f.startswith("--no-")]
            for flag in flags[:1]:
                assert f"`{flag}`" in text, (name, flag)


def test_benchmarks_page_is_current_and_shows_each_rows_machine():
    benchmarks_page = _tool("benchmarks_page")
    assert benchmarks_page.main(["--check"]) == 0, "run: python tools/benchmarks_page.py"
    for csv_file in (ROOT / "benchmarks" / "results").glob("*.csv"):
        header = csv_file.read_text(encoding="utf-8").splitlines()[0].split(",")
        assert {"date", "machine", "cores", "load_before", "load_after", "command"} <= set(header)


def test_benchmarks_page_check_fails_when_a_row_is_added(tmp_path):
    benchmarks_page = _tool("benchmarks_page")
    results = tmp_path / "results"
    results.mkdir()
    (results / "demo_duration.csv").write_text("wall_s,machine\n100.0,box\n")
    page = tmp_path / "benchmarks.md"
    assert benchmarks_page.main(["--results", str(results), "--page", str(page)]) == 0
    assert "| 100.0 | box |" in page.read_text()
    with (results / "demo_duration.csv").open("a") as fh:
        fh.write("90.0,box\n")
    assert benchmarks_page.main(["--check", "--results", str(results), "--page", str(page)]) == 1


def test_every_page_is_in_the_site_nav():
    nav_text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w/-]+\.md)\s*$", nav_text, re.MULTILINE))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == listed


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)", text):
        assert (ROOT / target).exists(), target


def test_version_flag_prints_the_package_version(capsys):
    from pipeline import __version__
    from run_pipeline import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.split()[-1] == __version__


def test_package_metadata_reads_the_pins_from_the_requirements_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["featcache"] == "run_pipeline:main"
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    extras = dynamic["optional-dependencies"]
    assert set(extras) >= {"cluster", "export", "dev"}
    for extra in extras.values():
        for name in extra["file"]:
            lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
            # setuptools reads these files as plain requirement lines: no -r includes or options
            assert not [l for l in lines if l.strip().startswith("-")], name
