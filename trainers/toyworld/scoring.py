"""How well a (tuned) toy model draws the subject, and how much of its class it kept: the numbers the quality
tests assert on and the study tabulates. Everything is sampled with fixed seeds, so two models are
compared picture by picture on the same starting noise."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..checkpoint.components import SDComponents
from ..evaluate.metrics import Judges, diversity, paired_drift
from ..sampling import SampleSettings, generate
from .subject import CLASS_PROMPT, EVALUATION_PROMPTS, SUBJECT, TOKEN

SETTINGS = SampleSettings(steps=25, guidance_scale=7.5)
SUBJECT_SEEDS = (0, 1)
CLASS_IMAGES = 12


def subject_images(components: SDComponents, prompts: tuple[str, ...] = EVALUATION_PROMPTS,
                   seeds: tuple[int, ...] = SUBJECT_SEEDS) -> torch.Tensor:
    """Every prompt at every seed (seed-major), as the comparison makes them."""
    return torch.cat([generate(components, list(prompts), seed=seed, settings=SETTINGS, batch_size=8) for seed in seeds])


def class_images(components: SDComponents, count: int = CLASS_IMAGES) -> torch.Tensor:
    """``count`` pictures of the bare class prompt, each from its own seed."""
    return generate(components, [CLASS_PROMPT] * count, seed=1000, settings=SETTINGS, batch_size=count)


@dataclass(frozen=True)
class SubjectScores:
    clip_i: float  # subject fidelity: mean CLIP similarity to the instance pictures
    clip_t: float  # prompt fidelity, identifier removed (0-100)
    class_drift: float  # how far "a photo of a heart" moved from the base model's, picture by picture (0-2)
    class_diversity: float  # mean distance between the class pictures (the base model's is the reference)
    seconds_per_image: float  # sampling time of the subject pictures, after a warm-up


def score(components: SDComponents, judges: Judges, base_class: torch.Tensor,
          prompts: tuple[str, ...] = EVALUATION_PROMPTS) -> SubjectScores:
    """Scores of ``components`` against the instance pictures in ``judges`` and the base model's class
    picture embeddings ``base_class`` (from :func:`class_embeddings` on the base model)."""
    generate(components, [prompts[0]], seed=0, settings=replace(SETTINGS, steps=2))  # warm-up, untimed
    started = time.perf_counter()
    images = subject_images(components, prompts)
    seconds_per_image = (time.perf_counter() - started) / len(images)
    per_image = judges.score(images, list(prompts) * len(SUBJECT_SEEDS))
    own_class = class_embeddings(components, judges)
    return SubjectScores(sum(per_image["clip_i"]) / len(images), sum(per_image["clip_t"]) / len(images),
                         float(paired_drift(own_class, base_class).mean()), diversity(own_class), seconds_per_image)


def class_embeddings(components: SDComponents, judges: Judges) -> torch.Tensor:
    """The image judge's embeddings of the class pictures (DINO when there is one, else CLIP's vision tower)."""
    images = class_images(components)
    return judges.dino.embed_images(images) if judges.dino is not None else judges.clip.embed_images(images)


def toy_judges(images: Path) -> Judges:
    """The toy CLIP judge with the instance pictures in ``images`` as CLIP-I's references."""
    from ..evaluate.compare import load_references
    from ..evaluate.models import load_clip
    from . import TOY_JUDGE

    return Judges.prepare(load_clip(TOY_JUDGE), references=load_references(str(images)), identifiers=[TOKEN])


def subject_comparison(variants: list, images: Path, output_dir: Path):
    """A ``compare`` config for the toy subject: the evaluation prompts at the scoring seeds and settings,
    judged by the toy CLIP model against the instance pictures."""
    from ..evaluate.config import CompareConfig, SamplingConfig
    from . import TOY_CHECKPOINT, TOY_JUDGE

    return CompareConfig(base=str(TOY_CHECKPOINT), variants=variants, subject=SUBJECT, identifiers=[TOKEN],
                         prompts=[p.replace(SUBJECT, "{}") for p in EVALUATION_PROMPTS], seeds=list(SUBJECT_SEEDS),
                         instance_images=str(images), clip_model=str(TOY_JUDGE), output_dir=str(output_dir),
                         grid_cell_size=128, sampling=SamplingConfig(steps=[SETTINGS.steps]))
