"""Render the tiny image folder ``recipes/data/shapes/`` (circles, squares, triangles).

It lets ``recipes/resnet50-imagenet.yaml`` validate on any machine; point the
recipe at your own image folder to use it for real. Run from this folder:
``python make_shapes.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def render(shape: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 80, 3)))
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(150, 256, 3))
    r = int(rng.integers(7, 13))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def main(folder: Path = Path(__file__).parent / "shapes", per_class: int = 8) -> None:
    rng = np.random.default_rng(0)
    for shape in ("circle", "square", "triangle"):
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            render(shape, rng).save(folder / shape / f"{shape}_{i:02d}.png")


if __name__ == "__main__":
    main()
