"""`--weights imagenet` offline: refuse before the backbone is built, with where to get files.

Keras downloads ImageNet weights on first use and keeps them in KERAS_HOME/models (by default
~/.keras/models). Without a network the download fails only after the whole backbone has been
built (and, for a native engine, prepared), which takes a minute or more on a small machine.
So once the inputs are checked and the store's path is known, and before any of that,
`refuse_unreachable_imagenet` refuses the run when all three hold:

- the store for these settings does not exist yet (a cache hit needs no weights),
- no weights file for the backbone is in Keras' cache,
- the download host cannot be reached within a few seconds,

and the input size is not one that Keras refuses for ImageNet weights anyway.

Otherwise the run goes on through Keras' own download and cache, unchanged.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from pipeline.config import keras_home
from pipeline.errors import WeightsError

# Where keras.applications downloads its ImageNet weights from.
DOWNLOAD_HOST = "storage.googleapis.com"
# keras.applications refuse ImageNet weights below 32 px (some models need more): such a size is
# left to that check, so the user hears about the size, the problem a file would not fix.
SMALLEST_IMAGENET_INPUT = 32
PROBE_SECONDS = 4.0  # name lookup and connection together; a lookup can hang past a socket timeout
WEIGHTS_PAGE = "docs/weights.md"


def _squashed(text: str) -> str:
    """`mobilenet_v2_1.0_224_no_top.h5` and `MobileNetV2` both contain `mobilenetv2` this way."""
    return "".join(c for c in text.lower() if c.isalnum())


def keras_cache_dir() -> Path:
    return keras_home() / "models"


def cached_weights_file(backbone: str) -> Path | None:
    """A file in Keras' download cache whose name carries the backbone's name, if any."""
    wanted = _squashed(backbone.rsplit("/", 1)[-1])
    folder = keras_cache_dir()
    if not wanted or not folder.is_dir():
        return None
    return next((f for f in sorted(folder.iterdir()) if wanted in _squashed(f.name)), None)


def host_reachable(host: str = "", port: int = 443, seconds: float = PROBE_SECONDS) -> bool:
    """True when a TCP connection to the download host opens within `seconds`."""
    host = host or DOWNLOAD_HOST
    outcome = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=seconds):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    # A thread, because name lookup ignores socket timeouts; a hung lookup is simply left behind.
    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(seconds)
    return bool(outcome and outcome[0])


def refuse_unreachable_imagenet(cfg, store_path: str | Path, spec=None) -> None:
    """Raises WeightsError when `cfg` asks for ImageNet weights that cannot be had (see above).

    Args:
        cfg: the run's ExtractConfig.
        store_path: the store these settings make (when it exists, the run may be a cache hit).
        spec: the run's BackboneSpec; one with a `weights_hint` has no download at all.
    """
    if cfg.weights != "imagenet":
        return
    if spec is not None and spec.weights_hint:
        raise WeightsError(f"{spec.name} has no ImageNet weights to download; "
                           f"{spec.weights_hint}")
    if cfg.input_size is not None and cfg.input_size < SMALLEST_IMAGENET_INPUT:
        return
    if Path(store_path).exists():
        return
    if cached_weights_file(cfg.backbone) is not None or host_reachable():
        return
    raise WeightsError(
        f"--weights imagenet needs Keras' download of the {cfg.backbone} ImageNet weights, and "
        f"{DOWNLOAD_HOST} cannot be reached from here; pass a weights file with --weights FILE "
        f"(where to get one for each backbone: {WEIGHTS_PAGE}), or --weights none for random "
        "weights")
