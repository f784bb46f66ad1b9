"""The embedded default: scikit-learn's handwritten digits, end to end, offline.

`python run_pipeline.py demo` writes the 1,797 digits (8x8, upscaled) as a PNG folder with a
train/test split, then runs every stage on it: extract -> fit-head -> grid-search -> audit. It
needs no download, so it works on a fresh clone without internet; it says plainly which weights
it used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import Option
from pipeline.settings import settings_class
from pipeline.extract.options import ExtractConfig
from pipeline.audit.options import AuditConfig
from pipeline.audit import run as audit_run
from pipeline.search.options import SearchConfig

DEMO_OPTIONS = (
    Option("backbone", str, "resnet50", "backbone to extract with", metavar="NAME"),
    Option("weights", str, "none", "none (random, offline), imagenet, or a weights file",
           metavar="none|imagenet|FILE"),
    Option("input_size", int, 32, "input size of the backbone", metavar="PIXELS",
           minimum=1),
    Option("cache_dir", str, "cache", "where the digits, the store and the runs go", metavar="DIR"),
    Option("out", str, None, "the folder that receives run folders (each run adds a new one) "
           "[default: CACHE_DIR/runs]", metavar="DIR"),
    Option("time_budget", float, 90.0, "seconds the grid-search may take",
           minimum=0.0),
    Option("progress", bool, True, "show progress bars"),
)

# The typed, frozen settings of `demo` (pipeline/settings.py).
DemoConfig = settings_class("DemoConfig", DEMO_OPTIONS, section="demo", command="demo")


def write_digits_folder(root: Path, size: int = 32, test_fraction: float = 0.25,
                        seed: int = 0) -> Path:
    """Writes the digits as root/{train,test}/<digit>/<index>.png (idempotent)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    marker = root / ".complete"
    if marker.exists():
        return root
    idx_train, idx_test = train_test_split(np.arange(len(digits.target)), test_size=test_fraction,
                                           stratify=digits.target, random_state=seed)
    for split, indices in (("train", idx_train), ("test", idx_test)):
        for i in indices:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] / 16.0 * 255.0).astype(np.uint8)  # 0..16 -> 0..255
            Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BILINEAR).save(
                folder / f"{i:04d}.png")
    marker.write_text("written by pipeline.demo\n")
    return root


def run_demo(options=None, echo=print) -> Path:
    """extract -> fit-head -> grid-search -> audit on the digits; returns the audit folder
    (what came last; the store and the run folders are named on the lines before).

    Args:
        options: a `DemoConfig`, or a mapping of any subset of its options.
    """
    from pipeline.extract.run import run_extraction  # lazy: h5py; the CLI starts without it

    cfg = DemoConfig.from_mapping(options)
    cache = Path(cfg.cache_dir)
    data = write_digits_folder(cache / "demo" / "digits")
    weights = cfg.weights
    if weights == "none":
        echo("demo weights: none -- RANDOM, untrained backbone weights (works offline). "
             "Pass --weights imagenet or --weights FILE for pretrained vectors.")
    else:
        echo(f"demo weights: {weights}")
    echo(f"[1/4] extract: {cfg.backbone} over {data} (1,797 digit images, 32x32)")
    config = ExtractConfig.from_mapping({
        "data": str(data), "backbone": cfg.backbone, "weights": weights,
        "input_size": cfg.input_size, "batch_size": 64, "cache_dir": str(cache),
        "progress": cfg.progress})
    result = run_extraction(config, echo=echo)
    echo(result.summary())
    echo(f"store: {result.path}")
    runs = Path(cfg.out or cache / "runs")
    try:
        from pipeline.fit.run import fit_head  # lazy: h5py
    except ImportError:
        fit_head = None
    if fit_head is not None:
        echo("[2/4] fit-head: dense head on the cached vectors")
        # The learning curve retrains the head three more times: off here, so the demo stays
        # short; fit-head and grid-search draw it by default.
        run_dir = fit_head(result.path, {"epochs": 60, "progress": cfg.progress,
                                         "learning_curve": False},
                           out_dir=runs, echo=echo)
        echo(f"head run: {run_dir}")
    try:
        from pipeline.search.run import run_grid_search  # lazy: h5py
    except ImportError:
        run_grid_search = None
    if run_grid_search is not None:
        echo("[3/4] grid-search: classifiers compared on the same cache")

        search = SearchConfig.from_mapping({"time_budget": cfg.time_budget,
                                            "progress": cfg.progress, "learning_curve": False})
        echo(f"search run: {run_grid_search(result.path, search, out_dir=runs, echo=echo)}")

    echo("[4/4] audit: leaks across splits, suspected label errors, outliers of the store")
    # The map by PCA: UMAP's first run compiles for a minute or more, longer than the demo's
    # whole audit (`audit --map umap` draws it on any store).
    audit = audit_run.run_audit(result.path, AuditConfig.from_mapping({"map": "pca",
                                                                       "progress": cfg.progress}),
                                echo=echo)
    echo(f"audit report: {audit / 'report.html'}")
    return Path(audit)
