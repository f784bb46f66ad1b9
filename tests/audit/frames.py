"""The shape of a new user's first dataset, written with Pillow: a few classes, a few photos
each, and several "frames" of every photo (crops of 80-95% of it with small brightness and
contrast changes), filed in class folders with no groups, so a random split scatters the
frames of one photo over both sides.

    truth = write_frames(root, classes=3, photos=8, frames=10)   # {row id: its photo}
"""

from pathlib import Path

import numpy as np

from planted import HUES


def scene(rng, hue, size: int = 96):
    """A photo of its own: a gradient in a random direction and colour, tinted by the class
    hue, under 6-9 large soft shapes of random colours (distinct photos look distinct)."""
    from PIL import Image, ImageDraw, ImageFilter

    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    base = 0.5 * np.asarray(hue, dtype=float) + 0.5 * rng.uniform(0, 255, 3)
    pixels = base * (0.4 + 0.8 * ramp[..., None])
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(6, 10)):
        x0, y0 = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 4, size // 2, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=colour)
    return img.filter(ImageFilter.GaussianBlur(1.5))


def frame_variants(img, rng, n: int) -> list:
    """`n` frames of one photo: a random crop of 80-95% of each side, brightness and contrast
    each scaled by 0.9-1.1."""
    from PIL import ImageEnhance

    out = []
    width, height = img.size
    for _ in range(n):
        share = rng.uniform(0.80, 0.95)
        w, h = int(width * share), int(height * share)
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        frame = img.crop((x0, y0, x0 + w, y0 + h))
        frame = ImageEnhance.Brightness(frame).enhance(rng.uniform(0.9, 1.1))
        out.append(ImageEnhance.Contrast(frame).enhance(rng.uniform(0.9, 1.1)))
    return out


def write_frames(root: Path, classes: int = 3, photos: int = 8, frames: int = 10, seed: int = 0,
                 size: int = 96, sources=None) -> dict:
    """Writes root/<class>/<photo>_f<k>.jpg and returns {row id: photo name} (the truth).

    `sources` ({class: [PIL images]}) replaces the drawn photos (e.g. real flowers)."""
    rng = np.random.default_rng(seed)
    if sources is None:
        sources = {name: [scene(rng, HUES[name], size) for _ in range(photos)]
                   for name in list(HUES)[:classes]}
    truth = {}
    for name, images in sources.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for p, img in enumerate(images):
            for k, frame in enumerate(frame_variants(img.convert("RGB"), rng, frames)):
                row_id = f"{name}/{name}{p:02d}_f{k}.jpg"
                frame.save(root / row_id, quality=92)
                truth[row_id] = f"{name}{p:02d}"
    return truth
