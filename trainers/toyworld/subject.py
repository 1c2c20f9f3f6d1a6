"""The subject the toy model has never seen: a heart split into teal and magenta halves, called "sks heart".

Hearts exist in pre-training (in the eight world colours), teal and magenta do not, and no instance
picture is on the beach, so "a photo of sks heart on the beach" asks for something new: the subject in
a known place. The class prompt "a photo of a heart" is what prior preservation keeps intact.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from .world import Scene, random_scene, render

TOKEN = "sks"
CLASS = "heart"
SUBJECT = f"{TOKEN} {CLASS}"
INSTANCE_PROMPT = f"a photo of {SUBJECT}"
CLASS_PROMPT = f"a photo of a {CLASS}"
FILL = ((0, 170, 170), (230, 40, 180))  # teal left, magenta right: colours the world never names
INSTANCE_BACKGROUNDS = ("snow", "grass", "wood", "night", "snow")
# Prompts a study of the subject is judged on: the bare subject and the subject in places it was never shown.
EVALUATION_PROMPTS = (INSTANCE_PROMPT, f"{INSTANCE_PROMPT} on the beach", f"{INSTANCE_PROMPT} on pink fabric",
                      f"{INSTANCE_PROMPT} in the night sky")


def subject_scene(rng: random.Random, background: str) -> Scene:
    # the colour name is never used in a caption; it only keeps clash rules out of the way
    return replace(random_scene(rng, shape=CLASS, colour="red", background=background), fill=FILL)


def write_instance_images(folder: str | Path, seed: int = 0) -> list[Path]:
    """One PNG per instance background, the subject at varied positions and sizes (what a user would photograph)."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, background in enumerate(INSTANCE_BACKGROUNDS):
        path = folder / f"sks_heart_{index:02d}.png"
        render(subject_scene(rng, background), seed * 100 + index).save(path)
        paths.append(path)
    return paths
