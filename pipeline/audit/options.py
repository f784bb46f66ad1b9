"""The audit's options: every `audit` flag and `[audit]` TOML key, with its default."""

from __future__ import annotations

from pipeline.audit.engines import AUTO_EXACT_ROWS, ENGINES, neighbour_engine
from pipeline.audit.threshold import DEFAULT_THRESHOLD
from pipeline.config import Option
from pipeline.errors import ConfigError
from pipeline.settings import Settings, settings_class



def threshold_value(value):
    """`auto` (the store's own rule, pipeline/audit/threshold.py) or a cosine distance."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool):
        raise TypeError
    return float(value)


threshold_value.__name__ = "auto or a number"  # shown in ConfigError messages

AUDIT_OPTIONS = (
    Option("store", str, None, "feature store (.h5) made by extract", metavar="STORE"),
    Option("run_dir", str, None, "grid-search run folder whose best scikit-learn model, "
           "cross-validated, gives the label-issue probabilities [default: logistic regression]",
           metavar="RUN_DIR", aliases=("--run",)),
    Option("out", str, None, "the audit folder itself, replaced whole by each audit, so it "
           "must be new, empty or written by an earlier audit [default: STORE without .h5 + "
           ".audit, where fit-head and grid-search look for it]", metavar="DIR"),
    Option("threshold", threshold_value, "auto", "cosine distance (mean-centred vectors) at or "
           "under which two rows are near-duplicates; auto reads it from the store's own "
           f"neighbour distances (never below {DEFAULT_THRESHOLD:g}, the calibrated default)",
           metavar="auto|DISTANCE", minimum=0.0, open_minimum=True, maximum=2.0),
    Option("l2_normalize", bool, False, "L2-normalise each vector before mean-centring"),
    Option("neighbours", int, 5, "k of the k-nearest-neighbour outlier score", minimum=1),
    Option("graph_neighbours", int, 10, "neighbours kept per row in the neighbour graph that "
           "every check reads (a row with more near-duplicates than this is searched further "
           "for its pairs); at least --neighbours is kept", minimum=1),
    Option("neighbours_engine", str, "auto", "how the neighbour graph is found: exact (block "
           "scan, N^2 cost), ivf (faiss IVF on PCA-reduced vectors), hnsw (faiss HNSW); the "
           "candidates of ivf and hnsw are re-scored exactly; auto: exact up to "
           f"{AUTO_EXACT_ROWS:,} rows, ivf above", choices=tuple(ENGINES)),
    Option("pca_width", int, 0, "ivf and hnsw: reduce the index's vectors to this many PCA "
           "components (0: the engine's default, ivf 128, hnsw none); candidates are still "
           "re-scored on the full vectors", minimum=0),
    Option("cluster", str, None, "search the neighbour graph in shards on a Ray cluster's "
           "tasks (everything else runs here)", choices=("ray",)),
    Option("ray_address", str, None, "Ray cluster to join, e.g. ray://HEAD:10001 [default: "
           "$RAY_ADDRESS, else a local one is started]", metavar="ADDRESS"),
    Option("map", str, "auto", "the 2-D map in report.html: UMAP where umap-learn is "
           "installed (auto), umap, pca, or none", choices=("auto", "umap", "pca", "none")),
    Option("folds", int, 5, "cross-validation folds of the label-issue probabilities",
           minimum=2),
    Option("seed", int, 0, "seed of the folds and of the split made for a store without splits",
           minimum=0, maximum=2**32 - 1),
    Option("shown", int, 60, "most rows of each table shown in report.html (the CSVs hold all)",
           minimum=1),
    Option("progress", bool, True, "show a progress bar (with an ETA) of each pass over the "
           "vectors on a terminal"),
    Option("memory_limit_mb", int, 2048, "above this the store's vectors are kept in a scratch "
           "file beside --out and read back in blocks, not held in memory", minimum=0),
)



class _AuditRules(Settings):
    """The audit's rules across options, checked wherever its settings are built."""

    # One option's type and range are checked by its Option (pipeline/config.py).

    def validate(self) -> None:
        if self.pca_width and not neighbour_engine(self.neighbours_engine).uses_pca:
            raise ConfigError(f"--pca-width reduces the vectors of an approximate index; "
                              f"--neighbours-engine {self.neighbours_engine} compares the full "
                              "vectors. Use --neighbours-engine ivf, hnsw or auto, or drop "
                              "--pca-width")
        if self.ray_address and self.cluster != "ray":
            raise ConfigError("--ray-address names the Ray cluster of --cluster ray; add "
                              "--cluster ray, or drop --ray-address")

    @property
    def graph_k(self) -> int:
        """Neighbours the graph keeps per row: enough for the outlier score too."""
        return max(self.graph_neighbours, self.neighbours)


# The typed, frozen settings of `audit`, one field per option above (pipeline/settings.py).
AuditConfig = settings_class("AuditConfig", AUDIT_OPTIONS, section="audit", command="audit",
                             base=_AuditRules)
