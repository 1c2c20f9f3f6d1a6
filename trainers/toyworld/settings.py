"""How the toy world's model and judge are pre-trained (kept apart from the training code so --help stays fast)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PretrainSettings:
    seed: int = 0
    vae_steps: int = 1200
    vae_batch: int = 16
    latent_images: int = 12000
    generator_steps: int = 3000
    generator_batch: int = 32
    learning_rate: float = 5e-4
    judge_steps: int = 3000
    judge_batch: int = 96
    empty_caption_rate: float = 0.1  # captionless steps, so classifier-free guidance has an unconditional model
