"""The three DreamBooth scores, per image.

- CLIP-T: how well an image matches its prompt, ``100 * max(cos(image, text), 0)`` in CLIP space
  (the CLIPScore convention of Hessel et al. 2021 with w = 100, as torchmetrics computes it).
- CLIP-I: subject fidelity, the mean cosine similarity of an image's CLIP embedding to those of the
  instance (reference) images.
- DINO: the same with a DINO ViT, which separates individual subjects of one class better than
  CLIP does (the DreamBooth paper's preferred fidelity score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from ..errors import BoothError
from .models import ClipJudge, DinoJudge
from .prompts import strip_identifiers

METRICS = ("clip_t", "clip_i", "dino")
LABELS = {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino": "DINO"}


def _check_images(images: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise BoothError(f"{name}: expected images as a [batch, height, width, 3] tensor in [0, 1], got {shape}.")
    if images.shape[0] == 0:
        raise BoothError(f"{name}: no images given.")
    return images


def clip_t_scores(clip: ClipJudge, images: torch.Tensor, prompts: Sequence[str],
                  identifiers: Iterable[str] = ()) -> torch.Tensor:
    """CLIP-T per image (0-100). One prompt per image, or one prompt for all; ``identifiers`` are
    removed from the prompts first (CLIP does not know them)."""
    images = _check_images(images, "CLIP-T images")
    prompts = list(prompts)
    if len(prompts) == 1:
        prompts = prompts * images.shape[0]
    if len(prompts) != images.shape[0]:
        raise BoothError(f"CLIP-T needs one prompt per image or one for all: got {len(prompts)} prompts for "
                         f"{images.shape[0]} images.")
    identifiers = list(identifiers)
    texts = [strip_identifiers(prompt, identifiers) for prompt in prompts]
    cosine = (clip.embed_images(images) * clip.embed_texts(texts)).sum(-1)
    return 100 * cosine.clamp(min=0)


def mean_similarity(embeddings: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per row of ``embeddings``: its mean cosine similarity to every row of ``references`` (both unit length)."""
    return (embeddings @ references.T).mean(dim=1)


def paired_drift(embeddings: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Per row: 1 - cosine similarity to the same row of ``before`` (the same prompt and seed from the base
    model). How far fine-tuning moved what the model draws for a prompt: the DreamBooth paper's class-prior
    concern, measured image by image (0: unchanged)."""
    return 1 - (embeddings * before).sum(dim=-1)


def diversity(embeddings: torch.Tensor) -> float:
    """Mean cosine distance between every two rows (unit length): how varied a set of pictures is."""
    count = embeddings.shape[0]
    if count < 2:
        raise BoothError("Diversity needs at least two images.")
    similarity = embeddings @ embeddings.T
    return float((count * count - similarity.sum()) / (count * (count - 1)))


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (0 for one value) of the finite values."""

    mean: float
    std: float
    count: int

    def text(self, digits: int = 3) -> str:
        return "n/a" if self.count == 0 else f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarise(values: Iterable[float | None]) -> Summary:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return Summary(math.nan, math.nan, 0)
    mean = sum(finite) / len(finite)
    spread = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1) if len(finite) > 1 else 0.0
    return Summary(mean, math.sqrt(spread), len(finite))


@dataclass
class Judges:
    """The judge models and the reference images' embeddings (computed once, reused for every variant)."""

    clip: ClipJudge
    dino: DinoJudge | None = None
    identifiers: tuple[str, ...] = ()
    clip_references: torch.Tensor | None = None
    dino_references: torch.Tensor | None = None

    @classmethod
    def prepare(cls, clip: ClipJudge, *, dino: DinoJudge | None = None, references: torch.Tensor | None = None,
                identifiers: Iterable[str] = ()) -> "Judges":
        judges = cls(clip, dino, tuple(identifiers))
        if references is not None:
            references = _check_images(references, "reference images")
            judges.clip_references = clip.embed_images(references)
            judges.dino_references = dino.embed_images(references) if dino is not None else None
        return judges

    @property
    def available(self) -> tuple[str, ...]:
        """The scores these judges can give (CLIP-I and DINO need reference images)."""
        return tuple(name for name, ready in (("clip_t", True), ("clip_i", self.clip_references is not None),
                                              ("dino", self.dino_references is not None)) if ready)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, list[float]]:
        """Every available score per image (CLIP-T 0-100, CLIP-I and DINO cosine similarities)."""
        scores = {"clip_t": clip_t_scores(self.clip, images, prompts, self.identifiers).tolist()}
        if self.clip_references is not None:
            scores["clip_i"] = mean_similarity(self.clip.embed_images(images), self.clip_references).tolist()
        if self.dino is not None and self.dino_references is not None:
            scores["dino"] = mean_similarity(self.dino.embed_images(images), self.dino_references).tolist()
        return scores
