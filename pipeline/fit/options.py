"""Stage two's options: every `fit-head` flag and `[fit_head]` TOML key, with its default.

`HeadConfig` is the typed, frozen settings class generated from this table: the one list of
fit-head defaults, read by the CLI, the TOML file, `fit_head(...)`, `build_head(...)` and the
grid-search Keras estimator alike.

    config = HeadConfig.from_mapping({"epochs": 50})   # any subset; the rest are defaults
    config.hidden_units, config.learning_rate
"""

from __future__ import annotations

from pipeline.config import Option, integral
from pipeline.errors import ConfigError
from pipeline.settings import Settings, settings_class


def int_list(value) -> tuple:
    """Hidden layer sizes from the CLI ("512,256", "" for none) or TOML ([512, 256], 256)."""
    if isinstance(value, (list, tuple)):
        return tuple(integral(v) for v in value)
    if isinstance(value, (int, float)):
        return (integral(value),)
    text = str(value).strip().strip("[]()")
    return tuple(integral(v) for v in text.replace(" ", "").split(",") if v)


int_list.__name__ = "a list of integers"  # shown in ConfigError messages

FIT_HEAD_OPTIONS = (
    Option("store", str, None, "feature store (.h5) made by extract", metavar="STORE"),
    Option("out", str, "cache/runs", "the folder that receives run folders: each run adds a new, uniquely named "
           "run folder inside it and never replaces anything there (created if missing)", metavar="DIR"),
    # The head. Left unset, these are chosen by cross-validation on the training rows (the
    # head's form, its L2 penalty and its input scaling); any one of them given (flag or TOML
    # key) trains exactly the head they describe, the unset ones taking FIXED_HEAD's values.
    Option("hidden_units", int_list, None, "hidden layer sizes, comma separated; \"\" for a "
           "linear head [default: chosen by cross-validation, see docs/fit-head.md; 256 when "
           "other head options are given]", metavar="N[,N...]", minimum=1, maximum=1_000_000),
    Option("standardize", bool, None, "scale inputs by the training vectors' mean and variance "
           "(a Normalization layer inside the head) [default: chosen; on when other head "
           "options are given]"),
    Option("l2_normalize", bool, None, "scale each input vector to unit length (a "
           "UnitNormalization layer inside the head, after --standardize) [default: chosen; "
           "off when other head options are given]"),
    Option("dropout", float, None, "dropout after each hidden layer [default: 0.5]",
           minimum=0.0, maximum=1.0, open_maximum=True),
    Option("l2", float, None, "L2 penalty on the hidden and output kernels (for a linear head "
           "1 / (2 C n): logistic regression's C on n training rows) [default: chosen; 0.03 "
           "when other head options are given]", minimum=0.0),
    Option("feature_noise", float, None, "training only: Gaussian noise of this standard "
           "deviation added to each (standardised) input vector, a pointwise feature "
           "augmentation [default: 0 = off]", minimum=0.0),
    Option("feature_dropout", float, None, "training only: dropout on the input vector's "
           "entries [default: 0 = off]", minimum=0.0, maximum=1.0, open_maximum=True),
    Option("train_views", int, None, "augmented views per training file to train on, from a "
           "store made with extract --views [default: all it holds; 0: the plain rows only]; "
           "validation, calibration and test rows are always plain", minimum=0),
    Option("batch_norm", bool, None, "BatchNormalization after each hidden layer [default: "
           "--no-batch-norm]"),
    Option("activation", str, None, "hidden activation [default: relu]", metavar="NAME"),
    Option("solver", str, "auto", "how a linear head (no hidden layer) is fitted: lbfgs solves "
           "its penalised loss exactly (it is logistic regression) on every non-test row "
           "outside the calibration share; adam takes gradient steps with early stopping on "
           "the validation rows; auto: lbfgs for a chosen head, adam for a head given by "
           "options", choices=("auto", "lbfgs", "adam")),
    Option("spatial", str, "flatten", "how a pool5 map becomes a vector inside the head",
           choices=("flatten", "avg", "max")),
    Option("output", str, "auto", "output layer: auto picks 1 sigmoid unit for 2 classes, "
           "a K-unit softmax for K", choices=("auto", "sigmoid", "softmax")),
    Option("loss", str, "auto", "loss; auto follows the output layer",
           choices=("auto", "binary_crossentropy", "categorical_crossentropy",
                    "sparse_categorical_crossentropy")),
    Option("optimizer", str, "adam", "Keras optimizer name", metavar="NAME"),
    Option("learning_rate", float, 1e-3, "initial learning rate (halved on plateaus)",
           minimum=0.0, open_minimum=True),
    Option("batch_size", int, 32, "vectors per training step", minimum=1),
    Option("epochs", int, 100, "most epochs; early stopping ends sooner once val_loss stops "
           "improving by --min-delta (\"usually\", measured on flowers5 MobileNet vectors by "
           "benchmarks/defaults.py: after 36 to 66 epochs on 400 rows, 56 on 4,317)", minimum=1),
    Option("patience", int, 10, "epochs without a val_loss better by --min-delta before "
           "stopping (the best epoch's weights are kept)", minimum=1),
    Option("min_delta", float, 5e-3, "smallest val_loss drop that counts as better, so a loss "
           "creeping down by 1e-4 an epoch does not keep training going", minimum=0.0),
    Option("class_weight", str, "balanced", "weight classes by inverse frequency",
           choices=("balanced", "none")),
    Option("seed", int, 0, "seed of splits, initial weights, dropout and shuffling",
           minimum=0, maximum=2**32 - 1),
    # Validation.
    Option("val_fraction", float, 0.2, "validation share when the store has no val split",
           minimum=0.0, maximum=1.0, open_maximum=True),
    Option("test_fraction", float, 0.2, "when the store has no test split, hold out this share "
           "(stratified, group-aware) as an untouched test split, reported as the honest "
           "score; 0 = none", minimum=0.0, maximum=1.0, open_maximum=True),
    Option("calibration_fraction", float, 0.1, "share of the training rows held out (group-"
           "aware) to fit the temperature that calibrates the probabilities; 0 = no "
           "calibration", minimum=0.0, maximum=1.0, open_maximum=True),
    Option("cv", int, 0, "also run k-fold cross-validation with this k (0 = off); the saved "
           "head still comes from the train/val split", minimum=0),
    # Reading the store.
    Option("stream", str, "auto", "read vectors in batches from the store instead of memory; "
           "auto streams when they exceed --memory-limit-mb", choices=("auto", "always", "never")),
    Option("memory_limit_mb", int, 1024, "largest vector set loaded into memory (auto mode)",
           minimum=0),
    Option("progress", bool, True, "print one line per epoch"),
    # The audit and calibration (pipeline/audit, pipeline/fit/calibration.py).
    Option("exclude_leaks", bool, False, "drop the val/test side of each near-duplicate pair "
           "that `audit` found across the splits (needs a current audit of the store)"),
    Option("groups_from_audit", bool, False, "group the rows by the audit's suggested groups "
           "(suggested_groups.csv: chains of near-duplicates), so splits, folds and the "
           "calibration share never separate them (needs a current audit of the store)"),
    Option("decisions", str, "", "a review's decisions.csv, saved from the audit's report.html: "
           "its rows are dropped, relabelled or grouped for this run (the store is not changed)",
           metavar="FILE"),
    Option("learning_curve", bool, True, "retrain on 10, 25 and 50 percent of the training "
           "rows for learning_curve.csv/png"),
)

