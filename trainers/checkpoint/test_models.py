"""Seeded random-weight checkpoints in the original single-file layout.

Nothing can be downloaded, so tests and benchmarks build their own models: ``tiny`` ones (a few MB)
for unit tests and the full real architectures for real-shape tests, benchmarks and for checking
that ComfyUI recognises our files. Weights use the libraries' own initialisation, so activations
stay finite; they say nothing about image quality.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .components import SDComponents
from .families import FAMILIES, VARIANTS, architecture
from .modules import make_scheduler, make_text_encoder, make_unet, make_vae
from .tokenizers import clip_tokenizer
from .writer import save_checkpoint


def _original_extras(family: str, config: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Tensors real checkpoints carry that have no place in the diffusers modules."""
    extras: dict[str, torch.Tensor] = {}
    for spec, text in zip(FAMILIES[family].text_encoders, config["text_encoders"]):
        if spec.layout == "hf":
            extras[spec.prefix + "text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
        else:
            extras[spec.prefix + "logit_scale"] = torch.tensor(4.6052)
            if not spec.with_projection:
                width = text["hidden_size"]
                extras[spec.prefix + "text_projection"] = torch.randn(width, width, generator=generator) * width ** -0.5
    return extras


def build_random_components(family: str, *, variant: str = "full", seed: int = 0,
                            prediction_type: str = "epsilon") -> SDComponents:
    """Random-weight components of a family variant, the same for the same seed."""
    config = architecture(family, variant)
    torch.manual_seed(seed)
    unet = make_unet(config["unet"])
    vae = make_vae(config["vae"])
    specs = FAMILIES[family].text_encoders
    encoders = [make_text_encoder(text, spec.with_projection) for spec, text in zip(specs, config["text_encoders"])]
    generator = torch.Generator().manual_seed(seed + 1)
    for module in (unet, vae, *encoders):
        module.requires_grad_(False).eval()
    return SDComponents(family, prediction_type, unet, vae, encoders,
                        [clip_tokenizer(spec.pad_token) for spec in specs],
                        make_scheduler(config["scheduler"], prediction_type),
                        _original_extras(family, config, generator))


def make_test_checkpoint(family: str, out: str | os.PathLike, *, variant: str = "full", seed: int = 0,
                         dtype: torch.dtype | None = None, prediction_type: str = "epsilon") -> Path:
    """Write a random-weight single-file checkpoint of ``family`` to ``out``."""
    components = build_random_components(family, variant=variant, seed=seed, prediction_type=prediction_type)
    return save_checkpoint(components, out, dtype=dtype,
                           metadata={"booth.test_model": f"random weights, seed {seed}, {VARIANTS[variant]}"})
