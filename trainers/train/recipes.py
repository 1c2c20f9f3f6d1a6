"""What each method trains and how its result is saved; the loop itself is shared.

LoRA and DreamBooth-LoRA differ only in their defaults (learning rate, prior preservation; see
config.METHOD_DEFAULTS): both train low-rank adapters and save a kohya LoRA. DreamBooth trains the
whole UNet (and, for its first ``dreambooth.train_text_encoder_steps`` steps only, the text
encoders) and saves a full single-file checkpoint in the original layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint.components import SDComponents
from ..checkpoint.writer import DTYPES, save_checkpoint
from ..config import TrainConfig
from ..lora import add_lora, save_lora


@dataclass(frozen=True)
class Recipe:
    """``prepare`` makes the right parameters trainable and returns optimiser groups (params, lr);
    ``save`` writes the result with the given metadata. ``text_encoder_steps``: how long the text
    encoders train: 0 never, None the whole run, N the first N steps (then they freeze and their
    captions are encoded once, as if frozen from the start). ``trains_base_weights``: the model's
    own weights change (so they must stay float32), not just adapters added to it. ``snapshots``:
    also save the result at every ``save_every`` step (a few MB for a LoRA; not for multi-GB checkpoints)."""

    prepare: Callable[[SDComponents, TrainConfig], list[dict]]
    save: Callable[[SDComponents, TrainConfig, Path, dict[str, str]], Path]
    text_encoder_steps: Callable[[TrainConfig], int | None]
    trains_base_weights: bool = False
    snapshots: bool = True


def _prepare_lora(components: SDComponents, config: TrainConfig) -> list[dict]:
    params = add_lora(components, config.lora.settings(), seed=config.seed)
    unet_ids = {id(p) for p in components.unet.parameters()}
    return [{"params": [p for p in params if id(p) in unet_ids], "lr": config.learning_rate},
            {"params": [p for p in params if id(p) not in unet_ids], "lr": config.text_encoder_lr}]


def _save_lora(components: SDComponents, config: TrainConfig, path: Path, metadata: dict[str, str]) -> Path:
    return save_lora(components, config.lora.settings(), path, metadata=metadata, dtype=DTYPES[config.save_dtype])


def _lora_text_encoder_steps(config: TrainConfig) -> int | None:
    return None if config.lora.text_encoder else 0


def _prepare_full_model(components: SDComponents, config: TrainConfig) -> list[dict]:
    """Every UNet weight trains; the text encoders' weights too when they train for some first steps."""
    components.unet.requires_grad_(True)
    encoders = components.text_encoders if config.dreambooth.train_text_encoder_steps else []
    for encoder in encoders:
        encoder.requires_grad_(True)
    return [{"params": list(components.unet.parameters()), "lr": config.learning_rate},
            {"params": [p for encoder in encoders for p in encoder.parameters()], "lr": config.text_encoder_lr}]


def _save_checkpoint(components: SDComponents, config: TrainConfig, path: Path, metadata: dict[str, str]) -> Path:
    return save_checkpoint(components, path, dtype=DTYPES[config.save_dtype], metadata=metadata)


RECIPES: dict[str, Recipe] = {
    "lora": Recipe(_prepare_lora, _save_lora, _lora_text_encoder_steps),
    "dreambooth_lora": Recipe(_prepare_lora, _save_lora, _lora_text_encoder_steps),
    "dreambooth": Recipe(_prepare_full_model, _save_checkpoint, lambda c: c.dreambooth.train_text_encoder_steps,
                         trains_base_weights=True, snapshots=False),
}


def trainable_parameters(components: SDComponents) -> dict[str, torch.nn.Parameter]:
    """Every parameter that requires grad, under a stable name (what resumable state stores)."""
    modules = {"unet": components.unet, **{f"text_encoder_{i}": e for i, e in enumerate(components.text_encoders)}}
    return {f"{label}.{name}": p for label, module in modules.items()
            for name, p in module.named_parameters() if p.requires_grad}
