"""Pictures of a made-up subject (a red star with a yellow band) at any size, for tests of the data pipeline."""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw


def draw_subject_images(folder: str | Path, count: int = 6, size: int = 96, seed: int = 0) -> list[Path]:
    """PNG pictures of one recognisable subject (a red five-pointed star with a yellow band) at varied
    positions, sizes and angles on varied backgrounds: plain colours, gradients, stripes."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image = _background(rng, size, index)
        draw = ImageDraw.Draw(image)
        radius = size * rng.uniform(0.22, 0.34)
        cx, cy = rng.uniform(radius, size - radius), rng.uniform(radius, size - radius)
        angle = rng.uniform(0, 2 * math.pi / 5)
        points = [(cx + (radius if k % 2 == 0 else radius * 0.45) * math.cos(angle + k * math.pi / 5),
                   cy + (radius if k % 2 == 0 else radius * 0.45) * math.sin(angle + k * math.pi / 5)) for k in range(10)]
        draw.polygon(points, fill=(220, 30, 40), outline=(90, 0, 10))
        draw.rectangle((cx - radius * 0.5, cy - radius * 0.1, cx + radius * 0.5, cy + radius * 0.1), fill=(250, 210, 40))
        path = folder / f"subject_{index:02d}.png"
        image.save(path)
        paths.append(path)
    return paths


def _background(rng: random.Random, size: int, index: int) -> Image.Image:
    first = tuple(rng.randrange(40, 230) for _ in range(3))
    second = tuple(rng.randrange(40, 230) for _ in range(3))
    image = Image.new("RGB", (size, size), first)
    draw = ImageDraw.Draw(image)
    if index % 3 == 1:  # vertical gradient
        for y in range(size):
            mix = y / (size - 1)
            draw.line((0, y, size, y), fill=tuple(round(a + (b - a) * mix) for a, b in zip(first, second)))
    elif index % 3 == 2:  # stripes
        width = max(4, size // 8)
        for x in range(0, size, 2 * width):
            draw.rectangle((x, 0, x + width - 1, size), fill=second)
    return image
