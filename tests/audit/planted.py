"""A small photo-like dataset with planted problems, written with Pillow for the audit tests.

Each image is a smooth gradient with a few soft-edged shapes; its class sets the dominant hue.
Planted: copies of train images, resized to 90% and re-encoded at JPEG quality 70, in test/
(leaks), and train images filed under the wrong class (flipped labels).
"""

from pathlib import Path

import numpy as np

HUES = {"red": (200, 60, 50), "green": (60, 170, 70), "blue": (50, 80, 200)}


def photo(rng, base, size=64):
    from PIL import Image, ImageDraw, ImageFilter

    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    base = np.asarray(base, dtype=float) + rng.normal(0, 25, 3)
    pixels = base * (0.6 + 0.5 * ramp[..., None]) + rng.normal(0, 20, 3)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 5)):
        x0, y0 = rng.integers(0, size - 16, 2)
        w, h = rng.integers(10, 30, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=colour)
    return img.filter(ImageFilter.GaussianBlur(1.0))


def resized_copy(src: Path, dst: Path) -> None:
    """The planted duplicate: 90% of the size, JPEG quality 70."""
    from PIL import Image

    with Image.open(src) as img:
        small = img.convert("RGB").resize((round(img.width * 0.9), round(img.height * 0.9)),
                                          Image.Resampling.BILINEAR)
    small.save(dst, "JPEG", quality=70)


def write_planted(root: Path, per_class=40, n_test=8, n_leaks=12, n_flips=6, seed=0) -> dict:
    """Writes root/{train,test}/<class>/*.png|jpg and returns what was planted."""
    rng = np.random.default_rng(seed)
    names = list(HUES)
    planted = {"leaks": [], "flips": []}
    train_ids = []
    for name in names:
        for split, count in (("train", per_class), ("test", n_test)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                photo(rng, HUES[name]).save(folder / f"{name}_{i:03d}.png")
                if split == "train":
                    train_ids.append(f"train/{name}/{name}_{i:03d}.png")
    picks = rng.choice(len(train_ids), n_leaks + n_flips, replace=False)
    for p in picks[:n_leaks]:
        src = train_ids[p]
        name = src.split("/")[1]
        dst = f"test/{name}/copy_of_{Path(src).stem}.jpg"
        resized_copy(root / src, root / dst)
        planted["leaks"].append((src, dst))
    for p in picks[n_leaks:]:
        src = train_ids[p]
        name = src.split("/")[1]
        wrong = names[(names.index(name) + 1) % len(names)]
        dst = f"train/{wrong}/flipped_{Path(src).name}"
        (root / src).rename(root / dst)
        planted["flips"].append(dst)
    return planted


def register_thumbnail_backbone(size=32):
    """A test-only backbone whose vectors are 8x8 block means of the preprocessed pixels: cheap,
    deterministic, and (like a real CNN's) close for a resized re-encoded copy, far for others."""
    from keras.applications import resnet50

    from pipeline.extract.backbones import BackboneSpec, register_backbone

    def build(weights, input_shape):
        import keras

        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = keras.layers.AveragePooling2D(input_shape[0] // 8, name="grid")(inputs)
        return keras.Model(inputs, x, name="thumbnail_trunk")

    register_backbone(BackboneSpec(
        name="thumbnail_trunk", build=build, preprocess=resnet50.preprocess_input,
        preprocess_name="keras.applications.resnet50.preprocess_input",
        input_shape=(size, size, 3), notes="test-only trunk"), overwrite=True)
