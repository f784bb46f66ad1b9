"""Augmentation recipes for cached views (`extract --views K --augment RECIPE`).

A recipe is a comma-separated list of steps, applied in this order to the decoded input (an
image, or every frame of a clip alike):

    tjitter=N     clips: shift the clip's frames by up to N frames (edge frames repeat)
    crop=A-B      random resized crop: a box of A..B of the area, aspect 3/4..4/3, resized back
    rotate=D      rotate by up to D degrees either way
    flip          mirror left-right with probability 1/2
    jitter=J      brightness, contrast and saturation each scaled by 1-J..1+J

Each view is drawn once per file from its own generator, seeded by sha256 of (view seed, file
id, view number), and that one draw applies to all of the file's frames, however many chunks
its reader hands them over in: the same file, view and recipe give the same pixels on any
machine and in any order, so a re-run is a cache hit and raising K only adds views.

    recipe = parse_recipe("flip,crop=0.6-1.0")
    pixels = augment_chunks(recipe, chunks, view_rng(0, "daisy/1.jpg", 3))
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

from pipeline.errors import ConfigError

STEPS = ("tjitter", "crop", "rotate", "flip", "jitter")
# A shift beyond a clip's length only repeats its edge frame: as many frames as a clip may hold.
MAX_TJITTER = 1024
EXAMPLE = "flip,crop=0.7-1.0,rotate=10,jitter=0.2 (clips: tjitter=4,crop=0.8-1.0)"


@dataclass(frozen=True)
class Recipe:
    flip: bool = False
    crop: tuple[float, float] | None = None
    rotate: float = 0.0
    jitter: float = 0.0
    tjitter: int = 0

    def canonical(self) -> str:
        """The recipe in one spelling (what keys the view rows)."""
        parts = []
        if self.tjitter:
            parts.append(f"tjitter={self.tjitter}")
        if self.crop:
            parts.append(f"crop={self.crop[0]:g}-{self.crop[1]:g}")
        if self.rotate:
            parts.append(f"rotate={self.rotate:g}")
        if self.flip:
            parts.append("flip")
        if self.jitter:
            parts.append(f"jitter={self.jitter:g}")
        return ",".join(parts)


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"--augment {text!r}: {why}; write steps like {EXAMPLE}")


def parse_recipe(text: str) -> Recipe:
    """The `Recipe` of `--augment` text; a ConfigError naming the step that is wrong."""
    fields: dict = {}
    for step in (s.strip() for s in str(text or "").split(",")):
        if not step:
            continue
        name, _, value = step.partition("=")
        name = name.strip().lower()
        if name not in STEPS:
            raise _bad(text, f"unknown step {name!r} (steps: {', '.join(STEPS)})")
        try:
            if name == "flip":
                if value:
                    raise ValueError
                fields["flip"] = True
            elif name == "crop":
                low, _, high = value.partition("-")
                a, b = float(low), float(high)
                if not 0 < a <= b <= 1:
                    raise _bad(text, "crop=A-B needs 0 < A <= B <= 1 (shares of the area)")
                fields["crop"] = (a, b)
            elif name == "rotate":
                fields["rotate"] = float(value)
                if not 0 <= fields["rotate"] <= 180:
                    raise _bad(text, "rotate=D needs 0 <= D <= 180 degrees")
            elif name == "jitter":
                fields["jitter"] = float(value)
                if not 0 <= fields["jitter"] < 1:
                    raise _bad(text, "jitter=J needs 0 <= J < 1")
            else:
                fields["tjitter"] = int(value)
                if not 0 <= fields["tjitter"] <= MAX_TJITTER:
                    raise _bad(text, f"tjitter=N needs 0 <= N <= {MAX_TJITTER} frames")
        except ValueError:
            raise _bad(text, f"step {step!r} has no valid value") from None
    recipe = Recipe(**fields)
    if not recipe.canonical():
        raise _bad(text, "the recipe has no step")
    return recipe


def view_rng(seed: int, sample_id: str, view: int) -> np.random.Generator:
    """The generator of one view of one file: sha256 of the seed, the file's id and the view."""
    digest = hashlib.sha256(f"{int(seed)}\0{sample_id}\0{int(view)}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _crop_box(rng, width: int, height: int, scale: tuple) -> tuple:
    """A random box of `scale` of the area with aspect 3/4..4/3 (whole image if none fits)."""
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w, h = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return x, y, x + w, y + h
    return 0, 0, width, height


def _draw(recipe: Recipe, rng, width: int, height: int, n_frames: int) -> dict:
    """One view's random choices, drawn once and applied to every frame alike."""
    return {
        "shift": int(rng.integers(-recipe.tjitter, recipe.tjitter + 1)) if recipe.tjitter else 0,
        "box": _crop_box(rng, width, height, recipe.crop) if recipe.crop else None,
        "angle": float(rng.uniform(-recipe.rotate, recipe.rotate)) if recipe.rotate else 0.0,
        "flip": bool(rng.random() < 0.5) if recipe.flip else False,
        "colour": tuple(rng.uniform(1 - recipe.jitter, 1 + recipe.jitter, 3))
        if recipe.jitter else None,
    }


def _frame(pixels: np.ndarray, choice: dict) -> np.ndarray:
    img = Image.fromarray(pixels)
    size = img.size
    if choice["box"]:
        img = img.resize(size, Image.BILINEAR, box=choice["box"])
    if choice["angle"]:
        img = img.rotate(choice["angle"], Image.BILINEAR)
    if choice["flip"]:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if choice["colour"]:
        for enhance, factor in zip((ImageEnhance.Brightness, ImageEnhance.Contrast,
                                    ImageEnhance.Color), choice["colour"]):
            img = enhance(img).enhance(float(factor))
    return np.asarray(img, dtype=np.uint8)


def augment_chunks(recipe: Recipe, chunks: list, rng: np.random.Generator) -> list:
    """One augmented view of one file: its reader's chunks, (k, H, W, 3) images or
    (k, T, H, W, 3) clips, uint8, each the same shape back. The view's choices are drawn once
    and applied to every frame of every chunk alike: a clip split over several chunks is still
    one augmentation."""
    chunks = [np.asarray(chunk) for chunk in chunks]
    if not chunks:
        return []
    clips = chunks[0].ndim == 5
    height, width = chunks[0].shape[-3:-1]
    choice = _draw(recipe, rng, width, height, chunks[0].shape[1] if clips else 1)
    return [_apply(choice, chunk, clips) for chunk in chunks]


def _apply(choice: dict, chunk: np.ndarray, clips: bool) -> np.ndarray:
    frames = chunk if clips else chunk[:, None]
    out = np.empty_like(frames)
    t = frames.shape[1]
    for i, clip in enumerate(frames):
        order = np.clip(np.arange(t) + choice["shift"], 0, t - 1) if clips else [0]
        for j, src in enumerate(order):
            out[i, j] = _frame(clip[src], choice)
    return out if clips else out[:, 0]
