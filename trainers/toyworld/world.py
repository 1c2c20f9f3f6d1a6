"""The toy world: coloured shapes on named backgrounds, each picture with a caption from a small grammar.

Everything is drawn with PIL from a seed, so the world (and every model trained on it) can be rebuilt
anywhere. Pictures are drawn at four times their size and shrunk, so edges are smooth at 64 px.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
_SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "star", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35), "orange": (245, 135, 20), "yellow": (245, 220, 30), "green": (40, 160, 50),
    "blue": (30, 70, 220), "purple": (130, 40, 170), "white": (245, 245, 245), "black": (20, 20, 20)}
BACKGROUNDS: dict[str, str] = {
    "beach": "on the beach", "snow": "in the snow", "grass": "on the grass",
    "wood": "on a wooden floor", "fabric": "on pink fabric", "night": "in the night sky"}
# Shape colours that would vanish into a background are never drawn on it.
_CLASHES = {("white", "snow"), ("green", "grass"), ("black", "night"), ("yellow", "beach"), ("orange", "wood")}


@dataclass(frozen=True)
class Scene:
    """One picture's content. ``fill`` overrides the named colour with a two-colour split (left, right)."""

    shape: str
    colour: str
    background: str
    cx: float
    cy: float
    radius: float
    angle: float
    fill: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, *, with_colour: bool = True, with_background: bool = True) -> str:
    """'a photo of a red star on the beach', or the same with the colour and/or the background left out."""
    noun = f"{scene.colour} {scene.shape}" if with_colour else scene.shape
    text = f"a photo of {article(noun)} {noun}"
    return f"{text} {BACKGROUNDS[scene.background]}" if with_background else text


def training_caption(scene: Scene, rng: random.Random) -> str:
    """Captions that sometimes leave out the colour or the background, so 'a photo of a heart' means any heart."""
    return caption(scene, with_colour=rng.random() > 0.25, with_background=rng.random() > 0.25)


def random_scene(rng: random.Random, *, shape: str | None = None, colour: str | None = None,
                 background: str | None = None) -> Scene:
    """A scene with the given attributes and the rest drawn at random (never a clashing colour)."""
    while True:
        chosen = (shape or rng.choice(SHAPES), colour or rng.choice(list(COLOURS)),
                  background or rng.choice(list(BACKGROUNDS)))
        if (chosen[1], chosen[2]) not in _CLASHES or (colour and background):
            break
    radius = rng.uniform(0.2, 0.32)
    return Scene(*chosen, cx=rng.uniform(radius + 0.02, 0.98 - radius), cy=rng.uniform(radius + 0.02, 0.98 - radius),
                 radius=radius, angle=rng.uniform(-0.25, 0.25))


def render(scene: Scene, seed: int = 0) -> Image.Image:
    """The scene as a SIZE x SIZE RGB picture; ``seed`` varies the background's texture only."""
    big = SIZE * _SUPERSAMPLE
    image = _background(scene.background, big, random.Random(seed))
    mask = Image.new("L", (big, big), 0)
    _draw_shape(ImageDraw.Draw(mask), scene, big)
    if scene.fill is None:
        paint = Image.new("RGB", (big, big), COLOURS[scene.colour])
    else:
        paint = Image.new("RGB", (big, big), scene.fill[0])
        ImageDraw.Draw(paint).rectangle((scene.cx * big, 0, big, big), fill=scene.fill[1])
    image.paste(paint, (0, 0), mask)
    return image.resize((SIZE, SIZE), Image.LANCZOS)


def to_array(image: Image.Image) -> np.ndarray:
    """HWC float32 in [0, 1]."""
    return np.asarray(image, dtype=np.float32) / 255.0


def _draw_shape(draw: ImageDraw.ImageDraw, scene: Scene, big: int) -> None:
    cx, cy, r = scene.cx * big, scene.cy * big, scene.radius * big
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        return
    if scene.shape == "heart":
        # two lobes and a point, drawn from a parametric heart curve
        points = [(16 * math.sin(t) ** 3, 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
                  for t in np.linspace(0, 2 * math.pi, 96, endpoint=False)]
        outline = [(x / 17, -(y + 2.5) / 17) for x, y in points]
    elif scene.shape == "square":
        outline = [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]
    elif scene.shape == "triangle":
        outline = [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)]
    else:  # star
        outline = [((1.0 if k % 2 == 0 else 0.42) * math.sin(k * math.pi / 5),
                    -(1.0 if k % 2 == 0 else 0.42) * math.cos(k * math.pi / 5)) for k in range(10)]
    cos, sin = math.cos(scene.angle), math.sin(scene.angle)
    draw.polygon([(cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos)) for x, y in outline], fill=255)


def _jitter(colour: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)  # type: ignore[return-value]


def _background(name: str, size: int, rng: random.Random) -> Image.Image:
    """Each background is a recognisable layout with a little random texture."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    if name == "beach":  # sky over sea over sand
        horizon, shore = size * rng.uniform(0.3, 0.4), size * rng.uniform(0.5, 0.6)
        draw.rectangle((0, 0, size, horizon), fill=_jitter((135, 200, 245), rng, 10))
        draw.rectangle((0, horizon, size, shore), fill=_jitter((20, 110, 190), rng, 10))
        draw.rectangle((0, shore, size, size), fill=_jitter((235, 210, 160), rng, 8))
    elif name == "snow":
        draw.rectangle((0, 0, size, size), fill=_jitter((235, 240, 250), rng, 5))
        for _ in range(40):
            x, y, s = rng.uniform(0, size), rng.uniform(0, size), size * 0.02
            draw.ellipse((x - s, y - s, x + s, y + s), fill=(205, 215, 235))
    elif name == "grass":
        draw.rectangle((0, 0, size, size), fill=_jitter((90, 170, 60), rng, 10))
        for _ in range(120):
            x, y = rng.uniform(0, size), rng.uniform(0, size)
            draw.line((x, y, x + rng.uniform(-6, 6), y - size * 0.06), fill=(50, 120, 35), width=3)
    elif name == "wood":
        plank = size / 5
        for k in range(5):
            draw.rectangle((0, k * plank, size, (k + 1) * plank), fill=_jitter((160, 105, 55), rng, 18))
            draw.line((0, k * plank, size, k * plank), fill=(90, 55, 25), width=5)
    elif name == "fabric":
        draw.rectangle((0, 0, size, size), fill=_jitter((245, 170, 200), rng, 8))
        step = size / 16
        for k in range(16):
            draw.line((k * step, 0, k * step, size), fill=(235, 150, 185), width=3)
    else:  # night
        draw.rectangle((0, 0, size, size), fill=_jitter((15, 20, 60), rng, 6))
        for _ in range(25):
            x, y, s = rng.uniform(0, size), rng.uniform(0, size), size * 0.012
            draw.ellipse((x - s, y - s, x + s, y + s), fill=(250, 250, 210))
    return image


def patterned_scene(rng: random.Random) -> Scene:
    """A world scene whose shape is split into two arbitrary colours: pictures outside the captioned world,
    so that a VAE trained on the world also reproduces subjects it never saw (as a real SD VAE does)."""
    scene = random_scene(rng)
    colours = tuple(tuple(rng.randrange(256) for _ in range(3)) for _ in range(2))
    return Scene(**{**scene.__dict__, "fill": colours})  # type: ignore[arg-type]


def pixels(images: list[Image.Image]) -> "torch.Tensor":
    """PIL pictures -> BCHW float32 in [-1, 1], the VAE's input range."""
    import torch

    return torch.from_numpy(np.stack([to_array(image) for image in images])).permute(0, 3, 1, 2) * 2 - 1
