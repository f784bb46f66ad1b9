"""`BackboneSpec`: everything the pipeline needs to know about one frozen backbone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class BackboneSpec:
    """The data contract of one backbone, so preprocessing is derived from it and never drifts.

    Attributes:
        name: registry key, snake_case (`resnet50`, `vgg19`, `c3d`).
        kind: `image` (one H×W×3 array a sample) or `clip` (T×H×W×3 arrays).
        input_shape: default input shape without the batch axis, e.g. (224, 224, 3).
        preprocess: array (or tensor) of RGB values in [0, 255] -> what the model expects.
        preprocess_name: stable description of `preprocess`, recorded in the store and cache key.
        build: `build(weights, input_shape) -> keras.Model`, the headless trunk; `weights` is
            None or "imagenet" (files are loaded by `pipeline.extract.backbones.weights`).
        layer_aliases: friendly layer names, e.g. {"pool5": "conv5_block3_out"}.
        pooled_from: the layer that `--layer pooled` takes as it is (C3D: fc6, a vector);
            None: the trunk's output map, globally pooled by `--pooling`.
        clip_recipe: for clip backbones, how frames are resized, cropped and mean-subtracted
            (a `sources.ClipRecipe`); the clip reader follows it.
        any_frames: a clip backbone that is convolutional in time (I3D) takes clips of any
            length: `--frames` sets the time axis of its input. False (C3D): its fully
            connected layers fix the clip length to `input_shape[0]`.
        weights_hint: for a backbone with no `--weights imagenet` download, what to pass
            instead; `imagenet` is then refused up front with it.
        notes: one line for `list` and reports.
        own_weights: for a backbone that carries its own weights (a KerasHub preset),
            `own_weights(weights) -> identity`: what `--weights` (imagenet: the backbone's own,
            none: random) stands for in the cache key; None: the usual files and downloads.
        image_resize: how a photo meets the input size when the backbone prescribes it (a
            KerasHub preset's image converter: a `sources.ConverterResize`); None: the
            reader's `--resize` policy.
        identity: more fields of the vector identity this backbone adds (a preset's
            architecture digest and token layout); each one a field of `vector_identity.FIELDS`.
    """

    name: str
    build: Callable[[Any, tuple], Any]
    preprocess: Callable[[Any], Any]
    preprocess_name: str
    input_shape: tuple = (224, 224, 3)
    kind: str = "image"
    layer_aliases: dict = field(default_factory=dict)
    pooled_from: str | None = None
    clip_recipe: Any = None
    any_frames: bool = False
    weights_hint: str = ""
    notes: str = ""
    own_weights: Callable[[str], str] | None = None
    identity: dict = field(default_factory=dict)
    image_resize: Any = None

    @property
    def spatial_rank(self) -> int:
        """2 for images, 3 for clips (time, height, width)."""
        return len(self.input_shape) - 1

    def input_shape_for(self, input_size: int | None, frames: int | None = None) -> tuple:
        """The input shape with its square spatial size replaced (`--input-size`) and, for a
        backbone that takes any clip length, its frames (`--frames`); a fixed-length backbone
        keeps its own, and the clip reader refuses another `--frames`."""
        shape = tuple(self.input_shape)
        if input_size:
            shape = shape[:-3] + (input_size, input_size, shape[-1])
        if frames and self.any_frames and self.spatial_rank == 3:
            shape = (int(frames),) + shape[1:]
        return shape
