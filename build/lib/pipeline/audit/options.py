"""The audit's options: every `audit` flag and `[audit]` TOML key, with its default."""

from __future__ import annotations

from pipeline.config import Option
from pipeline.errors import ConfigError
from pipeline.settings import Settings, settings_class

# Cosine distance on mean-centred vectors at or under which two rows count as near-duplicates.
# Calibrated on flowers5 with the shared MobileNet weights (tests/audit/test_audit_flowers.py):
# 40 photos resized to 90% and re-encoded at JPEG quality 70 sat at median 0.068 from their
# originals (38 of 40 under 0.15, the farthest at 0.19), while the nearest other photo of a row
# was at >= 0.245 for 99% of rows (the closest pair of different photos: 0.134).
DEFAULT_THRESHOLD = 0.15

AUDIT_OPTIONS = (
    Option("store", str, None, "feature store (.h5) made by extract", metavar="STORE"),
    Option("run_dir", str, None, "grid-search run folder whose best scikit-learn model, "
           "cross-validated, gives the label-issue probabilities [default: logistic regression]",
           metavar="RUN_DIR", aliases=("--run",)),
    Option("out", str, None, "audit folder to write [default: STORE without .h5 + .audit, "
           "where fit-head and grid-search look for it]", metavar="DIR"),
    Option("threshold", float, DEFAULT_THRESHOLD, "cosine distance (mean-centred vectors) at or "
           "under which two rows are near-duplicates"),
    Option("l2_normalize", bool, False, "L2-normalise each vector before mean-centring"),
    Option("neighbours", int, 5, "k of the k-nearest-neighbour outlier score"),
    Option("folds", int, 5, "cross-validation folds of the label-issue probabilities"),
    Option("seed", int, 0, "seed of the folds and of the split made for a store without splits"),
    Option("shown", int, 60, "most rows of each table shown in report.html (the CSVs hold all)"),
    Option("memory_limit_mb", int, 2048, "above this the prepared vectors go to a memory-mapped "
           "scratch file"),
)



class _AuditRules(Settings):
    """The audit's rules across options, checked wherever its settings are built."""

    def validate(self) -> None:
        if not 0.0 < self.threshold <= 2.0:
            raise ConfigError(f"threshold is a cosine distance between 0 and 2; received: "
                              f"{self.threshold}")
        if self.neighbours < 1 or self.folds < 2 or self.shown < 1:
            raise ConfigError(f"neighbours and shown must be at least 1 and folds at least 2; "
                              f"received: neighbours={self.neighbours}, folds={self.folds}, "
                              f"shown={self.shown}")


# The typed, frozen settings of `audit`, one field per option above (pipeline/settings.py).
AuditConfig = settings_class("AuditConfig", AUDIT_OPTIONS, section="audit", command="audit",
                             base=_AuditRules)
