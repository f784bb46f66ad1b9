"""`run_pipeline.py fit-head`: stage two, a dense Keras head trained on a feature store's vectors."""

from __future__ import annotations

from pipeline.config import add_options
from pipeline.fit.options import FIT_HEAD_OPTIONS, HeadConfig
from pipeline.errors import ConfigError

HELP = "train a dense Keras head on cached vectors; writes a run folder (model, curves, metrics)"


def add_arguments(parser) -> None:
    add_options(parser, FIT_HEAD_OPTIONS)


def run(args) -> str:
    from pipeline.fit.run import fit_head  # lazy: h5py; the CLI starts without it

    config = HeadConfig.from_cli(args)  # defaults < --config file < flags; validated
    if not config.store:
        raise ConfigError("fit-head needs --store STORE (the .h5 path extract printed last), or "
                          "store = \"...\" in the config file")
    _check_keras_names(config)
    return str(fit_head(config.store, config))


def _check_keras_names(config: HeadConfig) -> None:
    """An unknown activation or optimizer is refused before the store is read, not by a
    traceback from inside Keras halfway through building the head."""
    import keras

    checks = (("activation", keras.activations.get, "relu, gelu, tanh"),
              ("optimizer", keras.optimizers.get, "adam, sgd, rmsprop"))
    for key, lookup, examples in checks:
        try:
            lookup(getattr(config, key))
        except (ValueError, TypeError):
            raise ConfigError(f"--{key} {getattr(config, key)!r} is not a Keras {key} name (e.g. "
                              f"{examples}); pass one with --{key} (or {key} = \"...\" in "
                              "[fit_head]).") from None