# Activations that normalise across units: right for an output layer, wrong for a hidden one.
OUTPUT_ONLY_ACTIVATIONS = ("softmax", "log_softmax", "sparsemax")

# The head a user describes with options: what an unset one means once any one is set (the
# head fit-head trained by default before it chose one, measured in benchmarks/defaults.py).
FIXED_HEAD = {"hidden_units": (256,), "standardize": True, "l2_normalize": False, "l2": 3e-2,
              "dropout": 0.5, "batch_norm": False, "activation": "relu", "feature_noise": 0.0,
              "feature_dropout": 0.0}


def _flag(name: str, value, config_file) -> str:
    text = f"--{name.replace('_', '-')} {value}"
    toml = f'"{value}"' if isinstance(value, str) else value
    return text + (f" ({name} = {toml} in {config_file})" if config_file else "")


class _FitHeadRules(Settings):
    @property
    def chooses_head(self) -> bool:
        """True when no head option is set: fit-head then chooses the head by cross-validation."""
        return all(getattr(self, name) is None for name in FIXED_HEAD)

    def fixed(self, **chosen):
        """These settings with `chosen` (a chosen head's options) set and every head option
        still unset at its FIXED_HEAD value: the head that `build_head` builds."""
        values = {**{name: getattr(self, name) for name in FIXED_HEAD}, **chosen}
        return self.replace(**{name: FIXED_HEAD[name] if value is None else value
                               for name, value in values.items()})

    @property
    def solved_exactly(self) -> bool:
        """Whether a head of these (fixed) settings is fitted by L-BFGS, not by Adam."""
        if self.solver == "adam" or self.hidden_units or self.feature_noise or \
                self.feature_dropout or not self.l2:
            return False
        return self.solver == "lbfgs"

    def validate(self) -> None:
        # One option's type and range are checked by its Option (pipeline/config.py).
        if self.cv == 1:
            raise ConfigError(f"cv must be 0 (off) or at least 2 folds; received: {self.cv}")
        if self.val_fraction == 0.0:
            raise ConfigError("val_fraction must be above 0: early stopping needs validation "
                              f"rows; use {_flag('val_fraction', 0.2, self.config_file)}")
        if self.solver == "lbfgs" and not self.chooses_head and (
                self.hidden_units is None or self.hidden_units or self.feature_noise
                or self.feature_dropout or self.l2 == 0):
            raise ConfigError(
                "solver lbfgs fits a linear head with an L2 penalty exactly; give it one "
                f"(hidden_units = [] and l2 above 0, without feature noise or dropout), or use "
                f"{_flag('solver', 'adam', self.config_file)}")
        if str(self.activation).lower() in OUTPUT_ONLY_ACTIVATIONS:
            raise ConfigError(
                f"{self.activation} normalises across a layer's units, so it belongs to the "
                "output layer (chosen by --output), not to the hidden layers; use "
                f"{_flag('activation', 'relu', self.config_file)} (or gelu, tanh, sigmoid)")


HeadConfig = settings_class(
    "HeadConfig", FIT_HEAD_OPTIONS, "fit_head", "fit-head", base=_FitHeadRules,
    doc="fit-head's settings: the head's hyperparameters, its training and its validation.")
